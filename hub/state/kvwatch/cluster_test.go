package kvwatch

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/internal/kvretry"
	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

// A replica whose watch consumer (one replica, in memory) lived on a node that stops, its client
// connected to another node, still sees a value written after the stop: the watch alone noticed only
// after two missed idle heartbeats (10 s), and the replica's view of the bucket was 10 s stale.
func TestFollowConsumerNodeStops(t *testing.T) {
	nodes := natstest.Cluster(t, 3)
	ctx := context.Background()
	_, js := natstest.Connect(t, natstest.URLs(nodes...))
	kv, err := kvretry.KeyValue(ctx, js, jetstream.KeyValueConfig{Bucket: "W", Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 30*time.Second, "the first value stored (a new R3 bucket elects its leader)", func() bool {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := kv.Put(cctx, "a", []byte("1"))
		return err == nil
	})
	st, err := js.Stream(ctx, "KV_W")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[string]string{}
	var at time.Time
	get := func(k string) string { mu.Lock(); defer mu.Unlock(); return seen[k] }
	// The server places the watch's consumer on any of the stream's nodes: follow again until it is
	// on a node the follower's client is not connected to.
	var stop func()
	host := natstest.OffClient(t, st, nodes, func(try int) (string, func()) {
		nc, fjs := natstest.Connect(t, nodes[try%len(nodes)].URL())
		natstest.Opening(t, "the follower open", func() error {
			fkv, err := fjs.KeyValue(ctx, "W")
			if err != nil {
				return err
			}
			stop, err = Follow(ctx, fjs, fkv, func(e jetstream.KeyValueEntry) {
				mu.Lock()
				seen[e.Key()], at = string(e.Value()), time.Now()
				mu.Unlock()
			}, Options{Log: testutil.Logger(t, slog.LevelDebug)})
			return err
		})
		if get("a") != "1" {
			t.Fatalf("after Follow returned: %v, want the current entry", seen)
		}
		return nc.ConnectedServerName(), stop
	})
	defer stop()
	stopped := time.Now()
	host.Stop()
	var recorded time.Time
	testutil.WaitFor(t, 60*time.Second, "a value written after the consumer's node stopped", func() bool {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := kv.Put(cctx, "b", []byte("2"))
		recorded = time.Now()
		return err == nil
	})
	testutil.WaitForState(t, 5*time.Second, "the follower seeing the value", func() (bool, string) {
		return get("b") == "2", fmt.Sprintf("b=%q", get("b"))
	})
	mu.Lock()
	defer mu.Unlock()
	t.Logf("consumer's node stopped → value written %v; written → seen by the follower %v", recorded.Sub(stopped), at.Sub(recorded))
}
