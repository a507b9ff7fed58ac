package features

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/gemba-io/gemba/signal"
)

// Tests for issue 19, one per point; each failed on the code before its fix.

func sec(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

func badSample(sig string, ts time.Time) signal.Sample {
	return signal.Sample{Signal: sig, Time: ts, Quality: signal.Bad}
}

// find returns the records named name of the window starting at start (seconds after t0).
func find(fs []signal.Feature, sig, name string, start float64) []signal.Feature {
	var out []signal.Feature
	for _, f := range fs {
		if f.Signal == sig && f.Name == name && f.WindowStart.Equal(sec(start)) {
			out = append(out, f)
		}
	}
	return out
}

func one(t *testing.T, fs []signal.Feature, sig, name string, start float64) signal.Feature {
	t.Helper()
	got := find(fs, sig, name, start)
	if len(got) != 1 {
		t.Fatalf("%s %s window %gs: %d records, want 1 (all: %+v)", sig, name, start, len(got), fs)
	}
	return got[0]
}

// Point 1: a Bad sample anywhere, right after the window included, neither drops nor shortens the
// held value: twa of [0,10) is 10 held 5 s then 20 held 5 s = 15 wherever the Bad sample sits.
func TestTWABadSampleAtEveryPosition(t *testing.T) {
	cases := map[string][]signal.Sample{
		"first":        {gauge("g", sec(-2), 10), badSample("g", sec(0)), gauge("g", sec(5), 20), gauge("g", sec(10), 0)},
		"middle":       {gauge("g", sec(0), 10), badSample("g", sec(3)), gauge("g", sec(5), 20), gauge("g", sec(10), 0)},
		"last":         {gauge("g", sec(0), 10), gauge("g", sec(5), 20), badSample("g", sec(9)), gauge("g", sec(10), 0)},
		"after window": {gauge("g", sec(0), 10), gauge("g", sec(5), 20), badSample("g", sec(10))},
	}
	for name, ss := range cases {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, parseConfig(t, `
features:
  - {signal: g, window: 10s, compute: [twa, mean]}
`))
			defer h.e.Close()
			for _, s := range ss {
				h.add(s)
			}
			f := one(t, h.features(), "g", "twa", 0)
			if math.Abs(f.Value-15) > 1e-9 || f.Partial {
				t.Fatalf("twa = %v partial=%v, want 15 not partial", f.Value, f.Partial)
			}
		})
	}
}

// Point 2: after a restart (clean or crash) a quiet state signal keeps its window cadence: the idle
// clock continues from the checkpoint instead of starting again at the restart.
func TestIdleClockSurvivesRestart(t *testing.T) {
	for _, clean := range []bool{true, false} {
		h := newHarness(t, parseConfig(t, `
features:
  - {signal: st, kind: state, window: 10s, compute: [time_in_state]}
`))
		h.clock.Set(sec(1))
		h.add(signal.Sample{Signal: "st", Time: sec(1), Value: signal.String("stopped")})
		h.clock.Set(sec(30.5))
		h.e.Tick()
		if got := len(find(h.features(), "st", "time_in_state", 20)); got != 1 {
			t.Fatalf("before restart: window [20,30) has %d records, want 1", got)
		}
		if !clean {
			if err := h.e.Checkpoint(); err != nil {
				t.Fatal(err)
			}
		}
		h.restart(clean)
		h.clock.Set(sec(40.5))
		h.e.Tick()
		f := find(h.features(), "st", "time_in_state", 30)
		if len(f) != 1 || f[0].Value != 10 {
			t.Fatalf("clean=%v: window [30,40) 10 s after the restart: %+v, want one record of 10 s", clean, f)
		}
		_ = h.e.Close()
	}
}

// Point 4: a state change exactly at a window start gives the previous state no record in that
// window (it held there for 0 s), and counts as a transition of that window.
func TestStateChangeOnWindowStartNoPhantom(t *testing.T) {
	h := newHarness(t, parseConfig(t, `
features:
  - {signal: st, kind: state, window: 10s, compute: [time_in_state, transitions]}
`))
	defer h.e.Close()
	h.add(signal.Sample{Signal: "st", Time: sec(2), Value: signal.String("running")})
	h.add(signal.Sample{Signal: "st", Time: sec(10), Value: signal.String("stopped")})
	h.add(signal.Sample{Signal: "st", Time: sec(25), Value: signal.String("stopped")})
	got := find(h.features(), "st", "time_in_state", 10)
	if len(got) != 1 || got[0].Value != 10 {
		t.Fatalf("window [10,20): %+v, want only stopped=10s", got)
	}
	if st, _ := got[0].Labels.Get("state"); st != "stopped" {
		t.Fatalf("window [10,20): state %q, want stopped", st)
	}
	if tr := one(t, h.features(), "st", "transitions", 10); tr.Value != 1 {
		t.Fatalf("transitions [10,20) = %v, want 1", tr.Value)
	}
}

// refType7 is Hyndman–Fan type 7 (R's and numpy's default): linear interpolation between the order
// statistics around rank q·(n−1).
func refType7(vals []float64, q float64) float64 {
	s := slices.Clone(vals)
	slices.Sort(s)
	h := q * float64(len(s)-1)
	lo := math.Floor(h)
	i := int(lo)
	if i+1 >= len(s) {
		return s[len(s)-1]
	}
	return s[i] + (h-lo)*(s[i+1]-s[i])
}

// Point 5: percentiles are Hyndman–Fan type 7, exact while a window holds at most exactCap samples
// per pane (here 20 and, sliding, 3×20), and within the sketch's accuracy beyond.
func TestPercentilesType7(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 19))
	for _, cfg := range []string{"window: 10s", "window: 30s, hop: 10s"} {
		h := newHarness(t, parseConfig(t, `
features:
  - {signal: g, `+cfg+`, compute: [p50, p90, p95, p99]}
`))
		var vals []float64
		for i := range 60 {
			v := 20 + 10*rng.Float64()
			vals = append(vals, v)
			h.add(gauge("g", sec(float64(i)/2), v))
		}
		h.add(gauge("g", sec(100), 0))
		start := 0.0
		if cfg != "window: 10s" {
			start = 0 // window [0,30) covers every sample
		}
		win := vals[:20]
		if cfg != "window: 10s" {
			win = vals
			start = 0
		}
		for _, q := range []float64{0.5, 0.9, 0.95, 0.99} {
			name := map[float64]string{0.5: "p50", 0.9: "p90", 0.95: "p95", 0.99: "p99"}[q]
			f := one(t, h.features(), "g", name, start)
			if want := refType7(win, q); math.Abs(f.Value-want) > 1e-9 {
				t.Errorf("%s %s = %v, want type 7 %v", cfg, name, f.Value, want)
			}
		}
		_ = h.e.Close()
	}
}

// Point 5, beyond the bound: a window with more values than exactBudget keeps the memory bound and
// applies type 7 to the sketch's order statistics, within its 1% relative accuracy, negative values
// included.
func TestPercentilesBeyondBound(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 19))
	h := newHarness(t, parseConfig(t, `
features:
  - {signal: g, window: 10s, compute: [p50, p90, p99, count]}
`))
	defer h.e.Close()
	var vals []float64
	n := exactBudget + 500
	for i := range n {
		v := -50 + 20*rng.NormFloat64()
		vals = append(vals, v)
		h.add(gauge("g", t0.Add(time.Duration(i)*(10*time.Second)/time.Duration(n)), v))
	}
	if pn := h.e.series[0].panes[0]; !pn.Over || len(pn.Vals) != 0 {
		t.Fatalf("pane over the bound keeps %d values (over=%v), want none", len(pn.Vals), pn.Over)
	}
	h.add(gauge("g", sec(100), 0))
	for _, q := range []float64{0.5, 0.9, 0.99} {
		name := map[float64]string{0.5: "p50", 0.9: "p90", 0.99: "p99"}[q]
		f := one(t, h.features(), "g", name, 0)
		if want := refType7(vals, q); math.Abs(f.Value-want) > 0.011*math.Abs(want) {
			t.Errorf("%s = %v, want type 7 %v within 1%%", name, f.Value, want)
		}
	}
}

func counterAt(s float64, v int64) signal.Sample {
	return signal.Sample{Signal: "parts", Time: sec(s), Value: signal.Int(v), Source: "plc1:ns=2;s=parts"}
}

// Point 3: a live counter that stops changing (a source reporting by exception sends nothing)
// keeps emitting windows, delta 0 and n 0, none partial; the next increment lands in the window of
// the sample that reports it. With the source gone (Options.Live) or its newest sample Bad, the
// windows stop after the last sample and the last one is partial.
func TestCounterLiveUnchangedKeepsWindows(t *testing.T) {
	cfg := `
features:
  - {signal: parts, kind: counter, window: 10s, compute: [delta, rate], by: sku}
`
	run := func(live bool, lastBad bool) *harness {
		h := newHarness(t, parseConfig(t, cfg))
		h.live = func(src string) bool {
			if src != "plc1:ns=2;s=parts" {
				t.Errorf("Live asked about %q", src)
			}
			return live
		}
		h.restart(true) // pick up h.live
		h.clock.Set(sec(1))
		h.add(signal.Sample{Signal: "sku", Time: sec(0.5), Value: signal.String("A")}, counterAt(1, 5))
		h.clock.Set(sec(11))
		h.add(counterAt(11, 6))
		h.clock.Set(sec(14))
		h.add(counterAt(14, 9))
		if lastBad {
			h.add(signal.Sample{Signal: "parts", Time: sec(16), Quality: signal.Bad, Source: "plc1:ns=2;s=parts"})
		}
		for _, now := range []float64{25, 35, 45} {
			h.clock.Set(sec(now))
			h.e.Tick()
		}
		return h
	}
	h := run(true, false)
	fs := h.features()
	if f := one(t, fs, "parts", "delta", 10); f.Value != 4 || f.Partial {
		t.Fatalf("[10,20): delta %v partial=%v, want 4 not partial (the source is live)", f.Value, f.Partial)
	}
	for _, start := range []float64{20, 30} {
		f := one(t, fs, "parts", "delta", start)
		if sku, _ := f.Labels.Get("sku"); f.Value != 0 || f.Count != 0 || f.Partial || sku != "A" {
			t.Fatalf("[%g,+10): %+v, want delta 0, n 0, not partial, sku A", start, f)
		}
	}
	h.clock.Set(sec(46))
	h.add(counterAt(46, 13))
	h.clock.Set(sec(60))
	h.add(counterAt(60, 13))
	fs = h.features()
	if f := one(t, fs, "parts", "delta", 40); f.Value != 4 || f.Count != 1 || f.Partial {
		t.Fatalf("[40,50): %+v, want delta 4 from one sample", f)
	}
	if f := one(t, fs, "parts", "delta", 50); f.Value != 0 || f.Count != 0 {
		t.Fatalf("[50,60) (a gap between samples): %+v, want delta 0, n 0", f)
	}
	_ = h.e.Close()

	for _, c := range []struct {
		name      string
		live, bad bool
	}{{"gone", false, false}, {"newest Bad", true, true}} {
		h := run(c.live, c.bad)
		fs := h.features()
		if f := one(t, fs, "parts", "delta", 10); f.Value != 4 || !f.Partial {
			t.Fatalf("%s: [10,20): %+v, want delta 4 partial", c.name, f)
		}
		for _, f := range fs {
			if f.WindowStart.After(sec(15)) {
				t.Fatalf("%s: window after the source stopped: %+v", c.name, f)
			}
		}
		_ = h.e.Close()
	}
}

// Point 3 for states: a state source that is gone leaves a gap too (a live one keeps its state,
// see the golden case idle_timeout).
func TestStateSourceGoneLeavesGap(t *testing.T) {
	h := newHarness(t, parseConfig(t, `
features:
  - {signal: st, kind: state, window: 10s, compute: [time_in_state]}
`))
	h.live = func(string) bool { return false }
	h.restart(true)
	defer h.e.Close()
	h.clock.Set(sec(1))
	h.add(signal.Sample{Signal: "st", Time: sec(1), Value: signal.String("running"), Source: "plc1:st"})
	h.clock.Set(sec(40))
	h.e.Tick()
	fs := h.features()
	if f := one(t, fs, "st", "time_in_state", 0); !f.Partial {
		t.Fatalf("[0,10) of a gone source: %+v, want partial", f)
	}
	if len(fs) != 1 {
		t.Fatalf("gone source: %d records, want only [0,10): %+v", len(fs), fs)
	}
}

// Point 3 after an outage: the source comes back and resends its unchanged value with the old
// source time (late: windows past it are closed). The windows resume one idle timeout later on
// their cadence, not only after as long again as the outage lasted.
func TestCounterResumesAfterOutageWithLateResend(t *testing.T) {
	h := newHarness(t, parseConfig(t, `
features:
  - {signal: parts, kind: counter, window: 10s, compute: [delta]}
`))
	live := true
	h.live = func(string) bool { return live }
	h.restart(true)
	defer h.e.Close()
	h.clock.Set(sec(1))
	h.add(counterAt(1, 5))
	h.clock.Set(sec(11))
	h.add(counterAt(11, 7))
	live = false
	for now := 25.0; now <= 95; now += 10 {
		h.clock.Set(sec(now))
		h.e.Tick()
	}
	before := len(h.features())
	live = true
	h.add(counterAt(11, 7)) // the reconnect's initial value, old source time: late
	for now := 96.0; now <= 120; now++ {
		h.clock.Set(sec(now))
		h.e.Tick()
	}
	fs := h.features()
	if len(fs) == before {
		t.Fatalf("no window within 24 s of the reconnect (outage 85 s)")
	}
	if f := one(t, fs, "parts", "delta", 100); f.Value != 0 || f.Partial {
		t.Fatalf("[100,110) after the reconnect: %+v, want delta 0 not partial", f)
	}
}

// Point 6: each semantic the configuration reference states.
func TestDocumentedSemantics(t *testing.T) {
	h := newHarness(t, parseConfig(t, `
features:
  - {signal: g, window: 10s, compute: [stddev, rate, ewma, twa], ewma_alpha: 0.5}
  - {signal: parts, kind: counter, window: 10s, compute: [delta, rate], by: sku}
  - {signal: st, kind: state, window: 10s, compute: [time_in_state, transitions]}
`))
	defer h.e.Close()
	// gauge: first sample exactly at a window start (not partial), values 2, 4 at 0 s and 4 s
	h.add(gauge("g", sec(0), 2), gauge("g", sec(4), 4), gauge("g", sec(10), 8), gauge("g", sec(20), 0))
	fs := h.features()
	if f := one(t, fs, "g", "stddev", 0); f.Value != 1 || f.Partial {
		t.Errorf("stddev of {2,4} = %v partial=%v, want 1 (population), not partial (first sample at the window start)", f.Value, f.Partial)
	}
	if f := one(t, fs, "g", "rate", 0); f.Value != 0.5 {
		t.Errorf("gauge rate = %v, want (4-2)/4 s = 0.5 (between first and last sample)", f.Value)
	}
	if f := one(t, fs, "g", "ewma", 10); f.Value != 0.5*8+0.5*(0.5*4+0.5*2) {
		t.Errorf("ewma of [10,20) = %v, want 5.5 (carried from the previous window)", f.Value)
	}
	if f := one(t, fs, "g", "twa", 0); f.Value != (2*4+4*6)/10.0 {
		t.Errorf("twa = %v, want 3.2", f.Value)
	}
	// counter: the SKU changes between two counter samples: the increment goes to the later
	// sample's window and to the SKU in force at its time
	h.add(signal.Sample{Signal: "sku", Time: sec(0), Value: signal.String("A")}, counterAt(0, 100), counterAt(8, 110))
	h.add(signal.Sample{Signal: "sku", Time: sec(9), Value: signal.String("B")}, counterAt(12, 125), counterAt(20, 125))
	fs = h.features()
	type win struct {
		start float64
		sku   string
	}
	want := map[win]float64{{0, "A"}: 10, {10, "B"}: 15}
	for _, f := range fs {
		if f.Signal != "parts" || f.Name != "delta" || f.WindowStart.After(sec(10)) {
			continue
		}
		sku, _ := f.Labels.Get("sku")
		k := win{f.WindowStart.Sub(t0).Seconds(), sku}
		if w, ok := want[k]; !ok || w != f.Value {
			t.Errorf("counter delta %v for %+v, want %v", f.Value, k, want)
		}
		delete(want, k)
	}
	if len(want) != 0 {
		t.Errorf("counter windows missing: %v", want)
	}
	if f := one(t, fs, "parts", "rate", 10); f.Value != 1.5 {
		t.Errorf("counter rate = %v, want 15 / 10 s = 1.5 (per window second)", f.Value)
	}
	// state: windows without samples are emitted with n 0
	h.add(signal.Sample{Signal: "st", Time: sec(0), Value: signal.String("idle")}, signal.Sample{Signal: "st", Time: sec(35), Value: signal.String("idle")})
	fs = h.features()
	for _, start := range []float64{10, 20} {
		if f := one(t, fs, "st", "time_in_state", start); f.Value != 10 || f.Count != 0 {
			t.Errorf("state window %g without samples: %+v, want 10 s idle, n 0", start, f)
		}
	}
}

// Points 2 and 3 together: after a restart the windows of the downtime are partial (nobody was
// watching, so a live counter's delta 0 there would claim "0 produced"), and the windows after the
// restart are complete at once, without waiting for the quiet signal to change.
func TestRestartDowntimePartialThenComplete(t *testing.T) {
	for _, clean := range []bool{true, false} {
		h := newHarness(t, parseConfig(t, `
features:
  - {signal: parts, kind: counter, window: 10s, compute: [delta]}
  - {signal: st, kind: state, window: 10s, compute: [time_in_state]}
`))
		h.clock.Set(sec(1))
		h.add(counterAt(1, 5), signal.Sample{Signal: "st", Time: sec(1), Value: signal.String("stopped")})
		h.clock.Set(sec(11))
		h.add(counterAt(11, 6), signal.Sample{Signal: "st", Time: sec(11), Value: signal.String("stopped")})
		h.clock.Set(sec(15))
		var err error
		if clean {
			err = h.e.Close()
		} else {
			err = h.e.Checkpoint() // then the process dies
		}
		if err != nil {
			t.Fatal(err)
		}
		h.clock.Set(sec(100.5)) // down 85 s
		h.start()
		h.e.Tick()
		h.clock.Set(sec(125))
		h.e.Tick()
		fs := h.features()
		for _, f := range fs {
			// [0,10): before the first sample; [10,100): open at the stop or in the downtime;
			// [100,110): the restart at 100.5 falls in it
			start := f.WindowStart.Sub(t0).Seconds()
			if wantPartial := start <= 100; f.Partial != wantPartial {
				t.Errorf("clean=%v: %s [%gs,+10s) partial=%v, want %v", clean, f.Signal, start, f.Partial, wantPartial)
			}
		}
		if f := one(t, fs, "parts", "delta", 110); f.Value != 0 || f.Count != 0 {
			t.Errorf("clean=%v: [110,120): %+v, want delta 0 n 0", clean, f)
		}
		if f := one(t, fs, "st", "time_in_state", 110); f.Value != 10 {
			t.Errorf("clean=%v: [110,120): %+v, want 10 s stopped", clean, f)
		}
		_ = h.e.Close()
	}
}
