package forecast

import (
	"math"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
)

// benchSeries makes n daily series of length days: a mix of smooth, trending and intermittent demand,
// seeded so every run fits the same data.
func benchSeries(n, days int) [][]float64 {
	r := rand.New(rand.NewPCG(15, 1))
	out := make([][]float64, n)
	for i := range out {
		y := make([]float64, days)
		level := 1 + r.Float64()*50
		slope := (r.Float64() - 0.5) * 0.1
		p := 1.0
		if i%3 == 2 {
			p = 0.05 + r.Float64()*0.4 // intermittent: demand on 5-45 % of days
		}
		for t := range y {
			if r.Float64() < p {
				y[t] = math.Max(0, math.Round(level+slope*float64(t)+r.NormFloat64()*math.Sqrt(level)))
			}
		}
		out[i] = y
	}
	return out
}

// forEach runs f over the series on every CPU.
func forEach(series [][]float64, f func(y []float64)) {
	var wg sync.WaitGroup
	next := make(chan []float64)
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for y := range next {
				f(y)
			}
		}()
	}
	for _, y := range series {
		next <- y
	}
	close(next)
	wg.Wait()
}

// BenchmarkFitAll fits every method (AllMethods) to 10,000 series of 365 days (the target: <= 30 s).
func BenchmarkFitAll(b *testing.B) {
	series := benchSeries(10000, 365)
	b.ResetTimer()
	for range b.N {
		forEach(series, func(y []float64) {
			for _, m := range AllMethods {
				if _, err := Fit(m, y, Options{}); err != nil {
					b.Error(err)
				}
			}
		})
	}
}

// BenchmarkSelect runs the full choice (backtest of every method, then the final fit) on the same
// 10,000 series.
func BenchmarkSelect(b *testing.B) {
	series := benchSeries(10000, 365)
	b.ResetTimer()
	for range b.N {
		forEach(series, func(y []float64) {
			if _, _, err := Select(y, Options{}); err != nil {
				b.Error(err)
			}
		})
	}
}
