package features

import (
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gemba-io/gemba/config"
	"github.com/gemba-io/gemba/signal"
)

// memStore is the in-memory Store of the tests.
type memStore struct {
	mu   sync.Mutex
	m    map[string][]byte
	fail error
}

func newMemStore() *memStore { return &memStore{m: map[string][]byte{}} }

func (s *memStore) GetMeta(key string) ([]byte, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[key]
	return append([]byte(nil), v...), ok, nil
}

func (s *memStore) PutMeta(key string, value []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	s.m[key] = append([]byte(nil), value...)
	return nil
}

// fakeClock is a settable wall clock with the machine's boot clock beside it: Set and Add are time
// passing (both move), Step sets the wall clock alone (NTP's step), Reboot starts another boot.
type fakeClock struct {
	mu    sync.Mutex
	t     time.Time
	boot  string
	since time.Duration
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.since += t.Sub(c.t)
	c.t = t
	c.mu.Unlock()
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.since += d
	c.mu.Unlock()
}

// Step sets the wall clock by d without time passing.
func (c *fakeClock) Step(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// Reboot starts a new boot that has been up for up, the wall clock at wall.
func (c *fakeClock) Reboot(wall time.Time, up time.Duration) {
	c.mu.Lock()
	c.boot += "+"
	c.t, c.since = wall, up
	c.mu.Unlock()
}

// Boot is the boot's id and the time since it.
func (c *fakeClock) Boot() (string, time.Duration, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.boot, c.since, c.boot != ""
}

type agentDoc struct {
	Features Config `yaml:"features"`
}

// parseConfig decodes a features section with the project's strict decoder.
func parseConfig(t testing.TB, yml string) Config {
	t.Helper()
	var doc agentDoc
	if err := config.NewDecoder().Unmarshal([]byte(yml), &doc); err != nil {
		t.Fatalf("config: %v", err)
	}
	return doc.Features
}

// harness runs an engine with a fake clock and an in-memory store and collects what it emits.
type harness struct {
	t      testing.TB
	cfg    Config
	bounds TimeBounds
	live   func(source string) bool
	clock  *fakeClock
	store  *memStore
	mono   bool // the engine's times carry the boot's clock as their monotonic reading (monoClock)
	e      *Engine
	mu     sync.Mutex
	out    []signal.Feature
	fwd    int
}

func newHarness(t testing.TB, cfg Config) *harness {
	h := &harness{t: t, cfg: cfg, clock: &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), boot: "boot", since: time.Hour}, store: newMemStore()}
	h.start()
	return h
}

func (h *harness) start() {
	h.t.Helper()
	now := h.clock.Now
	if h.mono {
		now = monoClock(h.t, h.clock)
	}
	e, err := New(h.cfg, Options{
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Store:  h.store, Now: now, Boot: h.clock.Boot, CheckpointInterval: time.Hour, Bounds: h.bounds, Live: h.live,
		Emit: func(fs []signal.Feature) {
			h.mu.Lock()
			h.out = append(h.out, fs...)
			h.mu.Unlock()
		},
	})
	if err != nil {
		h.t.Fatalf("New: %v", err)
	}
	h.e = e
}

func (h *harness) add(ss ...signal.Sample) {
	h.fwd += len(h.e.Add(ss))
}

// restart stops the engine cleanly (Close) or as a crash (dropped without Close) and starts a new
// one on the same store.
func (h *harness) restart(clean bool) {
	h.t.Helper()
	h.restartAfter(clean, 0)
}

// restartAfter is restart with the wall clock moving on by down between the stop and the start.
func (h *harness) restartAfter(clean bool, down time.Duration) {
	h.t.Helper()
	if clean {
		if err := h.e.Close(); err != nil {
			h.t.Fatalf("Close: %v", err)
		}
	}
	h.clock.Add(down)
	h.start()
}

func (h *harness) features() []signal.Feature {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]signal.Feature(nil), h.out...)
}

func gauge(sig string, ts time.Time, v float64) signal.Sample {
	return signal.Sample{Signal: sig, Time: ts, Value: signal.Float(v)}
}

func featureKey(f signal.Feature) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s %s", f.WindowEnd.Format(time.RFC3339Nano), f.WindowStart.Format(time.RFC3339Nano), f.Signal, f.Name)
	for _, l := range f.Labels {
		fmt.Fprintf(&b, " %s=%s", l.Key, l.Value)
	}
	return b.String()
}

func sortFeatures(fs []signal.Feature) {
	keys := make([]string, len(fs))
	idx := make([]int, len(fs))
	for i := range fs {
		keys[i], idx[i] = featureKey(fs[i]), i
	}
	sort.SliceStable(idx, func(a, b int) bool { return keys[idx[a]] < keys[idx[b]] })
	sorted := make([]signal.Feature, len(fs))
	for i, j := range idx {
		sorted[i] = fs[j]
	}
	copy(fs, sorted)
}
