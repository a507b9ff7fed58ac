package inventory

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

// A replica whose watch consumer (one replica, in memory) lived on a node that stops, its client
// connected to another node, still sees a position another replica writes after the stop: the KV
// watch alone noticed only after two missed idle heartbeats (10 s), and the replica decided
// promotions on positions that old.
func TestViewFollowsConsumerNodeStop(t *testing.T) {
	nodes := natstest.Cluster(t, 3)
	ctx := context.Background()
	cfg := testConfig(newTestClock(t0))
	cfg.Replicas = 3
	a := openStore(t, connectJS(t, natstest.URLs(nodes...)), cfg)
	if _, err := a.Move(ctx, mv("p1", Produced, 10, time.Hour)); err != nil {
		t.Fatal(err)
	}
	stream := "KV_" + cfg.Bucket
	// The server places the follower's consumer on any of the stream's nodes: open again until it
	// is on a node the follower's client is not connected to.
	var b *Store
	_, js0 := natstest.Connect(t, nodes[0].URL())
	st, err := js0.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	host := natstest.OffClient(t, st, nodes, func(try int) (string, func()) {
		nc, js := natstest.Connect(t, nodes[try%len(nodes)].URL())
		b = openStore(t, js, cfg)
		if p, ok := b.Get("SKU", "S1"); !ok || p.Produced != 10 {
			t.Fatalf("the current position not loaded when Open returned: %+v", p)
		}
		return nc.ConnectedServerName(), func() { _ = b.Close() }
	})
	stopped := time.Now()
	host.Stop()
	var recorded time.Time
	testutil.WaitFor(t, 60*time.Second, "a movement stored after the consumer's node stopped", func() bool {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := a.Move(cctx, mv("p2", Produced, 5, time.Hour))
		recorded = time.Now()
		return err == nil
	})
	testutil.WaitForState(t, 5*time.Second, "the follower seeing the movement", func() (bool, string) {
		p, _ := b.Get("SKU", "S1")
		return p.Produced == 15, fmt.Sprintf("produced %g", p.Produced)
	})
	t.Logf("consumer's node stopped → movement stored %v; stored → seen by the follower within %v", recorded.Sub(stopped), time.Since(recorded))
}
