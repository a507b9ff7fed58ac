package uplink

import (
	"context"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
)

// TestClusterR3SurvivesNodeLoss runs a 3-node JetStream cluster in process, forwards into an R3
// stream, kills the stream's leader mid-flow and checks that every sample is stored exactly once.
func TestClusterR3SurvivesNodeLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test is slow-ish (leader elections)")
	}
	nodes := natstest.Cluster(t, 3)

	src := newMemSource()
	cfg := testConfig(nodes[0].URL())
	cfg.NATS.Servers = []string{nodes[0].URL(), nodes[1].URL(), nodes[2].URL()}
	cfg.NATS.Replicas = 3
	r := startUplink(t, cfg, src, Options{})
	p := produce(src, 2*time.Millisecond)
	testutil.WaitFor(t, 30*time.Second, "flowing into R3 stream", func() bool { return src.Acked(signal.StreamSamples) > 50 })

	leader := -1
	testutil.WaitFor(t, 10*time.Second, "stream leader", func() bool {
		for i, nd := range nodes {
			if nd.S.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, "GEMBA") {
				leader = i
				return true
			}
		}
		return false
	})
	before := src.Acked(signal.StreamSamples)
	nodes[leader].Stop()
	testutil.WaitFor(t, 30*time.Second, "flowing again after losing the leader", func() bool {
		return src.Acked(signal.StreamSamples) > before+100
	})
	total := p.halt()
	last := src.LastSeq(signal.StreamSamples)
	testutil.WaitFor(t, 30*time.Second, "everything acked", func() bool { return src.Acked(signal.StreamSamples) == last })
	r.stop(t)

	_, js := natstest.Connect(t, nodes[(leader+1)%len(nodes)].URL()) // a survivor
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, "GEMBA")
	if err != nil {
		t.Fatal(err)
	}
	if rep := st.CachedInfo().Config.Replicas; rep != 3 {
		t.Errorf("stream replicas %d, want 3", rep)
	}
	readStream(t, js, "GEMBA").exactlyOnce(t, total)
	src.check(t)
}

// TestJetStreamDomainViaLeafNode: the agent talks to a leaf node (with its own JetStream domain)
// and publishes into the hub's stream through uplink.nats.domain.
func TestJetStreamDomainViaLeafNode(t *testing.T) {
	hubOpts := natstest.Options(t)
	hubOpts.ServerName, hubOpts.JetStreamDomain = "hub", "hub"
	hubOpts.LeafNode = server.LeafNodeOpts{Host: "127.0.0.1", Port: -1}
	hub := natstest.Start(t, hubOpts)

	leafOpts := natstest.Options(t)
	leafOpts.ServerName, leafOpts.JetStreamDomain = "leaf", "leaf"
	remote := &url.URL{Scheme: "nats-leaf", Host: fmt.Sprintf("127.0.0.1:%d", hubOpts.LeafNode.Port)}
	leafOpts.LeafNode.Remotes = []*server.RemoteLeafOpts{{URLs: []*url.URL{remote}}}
	leaf := natstest.Start(t, leafOpts)
	testutil.WaitFor(t, 10*time.Second, "leaf connected", func() bool { return leaf.S.NumLeafNodes() == 1 })

	src := newMemSource()
	for i := range 20 {
		src.Append(signal.StreamSamples, sampleChunk(i*10, 10, time.Now()))
	}
	cfg := testConfig(leaf.URL())
	cfg.NATS.Domain = "hub"
	r := startUplink(t, cfg, src, Options{})
	testutil.WaitFor(t, 15*time.Second, "delivered through the leaf", func() bool { return src.Acked(signal.StreamSamples) == 20 })
	if ok, why := r.u.Health().Ready(); !ok {
		t.Errorf("not ready: %s", why)
	}
	_, js := natstest.Connect(t, hub.URL())
	readStream(t, js, "GEMBA").exactlyOnce(t, 200)
}
