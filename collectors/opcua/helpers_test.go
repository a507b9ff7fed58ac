package opcua

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/gemba-io/gemba/collectors"
	"github.com/gemba-io/gemba/config"
	"github.com/gemba-io/gemba/signal"
)

func TestMain(m *testing.M) {
	// gopcua's test server ends a subscription only after its lifetime when a client vanishes
	// without deleting it (tests that cut connections do that on purpose); that goroutine is the
	// server's, not ours.
	goleak.VerifyTestMain(sharedCleanup{m}, goleak.IgnoreTopFunction("github.com/gopcua/opcua/server.(*Subscription).run"))
}

// sharedCleanup stops the servers tests share (they are slow to start) before goleak looks.
type sharedCleanup struct{ m *testing.M }

func (s sharedCleanup) Run() int {
	code := s.m.Run()
	sharedMu.Lock()
	for _, f := range sharedClose {
		f()
	}
	sharedMu.Unlock()
	return code
}

var (
	sharedMu    sync.Mutex
	sharedClose []func()
)

// sink is an Emitter that keeps every sample.
type sink struct {
	mu      sync.Mutex
	samples []signal.Sample
	fail    error
}

func (s *sink) Emit(_ context.Context, b []signal.Sample) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	s.samples = append(s.samples, b...)
	return nil
}

func (s *sink) all() []signal.Sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]signal.Sample(nil), s.samples...)
}

func (s *sink) count(sig string) int {
	n := 0
	for _, x := range s.all() {
		if x.Signal == sig {
			n++
		}
	}
	return n
}

// countSince counts samples of sig after index from.
func (s *sink) last(sig string) (signal.Sample, bool) {
	all := s.all()
	for i := len(all) - 1; i >= 0; i-- {
		if all[i].Signal == sig {
			return all[i], true
		}
	}
	return signal.Sample{}, false
}

// decodeConfig decodes YAML over the defaults exactly as the agent does, validation included.
func decodeConfig(t testing.TB, yml string) *Config {
	t.Helper()
	cfg := NewConfig()
	env := func(k string) (string, bool) { v, ok := os.LookupEnv(k); return v, ok }
	if err := config.NewDecoder(config.WithEnv(env)).Unmarshal([]byte(yml), cfg); err != nil {
		t.Fatalf("config:\n%v\n--- yaml:\n%s", err, yml)
	}
	return cfg
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	return slog.New(slog.DiscardHandler)
}

// running is a collector started in the background.
type running struct {
	c      *Collector
	sink   *sink
	cancel context.CancelFunc
	done   chan error
	reg    *prometheus.Registry
}

func startCollector(t testing.TB, cfg *Config, dataDir string) *running {
	t.Helper()
	reg := prometheus.NewRegistry()
	c, err := New("plc", cfg, collectors.Deps{Logger: testLogger(t), Metrics: reg, DataDir: dataDir, Agent: "test"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{c: c, sink: &sink{}, cancel: cancel, done: make(chan error, 1), reg: reg}
	go func() { r.done <- c.Run(ctx, r.sink) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels Run and checks it returns promptly and cleanly.
func (r *running) stop(t testing.TB) {
	t.Helper()
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("Run returned %v after cancel, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("Run did not return within 10s of cancel")
	}
}

// runErr waits for Run to return on its own.
func (r *running) runErr(t testing.TB, d time.Duration) error {
	t.Helper()
	select {
	case err := <-r.done:
		r.cancel()
		r.cancel = nil
		return err
	case <-time.After(d):
		t.Fatalf("Run did not return within %s", d)
	}
	return nil
}

// proxy is a TCP proxy for cutting connections: Cut drops live connections, SetDown refuses
// new ones.
type proxy struct {
	l      net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	down   bool
	wg     sync.WaitGroup
	// generation of live connections; those older than holeGen drop all data (half-open link)
	gen     int
	holeGen int
}

func newProxy(t testing.TB, target string) *proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{l: l, target: target}
	p.wg.Go(p.accept)
	t.Cleanup(p.close)
	return p
}

func (p *proxy) addr() string { return p.l.Addr().String() }

func (p *proxy) accept() {
	for {
		in, err := p.l.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		down := p.down
		p.mu.Unlock()
		if down {
			in.Close()
			continue
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			in.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, in, out)
		p.gen++
		gen := p.gen
		p.mu.Unlock()
		p.wg.Go(func() { p.pipe(out, in, gen); out.Close() })
		p.wg.Go(func() { p.pipe(in, out, gen); in.Close() })
	}
}

// pipe copies src to dst until either ends; once the connection is black-holed it reads and
// drops everything, like a link that died without a reset.
func (p *proxy) pipe(dst, src net.Conn, gen int) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			hole := gen <= p.holeGen
			p.mu.Unlock()
			if !hole {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
		}
		if err != nil {
			return
		}
	}
}

// Blackhole makes every live connection silently drop data; new connections work.
func (p *proxy) Blackhole() {
	p.mu.Lock()
	p.holeGen = p.gen
	p.mu.Unlock()
}

func (p *proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *proxy) SetDown(b bool) {
	p.mu.Lock()
	p.down = b
	p.mu.Unlock()
}

func (p *proxy) close() {
	p.l.Close()
	p.Cut()
	p.wg.Wait()
}

// mustContain fails unless err's text contains every part.
func mustContain(t testing.TB, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("want an error containing %q, got nil", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Fatalf("error %q does not contain %q", err, p)
		}
	}
}

var errTest = errors.New("test failure")

func nodesYAML(prefix string, n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "  - {node: \"%s%d\", signal: v%d}\n", prefix, i, i)
	}
	return b.String()
}

// metricValue reads a counter or gauge.
func metricValue(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		return -1
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	if d.Gauge != nil {
		return d.Gauge.GetValue()
	}
	return -1
}

// seriesCount counts the series a collector exports.
func seriesCount(c prometheus.Collector) int {
	ch := make(chan prometheus.Metric, 1000)
	c.Collect(ch)
	close(ch)
	return len(ch)
}
