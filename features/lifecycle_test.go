package features

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
)

func TestCloseWithoutRunAndTwice(t *testing.T) {
	st := newMemStore()
	e, err := New(parseConfig(t, "features:\n  - {signal: s, window: 10s, compute: [count]}\n"), Options{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	in := []signal.Sample{gauge("s", t0, 1), gauge("other", t0, 2)}
	if out := e.Add(in); len(out) != 2 {
		t.Fatalf("Add after Close forwarded %d of 2 samples", len(out))
	}
	if err := e.Checkpoint(); err == nil {
		t.Fatal("Checkpoint after Close succeeded")
	}
}

func TestRunStopsOnCancelAndTicks(t *testing.T) {
	var mu sync.Mutex
	var got []signal.Feature
	clock := &fakeClock{t: t0}
	e, err := New(parseConfig(t, "features:\n  - {signal: s, window: 1s, idle_timeout: 2s, compute: [count]}\n"), Options{
		Now: clock.Now, TickInterval: 10 * time.Millisecond,
		Emit: func(fs []signal.Feature) { mu.Lock(); got = append(got, fs...); mu.Unlock() },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	e.Add([]signal.Sample{gauge("s", t0, 1)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	clock.Add(5 * time.Second) // the signal is now idle: Run's ticker must close its window
	testutil.WaitFor(t, 5*time.Second, "the idle window closed by Run's ticker", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 1 })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if !got[0].Partial || got[0].Count != 1 {
		t.Fatalf("idle-closed window: %+v", got[0])
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := parseConfig(t, "features:\n  - {signal: s, window: 10s, compute: [count]}\n")
	e, err := New(cfg, Options{Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	bad := gauge("s", t0.Add(2*time.Second), 1)
	bad.Quality = signal.Bad
	e.Add([]signal.Sample{gauge("s", t0.Add(11*time.Second), 1), gauge("s", t0, 1), bad, gauge("s", t0.Add(25*time.Second), 1)})
	for res, want := range map[string]float64{"folded": 2, "late": 2} {
		if got := counterValue(e.m.samplesVec(res)); got != want {
			t.Errorf("samples{result=%s} = %v, want %v", res, got, want)
		}
	}
	if got := counterValue(e.m.emitted); got != 1 {
		t.Errorf("emitted = %v, want 1", got)
	}
	// An engine rebuilt on reload shares the registered collectors.
	e2, err := New(cfg, Options{Metrics: reg})
	if err != nil {
		t.Fatalf("second engine on the same registry: %v", err)
	}
	defer e2.Close()
	e2.Add([]signal.Sample{gauge("s", t0.Add(30*time.Second), 1)})
	if got := counterValue(e.m.samplesVec("folded")); got != 3 {
		t.Errorf("shared samples{result=folded} = %v, want 3", got)
	}
	// A different metric under one of our names is an error, not a panic.
	reg2 := prometheus.NewRegistry()
	reg2.MustRegister(prometheus.NewGauge(prometheus.GaugeOpts{Name: "gemba_features_emitted_total", Help: "x"}))
	if _, err := New(cfg, Options{Metrics: reg2}); err == nil || !strings.Contains(err.Error(), "register metrics") {
		t.Fatalf("conflicting registration: %v", err)
	}
}

func TestCheckpointWriteFailureIsReported(t *testing.T) {
	var logs bytes.Buffer
	st := newMemStore()
	e, err := New(parseConfig(t, "features:\n  - {signal: s, window: 10s, compute: [count]}\n"), Options{
		Store: st, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	e.Add([]signal.Sample{gauge("s", t0, 1)})
	st.fail = errors.New("disk full")
	if err := e.Checkpoint(); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("Checkpoint: %v", err)
	}
	if err := e.Close(); err == nil {
		t.Fatal("Close hid the failed final checkpoint")
	}
	if !strings.Contains(logs.String(), "checkpoint failed") || counterValue(e.m.ckErrors) != 2 {
		t.Fatalf("failure not logged and counted: %s", logs.String())
	}
}

func TestCorruptCheckpointGivesColdStart(t *testing.T) {
	var logs bytes.Buffer
	h := newHarness(t, parseConfig(t, "features:\n  - {signal: s, window: 10s, compute: [count]}\n"))
	h.add(gauge("s", t0, 1))
	_ = h.e.Close()
	h.store.m[CheckpointKey] = []byte("not a checkpoint")
	e, err := New(h.cfg, Options{Store: h.store, Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Emit: func(fs []signal.Feature) { h.out = append(h.out, fs...) }})
	if err != nil {
		t.Fatalf("New on a corrupt checkpoint: %v", err)
	}
	defer e.Close()
	if !strings.Contains(logs.String(), "checkpoint corrupt") {
		t.Fatalf("corruption not logged: %s", logs.String())
	}
	e.Add([]signal.Sample{gauge("s", t0.Add(5*time.Second), 2), gauge("s", t0.Add(10*time.Second), 3)})
	if len(h.out) != 1 || h.out[0].Count != 1 || !h.out[0].Partial {
		t.Fatalf("after a cold start want one partial window of 1 sample, got %+v", h.out)
	}
}

func TestChangedRuleDiscardsCheckpointedSeries(t *testing.T) {
	var logs bytes.Buffer
	h := newHarness(t, parseConfig(t, "features:\n  - {signal: s, window: 10s, compute: [count]}\n"))
	h.add(gauge("s", t0, 1))
	_ = h.e.Close()
	cfg := parseConfig(t, "features:\n  - {signal: s, window: 20s, compute: [count]}\n")
	e, err := New(cfg, Options{Store: h.store, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if !strings.Contains(logs.String(), "checkpoint series discarded") || !strings.Contains(logs.String(), "signals=s") {
		t.Fatalf("discard not logged: %s", logs.String())
	}
	if st := e.Stats(); st.Series != 1 {
		t.Fatalf("series = %d", st.Series)
	}
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}
