package jsfollow

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/internal/natstest"
)

// NextWithin hands the messages there are, then gives up with ErrIdle; a cancelled caller gets
// its own cancellation, not ErrIdle.
func TestNextWithin(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	ctx := context.Background()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "s.a", []byte("a")); err != nil {
		t.Fatal(err)
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	it, err := cons.Messages()
	if err != nil {
		t.Fatal(err)
	}
	defer it.Stop()
	m, err := NextWithin(ctx, it, 10*time.Second)
	if err != nil || string(m.Data()) != "a" {
		t.Fatalf("first: %v %v", m, err)
	}
	if _, err := NextWithin(ctx, it, 200*time.Millisecond); !errors.Is(err, ErrIdle) {
		t.Fatalf("nothing more: %v, want ErrIdle", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := NextWithin(cctx, it, 10*time.Second); err == nil || errors.Is(err, ErrIdle) {
		t.Fatalf("cancelled caller: %v, want its own error", err)
	}
}
