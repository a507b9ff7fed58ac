package uplink

import (
	"context"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
)

// TestClusterR3SurvivesNodeLoss runs a 3-node JetStream cluster in process, forwards into an R3
// stream, kills the stream's leader mid-flow and checks that every sample is stored exactly once.
func TestClusterR3SurvivesNodeLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test is slow-ish (leader elections)")
	}
	const n = 3
	cports := make([]int, n)
	for i := range cports {
		cports[i] = testutil.FreePort(t)
	}
	var routes []*url.URL
	for _, p := range cports {
		routes = append(routes, &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", p)})
	}
	servers := make([]*server.Server, n)
	var urls []string
	for i := range n {
		o := jsOptions(t, t.TempDir(), -1)
		o.ServerName = fmt.Sprintf("n%d", i+1)
		o.Cluster = server.ClusterOpts{Name: "hub", Host: "127.0.0.1", Port: cports[i]}
		o.Routes = routes
		s, err := server.NewServer(o)
		if err != nil {
			t.Fatal(err)
		}
		go s.Start()
		servers[i] = s
	}
	alive := map[int]bool{}
	for i, s := range servers {
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatal("cluster node not ready")
		}
		alive[i] = true
		urls = append(urls, s.ClientURL())
	}
	t.Cleanup(func() {
		for i, s := range servers {
			if alive[i] {
				stopServer(s)
			}
		}
	})
	testutil.WaitFor(t, 20*time.Second, "JetStream meta leader", func() bool {
		for _, s := range servers {
			if s.JetStreamIsLeader() {
				return true
			}
		}
		return false
	})

	src := newMemSource()
	cfg := testConfig(urls[0])
	cfg.NATS.Servers = urls
	cfg.NATS.Replicas = 3
	r := startUplink(t, cfg, src, Options{})
	p := produce(src, 2*time.Millisecond)
	testutil.WaitFor(t, 30*time.Second, "flowing into R3 stream", func() bool { return src.Acked(signal.StreamSamples) > 50 })

	leader := -1
	testutil.WaitFor(t, 10*time.Second, "stream leader", func() bool {
		for i, s := range servers {
			if s.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, "GEMBA") {
				leader = i
				return true
			}
		}
		return false
	})
	before := src.Acked(signal.StreamSamples)
	stopServer(servers[leader])
	alive[leader] = false
	testutil.WaitFor(t, 30*time.Second, "flowing again after losing the leader", func() bool {
		return src.Acked(signal.StreamSamples) > before+100
	})
	total := p.halt()
	last := src.LastSeq(signal.StreamSamples)
	testutil.WaitFor(t, 30*time.Second, "everything acked", func() bool { return src.Acked(signal.StreamSamples) == last })
	r.stop(t)

	var survivor string
	for i := range servers {
		if alive[i] {
			survivor = urls[i]
			break
		}
	}
	_, js := connectJS(t, survivor)
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
	hubOpts := jsOptions(t, t.TempDir(), -1)
	hubOpts.ServerName, hubOpts.JetStreamDomain = "hub", "hub"
	hubOpts.LeafNode = server.LeafNodeOpts{Host: "127.0.0.1", Port: -1}
	hub := startServer(t, hubOpts)
	t.Cleanup(func() { stopServer(hub) })

	leafOpts := jsOptions(t, t.TempDir(), -1)
	leafOpts.ServerName, leafOpts.JetStreamDomain = "leaf", "leaf"
	remote := &url.URL{Scheme: "nats-leaf", Host: fmt.Sprintf("127.0.0.1:%d", hubOpts.LeafNode.Port)}
	leafOpts.LeafNode.Remotes = []*server.RemoteLeafOpts{{URLs: []*url.URL{remote}}}
	leaf := startServer(t, leafOpts)
	t.Cleanup(func() { stopServer(leaf) })
	testutil.WaitFor(t, 10*time.Second, "leaf connected", func() bool { return leaf.NumLeafNodes() == 1 })

	src := newMemSource()
	for i := range 20 {
		src.Append(signal.StreamSamples, sampleChunk(i*10, 10, time.Now()))
	}
	cfg := testConfig(leaf.ClientURL())
	cfg.NATS.Domain = "hub"
	r := startUplink(t, cfg, src, Options{})
	testutil.WaitFor(t, 15*time.Second, "delivered through the leaf", func() bool { return src.Acked(signal.StreamSamples) == 20 })
	if ok, why := r.u.Health().Ready(); !ok {
		t.Errorf("not ready: %s", why)
	}
	_, js := connectJS(t, hub.ClientURL())
	readStream(t, js, "GEMBA").exactlyOnce(t, 200)
}
