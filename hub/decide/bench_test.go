package decide

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/decide/internal/benchset"
	"github.com/gemba-io/gemba/hub/decide/rules"
	"github.com/gemba-io/gemba/hub/decide/versions"
	"github.com/gemba-io/gemba/hub/state/features"
	"github.com/gemba-io/gemba/hub/state/graph"
)

// benchSKUs is the target's plant: 10,000 SKUs on a few lines of one site.
const (
	benchSKUs  = 10_000
	benchLines = 4
)

// benchGraph: every SKU made by one of the lines, sold on web and retail, every tenth with a
// substitute (the graph answers a rule's neighbours).
func benchGraph(tb testing.TB) *graph.Graph {
	tb.Helper()
	var b strings.Builder
	b.WriteString("version: bench\nsites: [{id: s1}]\nlines:\n")
	for l := range benchLines {
		fmt.Fprintf(&b, "  - {id: l%d, site: s1}\n", l)
	}
	b.WriteString("channels: [{id: web}, {id: retail}]\nskus:\n")
	for i := range benchSKUs {
		fmt.Fprintf(&b, "  - {id: A-%05d}\n", i)
	}
	b.WriteString("edges:\n")
	for i := range benchSKUs {
		fmt.Fprintf(&b, "  - {kind: produces, from: l%d, to: A-%05d}\n", i%benchLines, i)
		fmt.Fprintf(&b, "  - {kind: sold_via, from: A-%05d, to: web}\n  - {kind: sold_via, from: A-%05d, to: retail}\n", i, i)
		if i%10 == 0 && i+1 < benchSKUs {
			fmt.Fprintf(&b, "  - {kind: substitutes, from: A-%05d, to: A-%05d}\n", i, i+1)
		}
	}
	g, err := graph.Load([]byte(b.String()))
	if err != nil {
		tb.Fatal(err)
	}
	return g
}

// benchRules is the 20-rule set of hub/decide/rules' BenchmarkEvaluate: collect, so every rule
// runs for every SKU.
func benchRules(tb testing.TB) *rules.Set {
	tb.Helper()
	s, err := rules.Load(benchset.Rules())
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// benchState fills the fake state: every line's availability and units, every SKU's units and
// stock, fresh at now, varied so that the rules match some SKUs and not others.
func benchState(now time.Time) *fakeState {
	st := newFakeState()
	for l := range benchLines {
		st.setFeature("availability", fmt.Sprintf("l%d", l), []float64{0.9, 0.7, 0.3, 0}[l], now, nil)
		st.setFeature("line_units", fmt.Sprintf("l%d", l), float64(100+l*50), now, nil)
	}
	for i := range benchSKUs {
		sku := fmt.Sprintf("A-%05d", i)
		st.setFeature("units", sku, float64(i%30), now, nil)
		st.setCover(sku, "s1", float64(i%60))
	}
	return st
}

// BenchmarkEngineEvaluate10kSKUs is the engine's side of the 10,000-SKU target (≤ 200 ms): each
// SKU's rule input built from the state (lines, features, stock, neighbours, with the audit's
// readings and lineage) and the acting version evaluated, with each decision's guard proposal,
// through Evaluator.Evaluate over Units(): what a timer round or a rules change costs before any
// decision reaches the guard. serial is one goroutine; parallel is the engine's default of one
// worker per core; engine-path is serial without what only the Evaluator adds per call.
func BenchmarkEngineEvaluate10kSKUs(b *testing.B) {
	now := time.Date(2026, 12, 4, 15, 0, 0, 0, time.UTC)
	set := benchRules(b)
	live := &versions.Live{Change: audit.Change{Op: "activate", Active: set.Version(), By: "bench"}, Active: set}
	defs := features.Definitions{
		{Name: "availability", Signal: "*", Feature: "availability", Key: features.ByLine, MaxAge: time.Minute},
		{Name: "line_units", Signal: "*", Feature: "units", Key: features.ByLine, MaxAge: time.Minute},
		{Name: "units", Signal: "*", Feature: "units", Key: features.BySKU, MaxAge: time.Minute},
	}
	cfg := DefaultConfig()
	cfg.Lines.Units = "line_units"
	ev := NewEvaluator(cfg, benchGraph(b), benchState(now), defs)
	units := ev.Units()
	if len(units) != benchSKUs {
		b.Fatalf("%d units, want %d", len(units), benchSKUs)
	}
	// The work is real: every SKU traced through all 20 rules, and some of them decide.
	check := func(e Evaluation) {
		if len(e.Result.Trace) != 20 || e.Version != set.Version() {
			b.Fatalf("%v: %d rules traced, version %q", e.Unit, len(e.Result.Trace), e.Version)
		}
	}
	e := ev.Evaluate(live, Unit{"A-00020", "s1"}, now, time.Hour)
	check(e)
	if len(e.Proposals) == 0 || len(e.Input.Lines) != 1 || e.Input.Features["availability"].Value != 0.9 {
		b.Fatalf("A-00020 on l0: no proposal or wrong input: %+v", e)
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		cpu, decided := benchset.CPUTime(), 0
		for b.Loop() {
			for _, u := range units {
				e := ev.Evaluate(live, u, now, time.Hour)
				decided += len(e.Proposals)
			}
		}
		reportRound(b, cpu, decided)
	})
	// What Engine.unit does before its decisions reach the guard: the input and the rules, without
	// the Evaluator's per-call rule index and proposals (the engine indexes rules once per version).
	b.Run("engine-path", func(b *testing.B) {
		b.ReportAllocs()
		cpu, decided := benchset.CPUTime(), 0
		for b.Loop() {
			for _, u := range units {
				_, _, res := evaluate(live, ev.b.input(u, now))
				decided += len(res.PerChannel())
			}
		}
		reportRound(b, cpu, decided)
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		cpu, decided := benchset.CPUTime(), 0
		workers := runtime.GOMAXPROCS(0)
		for b.Loop() {
			// As the engine's round: a channel of units, one worker per core.
			work := make(chan Unit)
			var wg sync.WaitGroup
			var mu sync.Mutex
			for range workers {
				wg.Go(func() {
					n := 0
					for u := range work {
						e := ev.Evaluate(live, u, now, time.Hour)
						n += len(e.Proposals)
					}
					mu.Lock()
					decided += n
					mu.Unlock()
				})
			}
			for _, u := range units {
				work <- u
			}
			close(work)
			wg.Wait()
		}
		reportRound(b, cpu, decided)
	})
}

func reportRound(b *testing.B, cpu0 time.Duration, decided int) {
	if decided == 0 {
		b.Fatal("nothing decided: the rules never matched")
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/10k-SKUs")
	// On a shared machine the wall clock includes waiting for a core; CPU time is what it costs.
	b.ReportMetric(float64((benchset.CPUTime()-cpu0).Microseconds())/1000/float64(b.N), "cpu-ms/10k-SKUs")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/benchSKUs/20, "ns/rule")
	b.ReportMetric(float64(decided)/float64(b.N), "proposals/10k-SKUs")
}
