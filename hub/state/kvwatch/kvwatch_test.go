package kvwatch

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestFollow: Follow returns with the current entries applied, then applies later changes until stop.
func TestFollow(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	ctx := context.Background()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "W"})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"a", "b"} {
		if _, err := kv.Put(ctx, k, []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	seen := map[string]string{}
	stop, err := Follow(ctx, js, kv, func(e jetstream.KeyValueEntry) {
		mu.Lock()
		seen[e.Key()] = string(e.Value())
		mu.Unlock()
	}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if len(seen) != 2 {
		t.Fatalf("after Follow returned: %v, want both current entries", seen)
	}
	mu.Unlock()
	if _, err := kv.Put(ctx, "c", []byte("c")); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "later change applied", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return seen["c"] == "c"
	})
	stop()
}
