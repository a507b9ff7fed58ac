package quality

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// run feeds a key a value every 30 s for 8 hours (mean mu, then mu+delta from shift on) the way
// the monitor does, and returns when it first went drifting (zero: never).
func runKey(cfg Config, seed uint64, delta float64, shift time.Duration) (first time.Time, evaluations int) {
	k := newKeyState("temp", "x", ptr(cfg.For("temp")), time.Hour, cfg.ring(), cfg.Slice(), cfg.Samples/cfg.Slices)
	r := rand.New(rand.NewPCG(seed, 9))
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for i := range 8 * 120 {
		end := t0.Add(time.Duration(i) * 30 * time.Second)
		if s := k.sliceOf(end); k.cur != math.MinInt64 && s > k.cur {
			if dc, _ := k.evaluate(s-1, cfg.Slices, int(cfg.ReferenceLag/cfg.Slice())); dc && k.drifting && first.IsZero() {
				first = end
			}
			if !math.IsNaN(k.psi) {
				evaluations++
			}
		}
		v := 10 + r.NormFloat64()
		if end.Sub(t0) >= shift {
			v += delta
		}
		k.add(end, v, 1, 0, true)
	}
	return first, evaluations
}

// With the default thresholds, 100 stable series (fixed seeds, thousands of evaluations) raise no
// drift, and 100 series whose mean shifts by two standard deviations are all caught within the
// window plus a slice.
func TestDriftFalseAlarmsAndPower(t *testing.T) {
	cfg := testConfig()
	shift := 5 * time.Hour
	evals := 0
	for seed := range uint64(100) {
		first, n := runKey(cfg, seed, 0, 0)
		evals += n
		if !first.IsZero() {
			t.Errorf("seed %d: a stable series drifted at %s", seed, first)
		}
		first, _ = runKey(cfg, seed, 2, shift)
		t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
		if first.IsZero() || first.Sub(t0) < shift || first.Sub(t0) > shift+cfg.Window+cfg.Slice() {
			t.Errorf("seed %d: a 2σ shift at %s detected at %s", seed, shift, first)
		}
	}
	if evals < 1000 {
		t.Fatalf("only %d evaluations: the windows never filled", evals)
	}
}

func TestStats(t *testing.T) {
	if p := psi([]float64{10, 10, 10}, []float64{10, 10, 10}); p != 0 {
		t.Errorf("psi of equal shares: %v", p)
	}
	if p := psi([]float64{100, 0}, []float64{0, 100}); p < 2 {
		t.Errorf("psi of swapped bins: %v, want large", p)
	}
	a := []float64{1, 2, 3, 4, 5}
	b := []float64{6, 7, 8, 9, 10}
	if d, p := ks(a, b); d != 1 || p > 0.05 {
		t.Errorf("ks of disjoint samples: D %v p %v", d, p)
	}
	if d, p := ks([]float64{1, 2, 3}, []float64{1, 2, 3}); d != 0 || p != 1 {
		t.Errorf("ks of equal samples: D %v p %v", d, p)
	}
	// Known value: λ = 1.36 is the 5 % point of the Kolmogorov distribution.
	if q := qks(1.358); math.Abs(q-0.05) > 0.001 {
		t.Errorf("Q_KS(1.358) = %v, want 0.05", q)
	}
	if e := quantileEdges([]float64{1, 1, 1, 1}, 4); len(e) != 1 {
		t.Errorf("edges of a constant reference: %v", e)
	}
}

// The sequence tracker: duplicates, holes and their ages, runs merging, the bound on runs.
func TestTracker(t *testing.T) {
	at := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	var tr seqTracker
	for _, s := range []uint64{1, 2, 5, 3, 9} {
		tr.add(s, s, at)
		at = at.Add(time.Second)
	}
	if !tr.seen(3) || tr.seen(4) || tr.seen(7) {
		t.Errorf("seen: %+v", tr.runs)
	}
	hs, missing := tr.holes(at, 0)
	if missing != 4 || len(hs) != 2 || hs[0].From != 4 || hs[1].From != 6 || hs[1].To != 8 {
		t.Errorf("holes: %+v missing %d", hs, missing)
	}
	if hs, _ := tr.holes(at, time.Hour); len(hs) != 0 {
		t.Errorf("holes younger than gap_after: %+v", hs)
	}
	for s := uint64(11); s < 11+2*maxRuns; s += 2 {
		tr.add(s, s, at)
	}
	if len(tr.runs) > maxRuns || tr.lost == 0 {
		t.Errorf("runs %d (max %d), lost %d", len(tr.runs), maxRuns, tr.lost)
	}
}

func ptr[T any](v T) *T { return &v }
