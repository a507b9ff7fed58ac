package guard

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

// TestClusterNodeLoss: two replicas on a 3-node cluster (R3 bucket), each connected to a different
// node first, run the random load while the bucket's stream leader is killed: still no limit is
// passed, and no decision id is decided twice.
func TestClusterNodeLoss(t *testing.T) {
	nodes := natstest.Cluster(t, 3)
	c := newClock()
	c.Add(8 * time.Hour)
	cfg := propertyConfig(c)
	cfg.Replicas = 3
	cfg.RetryFor = time.Minute
	connect := func(order ...int) jetstream.JetStream {
		nc, err := nats.Connect(natstest.URLs(nodes[order[0]], nodes[order[1]], nodes[order[2]]),
			nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond), nats.DontRandomize())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		return js
	}
	jsA, jsB := connect(0, 1, 2), connect(1, 2, 0)
	var a *Guard
	testutil.WaitFor(t, 30*time.Second, "R3 bucket created", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		g, err := New(ctx, jsA, cfg, "a", nil)
		if err != nil {
			return false // the cluster may still be placing the stream
		}
		a = g
		return true
	})
	t.Cleanup(func() { _ = a.Close() })
	var b *Guard
	testutil.WaitFor(t, 60*time.Second, "the second guard opened through another node", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		g, err := New(ctx, jsB, cfg, "b", nil)
		if err != nil {
			return false // a loaded cluster may not answer in time: the hub retries the same way
		}
		b = g
		return true
	})
	t.Cleanup(func() { _ = b.Close() })

	var done atomic.Bool
	killed := make(chan int, 1)
	go func() {
		// Kill the bucket's leader once the load is under way.
		// Polled here rather than with testutil.WaitFor: this goroutine must not call t.Fatal.
		for a.Metrics.Allowed.Load()+a.Metrics.Suppressed.Load() <= 60 && !done.Load() {
			time.Sleep(5 * time.Millisecond)
		}
		if done.Load() {
			killed <- -2
			return
		}
		for i, n := range nodes {
			if n.S != nil && n.S.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, "KV_"+cfg.Bucket) {
				n.Stop()
				killed <- i
				return
			}
		}
		killed <- -1
	}()
	// While a server is down a Check may give up with an error (its claim or record unreadable within
	// its retry budget): the caller then does not act, which is safe. Such errors are counted, not
	// failures; the limits are verified below against what the bucket recorded.
	var failed atomic.Int64
	checks := load(t, uint64(time.Now().UnixNano()), c, []*Guard{a, b}, 120, func(err error) bool {
		failed.Add(1)
		t.Logf("tolerated during the node loss: %v", err)
		return true
	})
	done.Store(true)
	if f := failed.Load(); f > int64(len(checks))/10 {
		t.Errorf("%d calls failed during the node loss, more than a tenth of %d decisions", f, len(checks))
	}
	leader := <-killed
	switch leader {
	case -2:
		t.Fatal("the load finished before a node was killed: the test does not test")
	case -1:
		t.Fatal("no bucket leader found to kill")
	}
	t.Logf("killed n%d; decisions %d; retries %d, conflicts %d, takeovers %d", leader+1, len(checks),
		a.Metrics.Retries.Load()+b.Metrics.Retries.Load(), a.Metrics.Conflicts.Load()+b.Metrics.Conflicts.Load(),
		a.Metrics.Takeovers.Load()+b.Metrics.Takeovers.Load())
	survivor := nodes[(leader+1)%3]
	_, js := natstest.Connect(t, survivor.URL())
	if verify(t, js, cfg, true) < 10 {
		t.Fatal("too few promotions allowed to prove anything")
	}
	for id, vs := range checks {
		fresh := 0
		for _, v := range vs {
			if !v.Replayed {
				fresh++
			}
		}
		if fresh > 1 {
			t.Errorf("%s decided %d times", id, fresh)
		}
	}
}
