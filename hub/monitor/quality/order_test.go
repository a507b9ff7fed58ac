package quality

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/gemba-io/gemba/internal/testutil"
)

// blockGapBreach is a log handler that holds the goroutine logging a gap breach until released:
// the moment between the clock's check raising the breach and handing it on.
type blockGapBreach struct {
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func (h *blockGapBreach) Enabled(context.Context, slog.Level) bool { return true }
func (h *blockGapBreach) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *blockGapBreach) WithGroup(string) slog.Handler            { return h }
func (h *blockGapBreach) Handle(_ context.Context, r slog.Record) error {
	var kind, state string
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "kind":
			kind = a.Value.String()
		case "state":
			state = a.Value.String()
		}
		return true
	})
	if kind == KindGap && state == StateBreach {
		h.once.Do(func() { close(h.entered); <-h.release })
	}
	return nil
}

// A gap's breach is raised by the clock's check and its recovery by the fold of the late copy, on
// two goroutines: the decision log must get them in the order they happened, or its last word on
// the stream is "gap open" for a gap that is closed.
func TestGapEventsInOrder(t *testing.T) {
	js := jetStream(t)
	s, c := &sink{}, &clock{}
	h := &blockGapBreach{entered: make(chan struct{}), release: make(chan struct{})}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := Open(ctx, js, Options{Config: testConfig(), Definitions: defs, Sink: s, Logger: slog.New(h), Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	obs := m.Observer()
	a := &agent{id: "a12", inc: "i1"}
	now := time.Now().UTC()
	obs.Observe(a.batch(mean("line12.oven.temp", now, 10)))
	late := a.batch(mean("line12.oven.temp", now.Add(time.Second), 10))
	obs.Observe(a.batch(mean("line12.oven.temp", now.Add(2*time.Second), 10)))
	flush(t, obs)
	waitFolded(t, m, 2)
	c.skip(2 * time.Minute)
	checked := make(chan struct{})
	go func() { m.Check(); close(checked) }()
	<-h.entered // the breach is raised, not yet handed on
	obs.Observe(late)
	flush(t, obs)
	waitFolded(t, m, 3)
	testutil.WaitFor(t, 5*time.Second, "the fold to raise the recovery", func() bool { return m.Stats.Events.Load() == 2 })
	close(h.release)
	<-checked
	testutil.WaitFor(t, 5*time.Second, "both events recorded", func() bool { return len(s.of(KindGap, "", "a12")) == 2 })
	if evs := s.of(KindGap, "", "a12"); evs[0].State != StateBreach {
		t.Errorf("the decision log got the gap's %s before its %s", evs[0].State, evs[1].State)
	}
}
