package features

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gemba-io/gemba/config"
	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
)

// A counter grouped by another signal whose series is dropped no longer holds back the pruning of
// the group-by track (its windows stopped closing when it was dropped).
func TestDroppedGroupedSeriesReleaseTrack(t *testing.T) {
	h := newHarness(t, parseConfig(t, `
features:
  - {signal: "job.*.parts", kind: counter, window: 10m, compute: [delta], by: line.sku, retention: 1h}
`))
	h.add(cnt("job.1.parts", h.clock.Now(), 1))
	for i := range 600 {
		h.clock.Add(time.Minute)
		h.add(signal.Sample{Signal: "line.sku", Time: h.clock.Now(), Value: signal.String(fmt.Sprint("sku", i%2))})
		h.e.Tick()
	}
	if got := h.e.Stats().Series; got != 0 {
		t.Fatalf("series = %d, want 0", got)
	}
	if n := len(h.e.entries["line.sku"].t.Pts); n > 20 {
		t.Fatalf("group-by track holds %d points after its only counter was dropped", n)
	}
}

// Beyond Options.MaxSeries no series is created: the samples of the signals refused are forwarded
// raw and counted (result series_limit), and a WARN names one of them and the cap, at most once a
// minute. A series dropped after its retention makes room again.
func TestSeriesCap(t *testing.T) {
	var logs testutil.Buffer
	clock := &fakeClock{t: t0}
	reg := prometheus.NewRegistry()
	e, err := New(parseConfig(t, `
features:
  - {signal: "m.*", window: 1m, compute: [count], forward_raw: false, retention: 2h}
`), Options{
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Now:    clock.Now, CheckpointInterval: time.Hour, MaxSeries: 10, Metrics: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	feed := func(from, to int) int {
		var ss []signal.Sample
		for i := from; i < to; i++ {
			ss = append(ss, gauge(fmt.Sprint("m.", i), clock.Now(), 1))
		}
		return len(e.Add(ss))
	}
	warned := func() int { return strings.Count(logs.String(), "feature series limit") }
	if fwd := feed(0, 15); fwd != 5 {
		t.Fatalf("%d samples forwarded raw, want the 5 of the refused signals", fwd)
	}
	if got := e.Stats().Series; got != 10 {
		t.Fatalf("series = %d, want the cap 10", got)
	}
	if got := counterValue(e.m.samplesVec("series_limit")); got != 5 {
		t.Fatalf("samples{result=series_limit} = %v, want 5", got)
	}
	if n := warned(); n != 1 || !strings.Contains(logs.String(), "signal=m.10") || !strings.Contains(logs.String(), "max_series=10") {
		t.Fatalf("%d warnings, want 1 naming a signal and the cap:\n%s", n, logs.String())
	}
	clock.Add(30 * time.Second)
	feed(10, 20)
	if n := warned(); n != 1 {
		t.Fatalf("%d warnings within a minute, want 1", n)
	}
	if got := counterValue(e.m.samplesVec("series_limit")); got != 15 {
		t.Fatalf("samples{result=series_limit} = %v, want 15", got)
	}
	clock.Add(31 * time.Second)
	feed(10, 11)
	if n := warned(); n != 2 {
		t.Fatalf("%d warnings after a minute, want 2", n)
	}
	// The 10 series fall silent past their retention and are dropped: the refused signals fit.
	clock.Add(3 * time.Hour)
	e.Tick()
	if got := e.Stats().Series; got != 0 {
		t.Fatalf("series = %d after the retention, want 0", got)
	}
	if fwd := feed(10, 15); fwd != 0 {
		t.Fatalf("%d samples forwarded raw after room was made, want 0 (folded)", fwd)
	}
	if got := e.Stats().Series; got != 5 {
		t.Fatalf("series = %d, want 5", got)
	}
}

func TestRetentionValidate(t *testing.T) {
	for _, c := range []struct{ rule, want string }{
		{"{signal: s, window: 1h, allowed_lateness: 10m, compute: [count], retention: 1h}", "retention"},
		{"{signal: s, window: 1m, idle_timeout: 2h, compute: [count], retention: 1h}", "retention"},
		{"{signal: s, window: 1h, compute: [count], retention: 2h}", ""},
		{"{signal: s, window: 1h, compute: [count], retention: -1s}", ""},
	} {
		var doc agentDoc
		got := ""
		if err := config.NewDecoder().Unmarshal([]byte("features:\n  - "+c.rule+"\n"), &doc); err != nil {
			got = err.Error()
		}
		if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
			t.Errorf("%s: %q, want an error on %q", c.rule, got, c.want)
		}
	}
	r := compile(&parseConfig(t, "features:\n  - {signal: s, window: 1m, compute: [count]}\n")[0])
	if r.retention != 168*time.Hour {
		t.Errorf("default retention %s, want 168h", r.retention)
	}
	r = compile(&parseConfig(t, "features:\n  - {signal: s, window: 240h, compute: [count]}\n")[0])
	if r.retention != 480*time.Hour {
		t.Errorf("default retention of a 240h window %s, want 480h", r.retention)
	}
}

// A restart with a lower Options.MaxSeries than the checkpoint holds keeps the most recently
// updated series (ties by signal name), not whichever the checkpoint map yields first: two agents
// with the same config and data keep the same series, and a busy one is never dropped for a dead one.
func TestSeriesCapRestoreKeepsRecent(t *testing.T) {
	store := newMemStore()
	clock := &fakeClock{t: t0}
	cfg := parseConfig(t, `
features:
  - {signal: "m.*", window: 1m, compute: [count], forward_raw: false}
`)
	start := func(maxSeries int) *Engine {
		t.Helper()
		e, err := New(cfg, Options{Now: clock.Now, Store: store, CheckpointInterval: time.Hour, MaxSeries: maxSeries})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	e := start(20)
	// m.00..m.19 once; then m.10..m.19 again a minute later, and m.05 last of all.
	for i := range 20 {
		e.Add([]signal.Sample{gauge(fmt.Sprintf("m.%02d", i), clock.Now(), 1)})
	}
	clock.Add(time.Minute)
	for i := 10; i < 20; i++ {
		e.Add([]signal.Sample{gauge(fmt.Sprintf("m.%02d", i), clock.Now(), 2)})
	}
	clock.Add(time.Second)
	e.Add([]signal.Sample{gauge("m.05", clock.Now(), 3)})
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	held := func(e *Engine) []string {
		e.mu.Lock()
		defer e.mu.Unlock()
		var out []string
		for _, s := range e.series {
			out = append(out, s.sig)
		}
		slices.Sort(out)
		return out
	}
	for _, c := range []struct {
		max  int
		want []string
	}{
		{1, []string{"m.05"}},
		{6, []string{"m.05", "m.10", "m.11", "m.12", "m.13", "m.14"}},
		{13, []string{"m.00", "m.01", "m.05", "m.10", "m.11", "m.12", "m.13", "m.14", "m.15", "m.16", "m.17", "m.18", "m.19"}},
	} {
		for range 5 { // map order differs between runs: the same checkpoint keeps the same series
			saved := append([]byte(nil), store.m[CheckpointKey]...)
			e := start(c.max)
			got := held(e)
			_ = e.Close()
			store.m[CheckpointKey] = saved
			if !slices.Equal(got, c.want) {
				t.Fatalf("max %d: kept %v, want %v", c.max, got, c.want)
			}
		}
	}
}

// A restart that discards many series says so once per reason, with a count and a few of them: a
// cap lowered from 100,000 to 10,000 printed 90,000 lines.
func TestSeriesCapDiscardsLoggedOnce(t *testing.T) {
	store := newMemStore()
	cfg := parseConfig(t, `
features:
  - {signal: "m.*", window: 1m, compute: [count], forward_raw: false}
`)
	e, err := New(cfg, Options{Now: (&fakeClock{t: t0}).Now, Store: store, CheckpointInterval: time.Hour, MaxSeries: 50})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		e.Add([]signal.Sample{gauge(fmt.Sprintf("m.%02d", i), t0, 1)})
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	var logs testutil.Buffer
	e, err = New(cfg, Options{Now: (&fakeClock{t: t0}).Now, Store: store, CheckpointInterval: time.Hour, MaxSeries: 10,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	out := logs.String()
	if n := strings.Count(out, "series limit reached"); n != 1 || !strings.Contains(out, "series=40") || !strings.Contains(out, "max_series=10") {
		t.Fatalf("want one WARN for 40 series discarded at max_series=10, got %d:\n%s", n, out)
	}
}
