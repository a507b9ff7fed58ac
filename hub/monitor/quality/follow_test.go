package quality

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

// A replica whose log consumer (one replica, in memory) lived on a node that stops, its client
// connected to another node, still folds what another replica observes after the stop: the ordered
// consumer alone noticed only after two missed idle heartbeats (10 s), and the quality verdict the
// replica's decisions read was that old.
func TestFollowConsumerNodeStops(t *testing.T) {
	nodes := natstest.Cluster(t, 3)
	ctx := context.Background()
	cfg := testConfig()
	cfg.Replicas = 3
	c := &clock{}
	_, js := natstest.Connect(t, natstest.URLs(nodes...))
	m1 := open(t, js, cfg, &sink{}, c)
	a := &agent{id: "a11", inc: "i1"}
	now := time.Now()
	m1.Observer().Observe(a.batch(mean("line11.oven.temp", now, 1)))
	testutil.WaitFor(t, 30*time.Second, "the first observation stored", func() bool {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		return m1.Observer().Flush(cctx) == nil
	})
	st, err := js.Stream(ctx, cfg.Stream)
	if err != nil {
		t.Fatal(err)
	}
	values := func(m *Monitor) int { q, _ := m.Status("temp", "line11.oven.temp"); return int(q.Values) }
	// The server places the follower's consumer on any of the stream's nodes: open again until it
	// is on a node the follower's client is not connected to.
	var m2 *Monitor
	host := natstest.OffClient(t, st, nodes, func(try int) (string, func()) {
		nc, js2 := natstest.Connect(t, nodes[try%len(nodes)].URL())
		m2 = open(t, js2, cfg, &sink{}, c)
		if values(m2) != 1 {
			t.Fatalf("%d values folded when Open returned, want 1", values(m2))
		}
		return nc.ConnectedServerName(), m2.Close
	})
	stopped := time.Now()
	host.Stop()
	var recorded time.Time
	m1.Observer().Observe(a.batch(mean("line11.oven.temp", now.Add(time.Second), 2)))
	testutil.WaitFor(t, 60*time.Second, "an observation stored after the consumer's node stopped", func() bool {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		err := m1.Observer().Flush(cctx)
		recorded = time.Now()
		return err == nil
	})
	testutil.WaitForState(t, 5*time.Second, "the follower folding it", func() (bool, string) {
		return values(m2) == 2, fmt.Sprintf("%d values", values(m2))
	})
	t.Logf("consumer's node stopped → observation stored %v; stored → folded by the follower within %v", recorded.Sub(stopped), time.Since(recorded))
}
