package features

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
)

// heldPoints returns the points the engine holds for sig (its series, or its group-by track).
func heldPoints(h *harness, sig string) int {
	h.e.mu.Lock()
	defer h.e.mu.Unlock()
	en := h.e.entries[sig]
	if en == nil {
		return 0
	}
	if en.s != nil {
		return len(en.s.Pts)
	}
	return len(en.t.Pts)
}

// TestFrozenSourceClockBounded: a counter and a state signal whose source time never moves (a PLC
// whose clock stopped, an OPC UA server stamping every value with one SourceTimestamp) held every
// sample until the clock moved on: memory grew without bound. Samples of one time are taken in
// arrival order, and what they add up to (increments, resets, transitions, n, bad_count) is
// exactly what the documented semantics give for N separate samples.
func TestFrozenSourceClockBounded(t *testing.T) {
	h := newHarness(t, parseConfig(t, `
features:
  - {signal: parts, kind: counter, window: 10s, compute: [delta, rate, resets], counter_max: 999}
  - {signal: st, kind: state, window: 10s, compute: [time_in_state, transitions, availability], states: {running: [run]}}
`))
	defer h.e.Close()
	const n = 20000
	frozen := sec(3)
	var (
		delta, good, bad, resets int64
		prev                     int64 = -1
		trans, sgood, sbad       int64
		last                     string
	)
	for i := range n {
		v := int64(i*7) % 1000 // rolls over past counter_max now and then
		if i%5000 == 4999 {
			v = 3 // a device reset: from a low value (not a rollover)
		}
		q := signal.Good
		if i%97 == 13 {
			q = signal.Bad
		}
		h.add(signal.Sample{Signal: "parts", Time: frozen, Value: signal.Int(v), Quality: q})
		if q == signal.Bad {
			bad++
		} else {
			good++
			if prev >= 0 {
				inc, reset := increment(float64(prev), float64(v), 999)
				delta += int64(inc)
				if reset {
					resets++
				}
			}
			prev = v
		}
		st := []string{"run", "run", "idle", "down"}[i%4]
		if i%89 == 5 {
			h.add(signal.Sample{Signal: "st", Time: frozen, Value: signal.String(st), Quality: signal.Bad})
			sbad++
			continue
		}
		h.add(signal.Sample{Signal: "st", Time: frozen, Value: signal.String(st)})
		sgood++
		if last != "" && st != last {
			trans++
		}
		last = st
	}
	for _, sig := range []string{"parts", "st"} {
		if got := heldPoints(h, sig); got > 4 {
			t.Errorf("%s: %d points held for %d samples with one source time, want a constant", sig, got, n)
		}
	}
	if len(h.features()) != 0 {
		t.Fatalf("records before the source clock moved: %+v", h.features())
	}
	// The clock moves again: [0,10) closes.
	h.add(signal.Sample{Signal: "parts", Time: sec(25), Value: signal.Int(prev)},
		signal.Sample{Signal: "st", Time: sec(25), Value: signal.String(last)})
	fs := h.features()
	want := map[string]float64{"delta": float64(delta), "rate": float64(delta) / 10, "resets": float64(resets), "bad_count": float64(bad)}
	for name, v := range want {
		f := one(t, fs, "parts", name, 0)
		wn := good
		if name == "bad_count" {
			wn = bad
		}
		if f.Value != v || f.Count != wn || !f.Partial {
			t.Errorf("parts %s [0,10): v=%v n=%d partial=%v, want v=%v n=%d partial (first sample at 3 s)", name, f.Value, f.Count, f.Partial, v, wn)
		}
	}
	if f := one(t, fs, "st", "transitions", 0); f.Value != float64(trans) || f.Count != sgood {
		t.Errorf("st transitions [0,10): v=%v n=%d, want %d n=%d", f.Value, f.Count, trans, sgood)
	}
	if f := one(t, fs, "st", "bad_count", 0); f.Value != float64(sbad) {
		t.Errorf("st bad_count [0,10): %v, want %d", f.Value, sbad)
	}
	// The samples of one time last 0 s: the last state holds from 3 s to the window's end.
	var tis []string
	for _, f := range find(fs, "st", "time_in_state", 0) {
		st, _ := f.Labels.Get("state")
		tis = append(tis, fmt.Sprintf("%s=%g", st, f.Value))
	}
	if wantTIS := []string{last + "=7"}; !slices.Equal(tis, wantTIS) {
		t.Errorf("st time_in_state [0,10): %v, want %v", tis, wantTIS)
	}
	if f := one(t, fs, "st", "availability", 0); f.Value != map[string]float64{"run": 1, "idle": 0, "down": 0}[last] {
		t.Errorf("st availability [0,10): %v (last state %s)", f.Value, last)
	}
}

// TestFrozenGroupByClockBounded: a group-by signal (the SKU) from the same frozen source changes
// value at one source time: only the last value of a time is ever looked up, but every change was
// kept while the counter's window stayed open.
func TestFrozenGroupByClockBounded(t *testing.T) {
	h := newHarness(t, parseConfig(t, `
features:
  - {signal: parts, kind: counter, window: 10s, compute: [delta], by: sku}
`))
	defer h.e.Close()
	const n = 20000
	frozen := sec(3)
	for i := range n {
		h.add(signal.Sample{Signal: "sku", Time: frozen, Value: signal.String([]string{"A", "B", "C"}[i%3])},
			signal.Sample{Signal: "parts", Time: frozen, Value: signal.Int(int64(i))})
	}
	if got := heldPoints(h, "sku"); got > 4 {
		t.Errorf("sku: %d points held for %d changes with one source time, want a constant", got, n)
	}
	h.add(signal.Sample{Signal: "parts", Time: sec(25), Value: signal.Int(n - 1)})
	f := one(t, h.features(), "parts", "delta", 0)
	if sku, _ := f.Labels.Get("sku"); sku != []string{"A", "B", "C"}[(n-1)%3] || f.Value != n-1 || f.Count != n {
		t.Fatalf("[0,10): %+v, want delta %d n %d for the SKU last set at 3 s", f, n-1, n)
	}
}

// withFrozenRuns turns some counter, state and SKU samples of a reference stream into runs of
// samples with the same source time (values changing, Bad ones among them), some out of order.
func withFrozenRuns(rng *rand.Rand, ss []signal.Sample) []signal.Sample {
	flush := len(ss) - 4 // the flush samples stay last
	out := make([]signal.Sample, 0, 2*len(ss))
	states := []string{"run", "idle", "down"}
	for i, s := range ss {
		out = append(out, s)
		if i >= flush || s.Signal == "a.temp" || s.Signal == "b.temp" || rng.IntN(4) != 0 {
			continue
		}
		c, _ := s.Value.Number()
		for range 1 + rng.IntN(6) {
			x := s
			x.Quality = signal.Good
			if rng.IntN(5) == 0 {
				x.Quality = signal.Bad
			}
			switch s.Signal {
			case "sku": // group-by values: a changing SKU of one time (the reference ignores quality)
				x.Quality = signal.Good
				x.Value = signal.String(string(rune('A' + rng.IntN(3))))
			case "parts":
				if rng.IntN(6) == 0 {
					c = float64(rng.IntN(3))
				} else {
					c += float64(rng.IntN(4))
				}
				x.Value = signal.Int(int64(c))
			default:
				x.Value = signal.String(states[rng.IntN(3)])
			}
			out = append(out, x)
		}
	}
	out = append(out, ss[flush:]...)
	// out of order within the lateness: now and then swap neighbours less than 1 s apart, so a
	// sample arrives after a run it precedes, or a run's sample after a later one
	for i := 1; i < flush; i++ {
		if rng.IntN(6) == 0 && out[i].Time.Sub(out[i-1].Time) < time.Second {
			out[i], out[i-1] = out[i-1], out[i]
			i++
		}
	}
	return out
}

// TestPropertyFrozenRunsMatchReference: streams in which counter and state samples come in runs
// of one source time (as from a source whose clock stops now and then) give exactly the
// reference's records, which keeps every sample, with and without clean restarts between batches
// (the runs go through checkpoints).
func TestPropertyFrozenRunsMatchReference(t *testing.T) {
	cfg := parseConfig(t, refCfg)
	for seed := range uint64(10) {
		rng := rand.New(rand.NewPCG(seed, 31))
		ss := withFrozenRuns(rng, refStream(rng))
		restarts := map[int]bool{}
		h := newHarness(t, cfg)
		for i := 0; i < len(ss); {
			n := min(len(ss)-i, 1+rng.IntN(25))
			h.add(slices.Clone(ss[i : i+n])...)
			i += n
			if seed%2 == 1 && i < len(ss) && rng.IntN(10) == 0 {
				h.restart(true)
				restarts[i] = true
			}
		}
		got := h.features()
		want := reference(t, cfg, ss)
		sortFeatures(got)
		sortFeatures(want)
		diffFeatures(t, fmt.Sprintf("seed %d (%d restarts)", seed, len(restarts)), got, want)
		_ = h.e.Close()
	}
}

// TestRepeatedTimesReleaseRuns: a source that sends every value twice with one time (a server
// resending on each publish) keeps one point per time, and what the windows have closed on is
// released: runs do not accumulate.
func TestRepeatedTimesReleaseRuns(t *testing.T) {
	h := newHarness(t, parseConfig(t, `
features:
  - {signal: parts, kind: counter, window: 10s, compute: [delta, resets]}
  - {signal: st, kind: state, window: 10s, compute: [transitions]}
`))
	defer h.e.Close()
	for i := range 1000 {
		at := sec(float64(i))
		for _, v := range []int64{int64(2 * i), int64(2*i + 1)} {
			h.add(signal.Sample{Signal: "parts", Time: at, Value: signal.Int(v)},
				signal.Sample{Signal: "st", Time: at, Value: signal.String([]string{"run", "idle"}[v%2])})
		}
	}
	h.e.mu.Lock()
	for _, sig := range []string{"parts", "st"} {
		s := h.e.entries[sig].s
		if len(s.Pts) > 12 || len(s.Runs) > 12 {
			t.Errorf("%s: %d points, %d runs held with 10 s windows of one sample time a second", sig, len(s.Pts), len(s.Runs))
		}
	}
	h.e.mu.Unlock()
	fs := h.features()
	// [500,510): samples at 500..509 with values 1000..1019: delta 20 (19 within, 1 from 999),
	// n 20; states run,idle at each second: transitions 20.
	if f := one(t, fs, "parts", "delta", 500); f.Value != 20 || f.Count != 20 {
		t.Errorf("parts delta [500,510): v=%v n=%d, want 20 n=20", f.Value, f.Count)
	}
	if f := one(t, fs, "st", "transitions", 500); f.Value != 20 || f.Count != 20 {
		t.Errorf("st transitions [500,510): v=%v n=%d, want 20 n=20", f.Value, f.Count)
	}
}

// TestGroupByTrackBoundedWhileCounterQuiet: a counter that reports by exception sends nothing
// while its machine stands (its windows go on, delta 0), but the group-by signal it shares with
// other machines (the line's SKU) keeps changing. The track kept every change since the quiet
// counter's last sample, although its windows only look values up from the first open window on.
func TestGroupByTrackBoundedWhileCounterQuiet(t *testing.T) {
	h := newHarness(t, parseConfig(t, `
features:
  - {signal: parts, kind: counter, window: 10s, compute: [delta], by: sku}
`))
	defer h.e.Close()
	h.clock.Set(sec(1))
	h.add(signal.Sample{Signal: "sku", Time: sec(0.5), Value: signal.String("A")}, counterAt(1, 5))
	const changes = 5000
	for i := 1; i <= changes; i++ {
		h.clock.Set(sec(float64(i)))
		h.add(signal.Sample{Signal: "sku", Time: sec(float64(i)), Value: signal.String([]string{"A", "B"}[i%2])})
		if i%5 == 0 {
			h.e.Tick()
		}
	}
	if got := heldPoints(h, "sku"); got > 100 {
		t.Errorf("sku: %d points held after %d changes while the counter was quiet", got, changes)
	}
	// The quiet windows carry the SKU in force at their end; the counter moves again at 5001.5 s.
	h.clock.Set(sec(5030))
	h.add(counterAt(5001.5, 9), counterAt(5030, 9))
	fs := h.features()
	f := one(t, fs, "parts", "delta", 5000)
	if sku, _ := f.Labels.Get("sku"); f.Value != 4 || sku != []string{"A", "B"}[changes%2] {
		t.Fatalf("[5000,5010): %+v, want delta 4 for the SKU set at 5000 s", f)
	}
	if f := one(t, fs, "parts", "delta", 4980); f.Value != 0 || f.Count != 0 || f.Partial {
		t.Fatalf("[4980,4990): %+v, want delta 0, n 0, not partial", f)
	}
}

// A source whose clock stopped produces no feature at all (no window closes until its time moves):
// once its watermark has stood still for frozenWarnAt samples in a row, a WARN names the signal,
// once per standstill.
func TestFrozenSourceClockWarned(t *testing.T) {
	var logs testutil.Buffer
	e, err := New(parseConfig(t, "features:\n  - {signal: g, window: 10s, compute: [mean]}\n"), Options{
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Now:    func() time.Time { return sec(100) }, CheckpointInterval: time.Hour, Emit: func([]signal.Feature) {},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	feed := func(at time.Time, n int) {
		for i := range n {
			e.Add([]signal.Sample{{Signal: "g", Time: at, Value: signal.Float(float64(i)), Quality: signal.Good}})
		}
	}
	warned := func() int { return strings.Count(logs.String(), "source time not advancing") }
	feed(sec(3), frozenWarnAt-1)
	if n := warned(); n != 0 {
		t.Fatalf("%d warnings before %d samples of one time", n, frozenWarnAt)
	}
	feed(sec(3), 2*frozenWarnAt)
	if n := warned(); n != 1 || !strings.Contains(logs.String(), "signal=g") {
		t.Fatalf("%d warnings after a standstill, want 1 naming the signal:\n%s", n, logs.String())
	}
	feed(sec(4), 1) // the clock moves: a later standstill is warned again
	feed(sec(5), frozenWarnAt+1)
	if n := warned(); n != 2 {
		t.Fatalf("%d warnings after a second standstill, want 2", n)
	}
}
