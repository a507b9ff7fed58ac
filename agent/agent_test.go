package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/gemba-io/gemba/buffer"
	"github.com/gemba-io/gemba/collectors"
	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
	"github.com/gemba-io/gemba/uplink"
)

func TestMain(m *testing.M) {
	if spec := os.Getenv(opcChildEnv); spec != "" {
		os.Exit(runOPCChild(spec)) // a child serving OPC UA for the health and reload tests
	}
	goleak.VerifyTestMain(m)
}

// eventually polls fn until it returns nil or the deadline passes.
func eventually(t *testing.T, within time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %v", within, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// fakeUplink stands in for the NATS uplink: it forwards nothing and reports what the test sets.
type fakeUplink struct {
	ready atomic.Bool
}

func (f *fakeUplink) Run(ctx context.Context) error { <-ctx.Done(); return nil }
func (f *fakeUplink) Ready() (bool, string) {
	if f.ready.Load() {
		return true, "connected"
	}
	return false, "not connected to nats://127.0.0.1:1 (connection refused)"
}

// scripted is a test collector type: it emits numbered samples until stopped, and fails as told.
type scripted struct {
	mu       sync.Mutex
	runs     int
	failures []error // returned by the first runs, in order
	panicRun int     // run number (1-based) that panics; 0 never
	emitted  []int64 // values whose Emit returned nil
	next     int64
	name     string
}

func (s *scripted) Run(ctx context.Context, emit collectors.Emitter) error {
	s.mu.Lock()
	s.runs++
	run := s.runs
	var fail error
	if run <= len(s.failures) {
		fail = s.failures[run-1]
	}
	s.mu.Unlock()
	if run == s.panicRun {
		panic("scripted panic")
	}
	if fail != nil {
		return fail
	}
	for ctx.Err() == nil {
		s.mu.Lock()
		v := s.next
		s.next++
		s.mu.Unlock()
		err := emit.Emit(ctx, []signal.Sample{{Signal: s.name, Time: time.Now(), Value: signal.Int(v), Source: s.name}})
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		s.mu.Lock()
		s.emitted = append(s.emitted, v)
		s.mu.Unlock()
	}
	return nil
}

func (s *scripted) Runs() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.runs
}

var (
	scriptMu sync.Mutex
	scripts  = map[string]*scripted{}
)

type scriptedConfig struct {
	Key string `yaml:"key"`
}

func init() {
	collectors.Register(collectors.Factory{
		Type:      "scripted",
		NewConfig: func() any { return &scriptedConfig{} },
		New: func(name string, cfg any, _ collectors.Deps) (collectors.Collector, error) {
			scriptMu.Lock()
			defer scriptMu.Unlock()
			s, ok := scripts[cfg.(*scriptedConfig).Key]
			if !ok {
				return nil, fmt.Errorf("no script %q", cfg.(*scriptedConfig).Key)
			}
			return s, nil
		},
	})
}

func register(key string, s *scripted) {
	scriptMu.Lock()
	scripts[key] = s
	scriptMu.Unlock()
}

// keepOpen lets the test read the buffer after the agent closed it.
type keepOpen struct{ buffer.Buffer }

func (keepOpen) Close() error { return nil }

type harness struct {
	agent  *Agent
	buf    *buffer.Memory
	up     *fakeUplink
	cancel context.CancelFunc
	done   chan error
	addr   string
}

func start(t *testing.T, yml string) *harness { t.Helper(); return startWith(t, yml, nil) }

// startWith is start with options changed by opt (a Reload, say) before the agent is built.
func startWith(t *testing.T, yml string, opt func(*Options)) *harness {
	t.Helper()
	cfg, err := Parse([]byte(yml), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{up: &fakeUplink{}, done: make(chan error, 1)}
	ready := make(chan string, 1)
	o := Options{
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		OpenBuffer: func(c buffer.Config, _ buffer.Options) (buffer.Buffer, error) {
			h.buf = buffer.NewMemory(c)
			return keepOpen{h.buf}, nil
		},
		NewUplink: func(uplink.Config, uplink.Identity, uplink.Source, uplink.Options) (Uplink, error) {
			return h.up, nil
		},
		Ready: ready,
	}
	if opt != nil {
		opt(&o)
	}
	h.agent = New(cfg, o)
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- h.agent.Run(ctx) }()
	select {
	case h.addr = <-ready:
	case err := <-h.done:
		t.Fatalf("agent did not start: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("agent did not start in 10s")
	}
	t.Cleanup(func() { h.stop(t) })
	return h
}

func (h *harness) stop(t *testing.T) {
	t.Helper()
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	select {
	case err := <-h.done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("agent did not stop")
	}
}

const baseConfig = `
agent: {id: gw-test, site: plant1, shutdown_timeout: 5s, restart: {initial: 10ms, max: 40ms}, linger: 1ms}
http: {listen: "127.0.0.1:0"}
buffer: {dir: /nonexistent/memory-buffer, max_bytes: 64MiB}
`

// bufferedValues reads every sample chunk left in the buffer and returns the int values per signal.
func bufferedValues(t *testing.T, b buffer.Buffer) map[string][]int64 {
	t.Helper()
	out := map[string][]int64{}
	var after uint64
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		recs, err := b.Read(ctx, signal.StreamSamples, after, 1000)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) || len(recs) == 0 {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			c, err := signal.ParseChunk(r.Data)
			if err != nil {
				t.Fatal(err)
			}
			ss, err := signal.DecodeSamples(c.Records)
			if err != nil {
				t.Fatal(err)
			}
			if c.Count != len(ss) || c.ConfigVersion == "" {
				t.Fatalf("chunk header count %d version %q for %d samples", c.Count, c.ConfigVersion, len(ss))
			}
			for _, s := range ss {
				v, _ := s.Value.Int()
				out[s.Signal] = append(out[s.Signal], v)
			}
			after = r.Seq
		}
	}
}

func TestShutdownDrainsEverythingAcknowledged(t *testing.T) {
	a, b := &scripted{name: "a"}, &scripted{name: "b"}
	register("drain-a", a)
	register("drain-b", b)
	h := start(t, baseConfig+`
collectors:
  - {name: a, type: scripted, key: drain-a}
  - {name: b, type: scripted, key: drain-b}
`)
	eventually(t, 10*time.Second, func() error {
		a.mu.Lock()
		defer a.mu.Unlock()
		if len(a.emitted) < 500 {
			return fmt.Errorf("only %d emitted", len(a.emitted))
		}
		return nil
	})
	h.stop(t)
	got := bufferedValues(t, h.buf)
	for _, s := range []*scripted{a, b} {
		s.mu.Lock()
		acked := s.emitted
		s.mu.Unlock()
		vals := got[s.name]
		// Every acknowledged emit is in the buffer, in order, once. (An Emit in flight at shutdown may
		// be stored without having been acknowledged: that is allowed, the source would redeliver.)
		if len(vals) < len(acked) {
			t.Fatalf("%s: %d acknowledged, %d buffered", s.name, len(acked), len(vals))
		}
		for i, v := range acked {
			if vals[i] != v {
				t.Fatalf("%s: buffered[%d] = %d, acknowledged %d", s.name, i, vals[i], v)
			}
		}
	}
}

func TestCollectorRestartsWithBackoffAndSurvivesPanic(t *testing.T) {
	s := &scripted{name: "flaky", failures: []error{errors.New("dial: refused"), errors.New("dial: refused")}, panicRun: 3}
	register("flaky", s)
	h := start(t, baseConfig+`
collectors:
  - {name: flaky, type: scripted, key: flaky}
`)
	eventually(t, 10*time.Second, func() error {
		if s.Runs() < 4 {
			return fmt.Errorf("runs %d", s.Runs())
		}
		st := h.agent.Status().Collectors["flaky"]
		if st.State != "running" || st.Restarts != 3 {
			return fmt.Errorf("state %+v", st)
		}
		return nil
	})
	if got := testutil.Metric(t, h.agent.Registry(), "gemba_collector_restarts_total", "collector", "flaky"); got != 3 {
		t.Errorf("restarts metric %v, want 3", got)
	}
}

func TestPermanentErrorReportedOnceAndAgentKeepsRunning(t *testing.T) {
	bad := &scripted{name: "bad", failures: []error{collectors.Permanent(errors.New("BadUserAccessDenied"))}}
	good := &scripted{name: "good"}
	register("perm-bad", bad)
	register("perm-good", good)
	h := start(t, baseConfig+`
collectors:
  - {name: bad, type: scripted, key: perm-bad}
  - {name: good, type: scripted, key: perm-good}
  - {name: missing, type: scripted, key: no-such-script}
`)
	eventually(t, 10*time.Second, func() error {
		st := h.agent.Status().Collectors
		if st["bad"].State != "failed" || !strings.Contains(st["bad"].Error, "BadUserAccessDenied") {
			return fmt.Errorf("bad: %+v", st["bad"])
		}
		if st["missing"].State != "failed" || !strings.Contains(st["missing"].Error, "no script") {
			return fmt.Errorf("missing: %+v", st["missing"])
		}
		if st["good"].Samples < 10 {
			return fmt.Errorf("good: %+v", st["good"])
		}
		return nil
	})
	if bad.Runs() != 1 {
		t.Errorf("permanent error retried: %d runs", bad.Runs())
	}
}

func TestReadyzExplainsWhyNotReady(t *testing.T) {
	h := start(t, baseConfig)
	get := func() (int, Readiness) {
		resp, err := http.Get("http://" + h.addr + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var r Readiness
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, r
	}
	code, r := get()
	if code != http.StatusServiceUnavailable || r.Ready {
		t.Fatalf("want 503 not ready, got %d %+v", code, r)
	}
	var reason string
	for _, c := range r.Checks {
		if c.Name == "uplink" && !c.OK {
			reason = c.Reason
		}
	}
	if !strings.Contains(reason, "not connected") || !strings.Contains(reason, "buffering locally") {
		t.Fatalf("uplink reason %q", reason)
	}
	h.up.ready.Store(true)
	if code, r = get(); code != http.StatusOK || !r.Ready {
		t.Fatalf("want 200 ready, got %d %+v", code, r)
	}
	for _, path := range []string{"/healthz", "/metrics", "/status"} {
		resp, err := http.Get("http://" + h.addr + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s: %d", path, resp.StatusCode)
		}
		if path == "/metrics" && !strings.Contains(string(body), "gemba_build_info") {
			t.Errorf("metrics lack build info")
		}
	}
}

func TestPprofOnlyWhenEnabled(t *testing.T) {
	for _, on := range []bool{false, true} {
		h := start(t, strings.Replace(baseConfig, `http: {listen: "127.0.0.1:0"}`, fmt.Sprintf(`http: {listen: "127.0.0.1:0", pprof: %v}`, on), 1))
		resp, err := http.Get("http://" + h.addr + "/debug/pprof/heap?debug=1")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.StatusCode == 200; got != on {
			t.Errorf("pprof %v: status %d", on, resp.StatusCode)
		}
		h.stop(t)
	}
}

// statusUplink asks for the agent's status as soon as it runs, as the heartbeat does.
type statusUplink struct {
	status func() signal.Status
	got    chan signal.Status
}

func (u *statusUplink) Run(ctx context.Context) error {
	u.got <- u.status()
	<-ctx.Done()
	return nil
}
func (u *statusUplink) Ready() (bool, string) { return true, "" }

// TestStatusDuringStartup: the heartbeat (and /status) may read the collectors while the agent is
// still starting them; under -race this fails if they are built while being read.
func TestStatusDuringStartup(t *testing.T) {
	for _, k := range []string{"st1", "st2", "st3"} {
		register(k, &scripted{})
	}
	cfg, err := Parse([]byte(`
agent: {id: a, site: s, shutdown_timeout: 5s}
http: {enabled: false}
collectors:
  - {name: c1, type: scripted, key: st1}
  - {name: c2, type: scripted, key: st2}
  - {name: c3, type: scripted, key: st3}
`), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	up := &statusUplink{got: make(chan signal.Status, 1)}
	a := New(cfg, Options{
		OpenBuffer: func(c buffer.Config, _ buffer.Options) (buffer.Buffer, error) { return buffer.NewMemory(c), nil },
		NewUplink: func(_ uplink.Config, _ uplink.Identity, _ uplink.Source, o uplink.Options) (Uplink, error) {
			up.status = o.Status
			return up, nil
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var st signal.Status
	select {
	case st = <-up.got:
	case err := <-done:
		t.Fatalf("agent stopped: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("uplink never ran")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(st.Collectors) != 3 {
		t.Fatalf("status at startup lists %d collectors, want all 3", len(st.Collectors))
	}
}
