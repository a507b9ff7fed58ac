package quality

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub/state/features"
	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
)

// sink collects events (a fake behind the Sink interface: pure logic, the decision log has its
// own tests).
type sink struct {
	mu  sync.Mutex
	evs []Event
}

func (s *sink) Record(_ context.Context, e Event) error {
	s.mu.Lock()
	s.evs = append(s.evs, e)
	s.mu.Unlock()
	return nil
}

func (s *sink) of(kind, state, key string) []Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Event
	for _, e := range s.evs {
		if e.Kind == kind && (state == "" || e.State == state) && (key == "" || e.Key == key || e.Agent == key) {
			out = append(out, e)
		}
	}
	return out
}

// clock is a settable clock for freshness and gaps.
type clock struct {
	mu sync.Mutex
	d  time.Duration // added to the real time (log timestamps are the server's)
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.d)
}

func (c *clock) skip(d time.Duration) {
	c.mu.Lock()
	c.d += d
	c.mu.Unlock()
}

var defs = features.Definitions{
	{Name: "temp", Signal: "*.oven.temp", Feature: "mean", Key: features.BySignal, MaxAge: 10 * time.Minute},
	{Name: "units", Signal: "*.pack.count", Feature: "units", Key: features.BySKU, MaxAge: time.Hour},
}

func testConfig() Config {
	c := DefaultConfig()
	c.Window, c.ReferenceLag, c.Slices, c.Samples = time.Hour, 2*time.Hour, 4, 128
	c.GapAfter, c.Every = time.Minute, time.Hour // the test calls Check
	return c
}

func jetStream(t *testing.T) jetstream.JetStream {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	return js
}

func open(t *testing.T, js jetstream.JetStream, cfg Config, s Sink, c *clock) *Monitor {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	o := Options{Config: cfg, Definitions: defs, Sink: s}
	if c != nil {
		o.Now = c.now
	}
	m, err := Open(ctx, js, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// agent publishes feature messages of one agent stream with increasing sequences.
type agent struct {
	id, inc string
	seq     uint64
}

func (a *agent) batch(fs ...signal.Feature) *signal.Batch {
	a.seq++
	return &signal.Batch{Header: signal.Header{Schema: 2, Agent: a.id, Site: "s1", Stream: signal.StreamFeatures,
		Incarnation: a.inc, FirstSeq: a.seq, LastSeq: a.seq, Count: len(fs)}, Features: fs}
}

func mean(sig string, end time.Time, v float64) signal.Feature {
	return signal.Feature{Signal: sig, Name: "mean", WindowStart: end.Add(-30 * time.Second), WindowEnd: end, Value: v, Count: 30}
}

func flush(t *testing.T, o *Observer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := o.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

func waitFolded(t *testing.T, m *Monitor, n uint64) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, "the monitor to fold every message", func() bool {
		return m.Stats.Folded.Load()+m.Stats.Duplicates.Load() >= n
	})
}
