package chaos

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub/act"
	"github.com/gemba-io/gemba/sim"
)

// node is one NATS server of a hub scenario, restartable on the same ports and store.
type node struct {
	opts *server.Options
	srv  *server.Server
}

func (n *node) start() error {
	s, err := server.NewServer(n.opts)
	if err != nil {
		return err
	}
	go s.Start()
	n.srv = s
	return nil
}

func (n *node) ready() error {
	if !n.srv.ReadyForConnections(20 * time.Second) {
		return fmt.Errorf("nats node %s not ready after 20s", n.opts.ServerName)
	}
	return nil
}

func (n *node) stop() {
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv.WaitForShutdown()
		n.srv = nil
	}
}

func (n *node) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.opts.Port) }

// startNodes starts one JetStream server, or three routed into a cluster. A port picked free can
// be taken by another process before the server binds it (the test suite runs packages side by
// side): nodes that do not come up are started again, on new ports and empty stores, twice more.
func startNodes(dir string, cluster bool) ([]*node, error) {
	var err error
	for attempt := 1; attempt <= 3; attempt++ {
		var nodes []*node
		if nodes, err = startNodesOnce(dir, cluster); err == nil {
			return nodes, nil
		}
		for i := range 3 {
			_ = os.RemoveAll(filepath.Join(dir, fmt.Sprintf("nats-n%d", i+1)))
		}
	}
	return nil, fmt.Errorf("%w (three attempts on new ports)", err)
}

func startNodesOnce(dir string, cluster bool) ([]*node, error) {
	size := 1
	if cluster {
		size = 3
	}
	var routes []*url.URL
	cports := make([]int, size)
	for i := range cports {
		p, err := sim.FreePort()
		if err != nil {
			return nil, err
		}
		cports[i] = p
		routes = append(routes, &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", p)})
	}
	nodes := make([]*node, size)
	for i := range nodes {
		p, err := sim.FreePort()
		if err != nil {
			return nil, err
		}
		o := &server.Options{ServerName: fmt.Sprintf("n%d", i+1), Host: "127.0.0.1", Port: p, JetStream: true,
			StoreDir: filepath.Join(dir, fmt.Sprintf("nats-n%d", i+1)), NoLog: true, NoSigs: true}
		if cluster {
			o.Cluster = server.ClusterOpts{Name: "gemba-chaos", Host: "127.0.0.1", Port: cports[i]}
			o.Routes = routes
		}
		nodes[i] = &node{opts: o}
	}
	// Start every node before waiting: each waits for routes to its peers.
	for _, n := range nodes {
		if err := n.start(); err != nil {
			stopNodes(nodes)
			return nil, err
		}
	}
	for _, n := range nodes {
		if err := n.ready(); err != nil {
			stopNodes(nodes)
			return nil, err
		}
	}
	return nodes, nil
}

func stopNodes(nodes []*node) {
	for _, n := range nodes {
		if n != nil {
			n.stop()
		}
	}
}

// hubProc is one gemba-hub replica: the built binary, `run -c <file>`.
type hubProc struct {
	name, cfgFile, base, logFile string
	cmd                          *exec.Cmd
	done                         chan error
}

func (e *HubEnv) startHub(h *hubProc) error {
	lf, err := os.OpenFile(h.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	h.cmd = exec.Command(e.o.HubBin, "run", "-c", h.cfgFile)
	h.cmd.Dir = e.dir
	h.cmd.Stdout, h.cmd.Stderr = lf, lf
	h.cmd.SysProcAttr = ChildAttr()
	if err := h.cmd.Start(); err != nil {
		lf.Close()
		return fmt.Errorf("start %s: %w", h.name, err)
	}
	h.done = make(chan error, 1)
	go func() { h.done <- h.cmd.Wait(); lf.Close() }()
	return nil
}

// kill SIGKILLs the replica and waits for it to end.
func (h *hubProc) kill() {
	if h.cmd == nil {
		return
	}
	_ = h.cmd.Process.Kill()
	<-h.done
	h.cmd = nil
}

// stop asks the replica to stop (SIGTERM), killing it after d.
func (h *hubProc) stop(d time.Duration) {
	if h.cmd == nil {
		return
	}
	_ = h.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-h.done:
	case <-time.After(d):
		_ = h.cmd.Process.Kill()
		<-h.done
	}
	h.cmd = nil
}

func (h *hubProc) exited() bool {
	select {
	case err := <-h.done:
		h.done <- err
		return true
	default:
		return false
	}
}

// receiver is the webhook endpoint of the web channel: it verifies each call's Standard Webhooks
// signature and counts calls per webhook-id. While down it answers 503, as a shop behind a load
// balancer with no healthy backend does.
type receiver struct {
	key  []byte
	srv  *http.Server
	addr string

	mu       sync.Mutex
	down     bool
	got      map[string]int // accepted calls per webhook-id
	refused  int            // calls answered 503 while down
	badSig   int
	received int
}

const hookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

func startReceiver() (*receiver, error) {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(hookSecret, "whsec_"))
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &receiver{key: key, addr: ln.Addr().String(), got: map[string]int{}}
	r.srv = &http.Server{Handler: r, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = r.srv.Serve(ln) }()
	return r, nil
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	id, ts := req.Header.Get("webhook-id"), req.Header.Get("webhook-timestamp")
	var sec int64
	_, _ = fmt.Sscan(ts, &sec)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.received++
	if r.down {
		r.refused++
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	if want := act.Sign(r.key, id, sec, body); !strings.Contains(req.Header.Get("webhook-signature"), want) {
		r.badSig++
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	r.got[id]++
	w.WriteHeader(http.StatusNoContent)
}

func (r *receiver) setDown(down bool) {
	r.mu.Lock()
	r.down = down
	r.mu.Unlock()
}

// snapshot copies the counts.
func (r *receiver) snapshot() (got map[string]int, refused, badSig int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	got = make(map[string]int, len(r.got))
	for k, v := range r.got {
		got[k] = v
	}
	return got, r.refused, r.badSig
}

func (r *receiver) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = r.srv.Shutdown(ctx)
}

// connectNodes opens a client to every node that reconnects forever.
func connectNodes(nodes []*node) (*nats.Conn, jetstream.JetStream, error) {
	urls := make([]string, len(nodes))
	for i, n := range nodes {
		urls[i] = n.url()
	}
	nc, err := nats.Connect(strings.Join(urls, ","), nats.Name("gemba-chaos-hub"), nats.MaxReconnects(-1),
		nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

// createAgentStream creates the agents' stream as gemba-agent does (create_stream), at R3 on a
// cluster; right after the meta leader is elected the peers may not all be known: retried.
func createAgentStream(ctx context.Context, js jetstream.JetStream, replicas int) error {
	var err error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err = js.CreateStream(cctx, jetstream.StreamConfig{Name: stream, Subjects: []string{"gemba.*.*.samples", "gemba.*.*.features", "gemba.*.*.status"},
			Retention: jetstream.LimitsPolicy, MaxAge: 7 * 24 * time.Hour, MaxBytes: -1, Replicas: replicas,
			Duplicates: 20 * time.Minute, Storage: jetstream.FileStorage, Discard: jetstream.DiscardNew})
		cancel()
		if err == nil || errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return nil
		}
		if ctx.Err() != nil {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	return fmt.Errorf("create the agents' stream (R%d): %w", replicas, err)
}
