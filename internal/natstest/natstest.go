// Package natstest starts real nats-server nodes in process for tests: one JetStream server or a
// cluster, on loopback with random ports and stores in the test's temp dirs.
package natstest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/internal/testutil"
)

// Node is one server. Stop and Start restart it on the same port and store, as an outage would.
type Node struct {
	t    testing.TB
	Opts *server.Options
	S    *server.Server
}

// URL is the node's client URL.
func (n *Node) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.Opts.Port) }

// Stop shuts the node down (idempotent).
func (n *Node) Stop() {
	if n.S != nil {
		n.S.Shutdown()
		n.S.WaitForShutdown()
		n.S = nil
	}
}

// Start starts a stopped node again on the same port and store.
func (n *Node) Start() {
	n.t.Helper()
	s, err := server.NewServer(n.Opts)
	if err != nil {
		n.t.Fatalf("nats server: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(20 * time.Second) {
		n.t.Fatal("nats server not ready")
	}
	n.S = s
}

func options(t testing.TB, port int) *server.Options {
	return &server.Options{
		Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: t.TempDir(),
		NoLog: true, NoSigs: true, MaxPayload: 1 << 20,
	}
}

// Options are the options JetStream starts a server with (loopback, a random port, the store in a
// temp dir), for a test that needs more (auth, TLS, a leaf node, JetStream off) to change and Start.
func Options(t testing.TB) *server.Options { return options(t, -1) }

// JetStream starts one JetStream server, stopped when the test ends.
func JetStream(t testing.TB) *Node {
	t.Helper()
	return Start(t, Options(t))
}

// Start starts one server with o, stopped when the test ends. A random port (-1) becomes the one
// the server bound, so that Stop and Start keep it.
func Start(t testing.TB, o *server.Options) *Node {
	t.Helper()
	n := &Node{t: t, Opts: o}
	n.Start()
	n.Opts.Port = n.S.Addr().(*net.TCPAddr).Port
	t.Cleanup(n.Stop)
	return n
}

// Cluster starts size JetStream servers routed into one cluster and waits for a meta leader.
func Cluster(t testing.TB, size int) []*Node {
	t.Helper()
	var nodes []*Node
	// A port picked free can be taken by another test before the server binds it (CI runs many
	// packages at once): a cluster whose node does not come up is started again on new ports.
	for attempt := 1; ; attempt++ {
		if nodes = startCluster(t, size); nodes != nil {
			break
		}
		if attempt == 3 {
			t.Fatal("cluster node not ready, three times")
		}
		t.Logf("cluster node not ready (attempt %d): starting the cluster again on new ports", attempt)
	}
	for _, n := range nodes {
		t.Cleanup(n.Stop)
	}
	// Ready means the meta leader sees every node online with JetStream: before that, placing an R3
	// stream or bucket fails with "no suitable peers for placement".
	testutil.WaitFor(t, 30*time.Second, "JetStream meta leader seeing every peer", func() bool {
		for _, n := range nodes {
			if n.S != nil && n.S.JetStreamIsLeader() {
				return len(n.S.JetStreamClusterPeers()) == size
			}
		}
		return false
	})
	placeable(t, nodes[0].URL(), size)
	return nodes
}

// placeable waits until the cluster creates (and deletes) a stream at full replication, each try
// bounded: on a fresh cluster under load the first stream create has gone unanswered (clean-clone
// CI runs: a test's own 30 s open of an R3 stream timed out, twice), so a test starts on a cluster
// that has placed one already.
func placeable(t testing.TB, url string, replicas int) {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatalf("natstest: connect to the new cluster: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	const name = "NATSTEST_PLACEABLE"
	created := false
	var last error
	testutil.WaitFor(t, 90*time.Second, "a stream of "+fmt.Sprint(replicas)+" replicas placed and deleted on the new cluster", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if !created {
			_, last = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{"natstest.placeable"},
				Replicas: replicas, Storage: jetstream.MemoryStorage})
			if created = last == nil; !created {
				t.Logf("natstest: placing a stream: %v (retried)", last)
				return false
			}
		}
		if last = js.DeleteStream(ctx, name); last != nil && !errors.Is(last, jetstream.ErrStreamNotFound) {
			t.Logf("natstest: deleting the placed stream: %v (retried)", last)
			return false
		}
		return true
	})
}

// startCluster starts the nodes and waits until each accepts connections; nil (every node stopped)
// when one does not.
func startCluster(t testing.TB, size int) []*Node {
	t.Helper()
	cports := make([]int, size)
	var routes []*url.URL
	for i := range cports {
		cports[i] = testutil.FreePort(t)
		routes = append(routes, &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", cports[i])})
	}
	nodes := make([]*Node, size)
	for i := range nodes {
		o := options(t, testutil.FreePort(t))
		o.ServerName = fmt.Sprintf("n%d", i+1)
		o.Cluster = server.ClusterOpts{Name: "gemba", Host: "127.0.0.1", Port: cports[i]}
		o.Routes = routes
		nodes[i] = &Node{t: t, Opts: o}
	}
	for _, n := range nodes { // start all before waiting: each waits for routes to its peers
		s, err := server.NewServer(n.Opts)
		if err != nil {
			t.Fatalf("nats server: %v", err)
		}
		go s.Start()
		n.S = s
	}
	for _, n := range nodes {
		if !n.S.ReadyForConnections(20 * time.Second) {
			for _, m := range nodes {
				m.Stop()
			}
			return nil
		}
	}
	return nodes
}

// URLs joins the nodes' client URLs for nats.Connect.
func URLs(nodes ...*Node) string {
	us := make([]string, len(nodes))
	for i, n := range nodes {
		us[i] = n.URL()
	}
	return strings.Join(us, ",")
}

// Connect opens a client that reconnects forever, closed when the test ends; opts come after those
// two and may override them.
func Connect(t testing.TB, urls string, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(urls, append([]nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(50 * time.Millisecond)}, opts...)...)
	if err != nil {
		t.Fatalf("connect %s: %v", urls, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// Opening calls open until it succeeds, at most 30 s: a fresh in-process cluster under load may
// leave a request unanswered for a moment or count a peer offline, which a hub's restart rides out.
func Opening(t testing.TB, what string, open func() error) {
	t.Helper()
	testutil.WaitForState(t, 30*time.Second, what, func() (bool, string) {
		err := open()
		return err == nil, fmt.Sprint(err)
	})
}

// OffClient finds a follower placement for a node-loss test: open (given the try number) starts a
// follower whose client connects where it chooses and returns that client's server name and a
// close func; OffClient opens again until the one consumer the follower made on st lives on a node
// other than its client's, and returns that node. The consumers of discarded tries are deleted
// (their close may leave them to expire).
func OffClient(t testing.TB, st jetstream.Stream, nodes []*Node, open func(try int) (client string, close func())) *Node {
	t.Helper()
	ctx := context.Background()
	for try := 0; ; try++ {
		before := map[string]bool{}
		for name := range st.ConsumerNames(ctx).Name() {
			before[name] = true
		}
		client, closeIt := open(try)
		var on, names []string
		for ci := range st.ListConsumers(ctx).Info() {
			if ci.Cluster != nil && !before[ci.Name] {
				on, names = append(on, ci.Cluster.Leader), append(names, ci.Name)
			}
		}
		if len(on) == 1 && on[0] != client {
			for _, n := range nodes {
				if n.S != nil && n.S.Name() == on[0] {
					return n
				}
			}
		}
		if try == 30 {
			t.Fatalf("the follower's consumer never landed off its client's node (on %v)", on)
		}
		closeIt()
		for _, name := range names {
			_ = st.DeleteConsumer(ctx, name)
		}
	}
}
