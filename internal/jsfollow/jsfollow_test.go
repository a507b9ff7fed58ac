package jsfollow

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// A consumer that stops delivering without a word (its node crashed or was cut off: no shutdown
// notice, the client's connection intact; here the server pauses it) is replaced once a message on
// the stream is not delivered: every message is handed once, in order, and the replaced consumer is
// deleted.
func TestFollowSilentConsumer(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	ctx := context.Background()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, AllowDirect: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"s.a", "s.b"} {
		if _, err := js.Publish(ctx, s, []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	var got []uint64
	var at time.Time
	handed := func() []uint64 { mu.Lock(); defer mu.Unlock(); return append([]uint64(nil), got...) }
	var refollows atomic.Uint64
	f, err := Follow(ctx, Config{Stream: st, Subject: "s.>", What: "test", Log: testutil.Logger(t, slog.LevelDebug), Refollows: &refollows},
		func(m jetstream.Msg, md *jetstream.MsgMetadata) {
			mu.Lock()
			got, at = append(got, md.Sequence.Stream), time.Now()
			mu.Unlock()
		})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Stop()
	select {
	case <-f.Loaded():
	case <-time.After(10 * time.Second):
		t.Fatal("not loaded within 10 s")
	}
	if h := handed(); fmt.Sprint(h) != "[1 2]" {
		t.Fatalf("loaded with %v handed, want [1 2]", h)
	}
	f.mu.Lock()
	name := f.cons.CachedInfo().Name
	f.mu.Unlock()
	if _, err := js.PauseConsumer(ctx, "S", name, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "s.c", []byte("c")); err != nil {
		t.Fatal(err)
	}
	recorded := time.Now()
	testutil.WaitForState(t, 10*time.Second, "the follower seeing message 3", func() (bool, string) {
		h := handed()
		return len(h) == 3, fmt.Sprint(h)
	})
	if n := refollows.Load(); n != 1 {
		t.Fatalf("%d new consumers, want 1", n)
	}
	if _, err := js.Publish(ctx, "s.d", []byte("d")); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the next message on the new consumer", func() bool { return len(handed()) == 4 })
	if h := handed(); fmt.Sprint(h) != "[1 2 3 4]" {
		t.Fatalf("handed %v, want [1 2 3 4]", h)
	}
	mu.Lock()
	t.Logf("published → handed %v", at.Sub(recorded))
	mu.Unlock()
	testutil.WaitForState(t, 10*time.Second, "the replaced consumer deleted", func() (bool, string) {
		var names []string
		for name := range st.ConsumerNames(ctx).Name() {
			names = append(names, name)
		}
		return len(names) == 1, fmt.Sprint(names)
	})
}

// Loaded is closed at once on an empty subject, and the messages published later are handed.
func TestFollowEmpty(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	ctx := context.Background()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}})
	if err != nil {
		t.Fatal(err)
	}
	var last atomic.Uint64
	f, err := Follow(ctx, Config{Stream: st, Subject: "s.>", LastPerSubject: true}, func(_ jetstream.Msg, md *jetstream.MsgMetadata) {
		last.Store(md.Sequence.Stream)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Stop()
	select {
	case <-f.Loaded():
	default:
		t.Fatal("an empty subject not loaded when Follow returned")
	}
	if _, err := js.Publish(ctx, "s.a", nil); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the message published", func() bool { return last.Load() == 1 })
}
