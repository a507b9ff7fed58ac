package features

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

// A replica whose log consumer (one replica, in memory) lived on a node that stops, its client
// connected to another node, still sees a value another replica flushes after the stop: the ordered
// consumer alone noticed only after two missed idle heartbeats (10 s), and the replica decided on
// values that old.
func TestFollowConsumerNodeStops(t *testing.T) {
	nodes := natstest.Cluster(t, 3)
	ctx := context.Background()
	cfg := Config{Bucket: "F", Definitions: defs, Replicas: 3}
	_, js := natstest.Connect(t, natstest.URLs(nodes...))
	a, err := Open(ctx, js, cfg, testPlant, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	a.Apply([]Input{in(feat("line1.pack.parts", "units", t0, 1, "sku", "A"), 1)})
	testutil.WaitFor(t, 30*time.Second, "the first value stored (a new R3 stream elects its leader)", func() bool {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		return a.Flush(cctx) == nil
	})
	// The server places the follower's consumer on any of the stream's nodes: open again until it
	// is on a node the follower's client is not connected to.
	var b *Store
	host := natstest.OffClient(t, a.stream, nodes, func(try int) (string, func()) {
		nc, bjs := natstest.Connect(t, nodes[try%len(nodes)].URL())
		natstest.Opening(t, "the second store open", func() (err error) {
			b, err = Open(ctx, bjs, cfg, testPlant, testutil.Logger(t, slog.LevelDebug))
			return err
		})
		if _, ok := b.Get("units", "A"); !ok {
			t.Fatal("the current value not loaded when Open returned")
		}
		return nc.ConnectedServerName(), b.Close
	})
	defer b.Close()
	stopped := time.Now()
	host.Stop()
	var recorded time.Time
	a.Apply([]Input{in(feat("line1.pack.parts", "units", t0, 2, "sku", "B"), 2)})
	testutil.WaitFor(t, 60*time.Second, "a value flushed after the consumer's node stopped", func() bool {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		err := a.Flush(cctx)
		recorded = time.Now()
		return err == nil
	})
	testutil.WaitForState(t, 5*time.Second, "the follower seeing the value", func() (bool, string) {
		_, ok := b.Get("units", "B")
		return ok, fmt.Sprintf("B known: %v", ok)
	})
	t.Logf("consumer's node stopped → value flushed %v; flushed → seen by the follower within %v", recorded.Sub(stopped), time.Since(recorded))
}
