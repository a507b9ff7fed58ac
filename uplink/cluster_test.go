package uplink

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/gemba-io/gemba/signal"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestClusterR3SurvivesNodeLoss runs a 3-node JetStream cluster in process, forwards into an R3
// stream, kills the stream's leader mid-flow and checks that every sample is stored exactly once.
func TestClusterR3SurvivesNodeLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test is slow-ish (leader elections)")
	}
	const n = 3
	cports := make([]int, n)
	for i := range cports {
		cports[i] = freePort(t)
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
	eventually(t, 20*time.Second, "JetStream meta leader", func() bool {
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
	eventually(t, 30*time.Second, "flowing into R3 stream", func() bool { return src.Acked(signal.StreamSamples) > 50 })

	leader := -1
	eventually(t, 10*time.Second, "stream leader", func() bool {
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
	eventually(t, 30*time.Second, "flowing again after losing the leader", func() bool {
		return src.Acked(signal.StreamSamples) > before+100
	})
	total := p.halt()
	last := src.LastSeq(signal.StreamSamples)
	eventually(t, 30*time.Second, "everything acked", func() bool { return src.Acked(signal.StreamSamples) == last })
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
