package registry

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

// A replica whose state watch consumer (one replica, in memory) lived on a node that stops, its
// client connected to another node, still sees a promotion made after the stop: the KV watch alone
// noticed only after two missed idle heartbeats (10 s), and the replica forecast with the old set.
func TestFollowConsumerNodeStops(t *testing.T) {
	nodes := natstest.Cluster(t, 3)
	ctx := context.Background()
	_, js := natstest.Connect(t, natstest.URLs(nodes...))
	// A fresh cluster under load may count a peer offline for a moment ("no suitable peers for
	// placement"): the buckets' creation is tried again until then, as a hub's restart would.
	var a *Registry
	var err error
	testutil.WaitForState(t, 30*time.Second, "the registry's R3 buckets created", func() (bool, string) {
		a, err = Open(ctx, js, Options{Replicas: 3})
		return err == nil, fmt.Sprint(err)
	})
	s1, s2 := fitSet(t, synthetic(t, 10, 120, 4), "test"), fitSet(t, synthetic(t, 10, 120, 5), "test")
	var v1, v2 string
	// A new R3 bucket answers once its leader is elected: each step is tried again until then.
	testutil.WaitFor(t, 30*time.Second, "both sets stored, one active and one shadow", func() bool {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		var err error
		if v1 == "" {
			v1, err = a.Store(cctx, s1)
		}
		if err == nil && v2 == "" {
			v2, err = a.Store(cctx, s2)
		}
		if err == nil {
			_, err = a.Promote(cctx, v1, "alice", "first")
		}
		if err == nil {
			_, err = a.Shadow(cctx, v2, "alice", "compare")
		}
		return err == nil
	})
	st, err := js.Stream(ctx, "KV_"+a.b.State)
	if err != nil {
		t.Fatal(err)
	}
	// The server places the follower's consumer on any of the stream's nodes: follow again until it
	// is on a node the follower's client is not connected to. Both sets are loaded by then: what the
	// promotion below needs is the change, not a set read.
	var f *Follower
	host := natstest.OffClient(t, st, nodes, func(try int) (string, func()) {
		nc, bjs := natstest.Connect(t, nodes[try%len(nodes)].URL())
		var b *Registry
		natstest.Opening(t, "the second registry open", func() (err error) {
			b, err = Open(ctx, bjs, Options{Replicas: 3, Logger: testutil.Logger(t, -4)})
			return err
		})
		if f, err = b.Follow(nil); err != nil {
			t.Fatal(err)
		}
		testutil.WaitFor(t, 20*time.Second, "the current state", func() bool {
			l := f.Live()
			return l != nil && l.Active != nil && l.Active.Set.Version == v1 && l.Shadow != nil
		})
		return nc.ConnectedServerName(), f.Stop
	})
	defer f.Stop()
	stopped := time.Now()
	host.Stop()
	var recorded time.Time
	testutil.WaitFor(t, 60*time.Second, "a promotion after the consumer's node stopped", func() bool {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := a.Promote(cctx, v2, "bob", "better")
		recorded = time.Now()
		return err == nil
	})
	testutil.WaitForState(t, 5*time.Second, "the follower seeing the promotion", func() (bool, string) {
		l := f.Live()
		return l.Active.Set.Version == v2, fmt.Sprintf("active %s", l.Active.Set.Version)
	})
	t.Logf("consumer's node stopped → promotion recorded %v; recorded → seen by the follower within %v", recorded.Sub(stopped), time.Since(recorded))
}
