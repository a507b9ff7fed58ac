package rules

import (
	"fmt"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub/decide/internal/benchset"
)

// benchSet is the 20-rule set hub/decide's engine benchmark evaluates too.
func benchSet(tb testing.TB) *Set {
	tb.Helper()
	s, err := Load(benchset.Rules())
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func benchInputs(n int) []*Input {
	out := make([]*Input, n)
	now := time.Date(2026, 12, 4, 15, 0, 0, 0, time.UTC)
	for i := range out {
		out[i] = &Input{
			SKU:  SKU{ID: fmt.Sprintf("A-%05d", i), Name: "Bracket"},
			Site: "demo-plant",
			Lines: []Line{{ID: "line1", Availability: 0.9, State: []string{"running", "down", "idle"}[i%3], UnitsPerHour: 120},
				{ID: "line2", Availability: 0.7, State: "running", UnitsPerHour: 80, Stale: i%7 == 0}},
			Inventory: Inventory{OnHand: float64(i % 500), Position: float64(i%500 + 20), DaysOfCover: float64(i % 60),
				DailyRate: float64(i % 9), Produced: float64(i % 40), Sold: float64(i % 25)},
			Features: map[string]Feature{
				"units":        {Value: float64(i % 30), Stale: i%11 == 0, AgeS: 12},
				"availability": {Value: 0.8, AgeS: 3},
			},
			Neighbours: Neighbours{Substitutes: []string{"A-200"}, Complements: []string{"B-110"}, Channels: []string{"web", "retail"}},
			Now:        now,
		}
	}
	return out
}

// BenchmarkEvaluate reports the time per rule per SKU (target ≤ 10 µs) with a 20-rule set.
func BenchmarkEvaluate(b *testing.B) {
	s := benchSet(b)
	ins := benchInputs(1000)
	b.ReportAllocs()
	cpu := benchset.CPUTime()
	i := 0
	for b.Loop() {
		res := s.Evaluate(ins[i%len(ins)])
		if len(res.Trace) != 20 {
			b.Fatal(res)
		}
		i++
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/20, "ns/rule")
	// On a shared machine the wall clock includes waiting for a core; the process's CPU time
	// (every thread, GC included) is what a rule costs.
	b.ReportMetric(float64((benchset.CPUTime()-cpu).Nanoseconds())/float64(b.N)/20, "cpu-ns/rule")
}

// BenchmarkEvaluate10kSKUs re-evaluates 10,000 SKUs with the 20-rule set (target ≤ 200 ms), on
// one goroutine and on as many as there are cores.
func BenchmarkEvaluate10kSKUs(b *testing.B) {
	s := benchSet(b)
	ins := benchInputs(10_000)
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		cpu := benchset.CPUTime()
		for b.Loop() {
			for _, in := range ins {
				s.Evaluate(in)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/10k-SKUs")
		b.ReportMetric(float64((benchset.CPUTime()-cpu).Milliseconds())/float64(b.N), "cpu-ms/10k-SKUs")
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		cpu := benchset.CPUTime()
		for b.Loop() {
			EvaluateAll(s, ins, 0)
		}
		b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/10k-SKUs")
		b.ReportMetric(float64((benchset.CPUTime()-cpu).Milliseconds())/float64(b.N), "cpu-ms/10k-SKUs")
	})
}

// BenchmarkLint lints the 20-rule benchmark set (a validate run).
func BenchmarkLint(b *testing.B) {
	s := benchSet(b)
	for b.Loop() {
		s.Lint()
	}
}
