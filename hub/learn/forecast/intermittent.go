package forecast

import (
	"fmt"
	"math"
)

// DefaultCrostonAlpha is R's forecast::croston default. R does not estimate it: croston smooths both the
// non-zero sizes and the intervals with this fixed constant (simple SES, first value as initial state).
const DefaultCrostonAlpha = 0.1

// fitCroston fits Croston's method exactly as forecast::croston: z, the non-zero demand sizes, and p, the
// intervals between them (the first counted from the series start), are each smoothed by SES with the
// same alpha starting from their first value; the forecast is z/p. SBA (Syntetos & Boylan 2005) multiplies
// it by 1 - alpha/2 to remove Croston's positive bias. With no demand at all the forecast is 0; with one
// demand it is that size over its interval (both as R).
func fitCroston(method Method, y []float64, alpha float64, name string) (Model, error) {
	if alpha <= 0 || alpha > 1 {
		return Model{}, fmt.Errorf("forecast: series %q: %s alpha %v outside (0, 1]", name, method, alpha)
	}
	m := Model{Method: method, Alpha: alpha, N: len(y)}
	var z, p float64
	seen := false
	last := -1 // index of the previous demand
	var sse float64
	nerr := 0
	for t, v := range y {
		if seen {
			// One-step fitted value from the states before t; only defined once a demand was seen.
			e := v - m.ratio(z, p)
			sse += e * e
			nerr++
		}
		if v <= 0 {
			continue
		}
		gap := float64(t - last)
		last = t
		if !seen {
			z, p, seen = v, gap, true
			continue
		}
		z += alpha * (v - z)
		p += alpha * (gap - p)
	}
	m.Level, m.Interval = z, p
	if nerr > 0 {
		m.MSE = sse / float64(nerr)
	}
	return m, nil
}

// ratio is the Croston or SBA per-period demand from size z and interval p.
func (m Model) ratio(z, p float64) float64 {
	if p <= 0 {
		return 0
	}
	f := z / p
	if m.Method == SBA {
		f *= 1 - m.Alpha/2
	}
	return f
}

// intermittentMean is the flat forecast of Croston, SBA and TSB.
func (m Model) intermittentMean() float64 {
	if m.Method == TSB {
		return m.Prob * m.Level
	}
	return m.ratio(m.Level, m.Interval)
}

// fitTSB fits TSB (Teunter, Syntetos & Babai 2011): the probability of a demand, prob, is updated every
// period (towards 1 after a demand, towards 0 after none, constant beta) and the size only after a demand
// (constant alpha); the forecast is prob*size, so it decays through long runs of zeros, which Croston's
// does not. R's forecast has no TSB (tsintermittent, which has, is not packaged in Debian), so this
// follows the paper: the initial size is the mean non-zero demand, the initial probability the share of
// periods with demand, and alpha and beta in [0.01, 0.99] minimise the in-sample one-step MSE (a 7x7 grid,
// then Nelder-Mead from its best point).
func fitTSB(y []float64, name string) (Model, error) {
	var sum float64
	k := 0
	for _, v := range y {
		if v > 0 {
			sum += v
			k++
		}
	}
	m := Model{Method: TSB, N: len(y)}
	if k == 0 {
		// No demand ever: the forecast is zero whatever the constants.
		m.Alpha, m.Beta = DefaultCrostonAlpha, DefaultCrostonAlpha
		return m, nil
	}
	z0, p0 := sum/float64(k), float64(k)/float64(len(y))
	const lo, hi = 0.01, 0.99
	f := func(x []float64) float64 {
		if x[0] < lo || x[0] > hi || x[1] < lo || x[1] > hi {
			return math.Inf(1)
		}
		s, _, _ := tsbRun(y, x[0], x[1], z0, p0)
		return s
	}
	grid := []float64{0.01, 0.05, 0.1, 0.2, 0.35, 0.55, 0.8}
	best, bestV := []float64{0.1, 0.1}, math.Inf(1)
	for _, a := range grid {
		for _, b := range grid {
			if v := f([]float64{a, b}); v < bestV {
				best, bestV = []float64{a, b}, v
			}
		}
	}
	if x, v := nelderMead(f, best, []float64{0.03, 0.03}, 1e-6, 200); v < bestV {
		best, bestV = x, v
	}
	m.Alpha, m.Beta = best[0], best[1]
	m.L0, m.B0 = z0, p0
	_, m.Level, m.Prob = tsbRun(y, m.Alpha, m.Beta, z0, p0)
	m.MSE = bestV / float64(len(y))
	return m, nil
}

// tsbRun filters y through TSB from size z and probability p, returning the sum of squared one-step
// errors and the final size and probability.
func tsbRun(y []float64, alpha, beta, z, p float64) (float64, float64, float64) {
	var sse float64
	for _, v := range y {
		e := v - p*z
		sse += e * e
		if v > 0 {
			p += beta * (1 - p)
			z += alpha * (v - z)
		} else {
			p -= beta * p
		}
	}
	return sse, z, p
}
