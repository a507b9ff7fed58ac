package forecast

import (
	"fmt"
	"math"
)

// Bounds R's ets uses by default ("usual" bounds): 1e-4 <= alpha <= 0.9999, 1e-4 <= beta <= alpha,
// 0.8 <= phi <= 0.98. Within them the damped model is also in the admissible ("both") region.
const (
	loAlpha = 1e-4
	hiAlpha = 0.9999
	loBeta  = 1e-4
	loPhi   = 0.8
	hiPhi   = 0.98
	// R's optim Nelder-Mead default relative tolerance, sqrt(.Machine$double.eps).
	reltol = 1.490116119384765625e-8
)

// fitSES fits ETS(A,N,N) as forecast::ses(initial="optimal") does: alpha and the initial level l0 that
// minimise the in-sample one-step MSE (ets opt.crit="mse"). R searches both with Nelder-Mead; here the
// one-step errors are linear in l0, so l0 is solved exactly for each alpha and alpha alone is searched
// (a grid, then golden section), which reaches the same minimum or a lower one.
func fitSES(y []float64, name string) (Model, error) {
	if len(y) < 4 {
		return Model{}, fmt.Errorf("forecast: series %q: ses needs at least 4 values, got %d", name, len(y))
	}
	sse := func(a float64) float64 { s, _ := sesProfile(y, a); return s }
	const grid = 40
	best, bestV := loAlpha, math.Inf(1)
	width := (hiAlpha - loAlpha) / grid
	for i := 0; i <= grid; i++ {
		a := loAlpha + float64(i)*width
		if v := sse(a); v < bestV {
			best, bestV = a, v
		}
	}
	a := golden(sse, math.Max(loAlpha, best-width), math.Min(hiAlpha, best+width), 1e-9)
	if sse(a) > bestV {
		a = best
	}
	_, l0 := sesProfile(y, a)
	m := Model{Method: SES, Alpha: a, L0: l0}
	sum := m.runETS(y)
	m.MSE = sum / float64(len(y))
	// As R's ets: SSE / (n - k), k = the estimated parameters and states (alpha, l0).
	m.Sigma2 = sum / float64(len(y)-2)
	return m, nil
}

// sesProfile returns the SSE at the best l0 for alpha, and that l0. The error of step t is
// e0_t - (1-alpha)^(t-1) * l0, where e0 is the error sequence started from a zero level.
func sesProfile(y []float64, alpha float64) (float64, float64) {
	l, r := 0.0, 1.0
	var ss, sv, sm float64
	d := 1 - alpha
	for _, v := range y {
		e := v - l
		ss += e * e
		sv += r * e
		sm += r * r
		l += alpha * e
		r *= d
	}
	l0 := sv / sm
	return ss - sv*l0, l0
}

// fitHoltDamped fits ETS(A,Ad,N) as forecast::holt(damped=TRUE, initial="optimal") does: alpha, beta,
// phi, l0 and b0 minimising the in-sample one-step MSE within R's usual bounds. As for SES the initial
// states are solved exactly (least squares) for each (alpha, beta, phi), which Nelder-Mead searches.
func fitHoltDamped(y []float64, name string) (Model, error) {
	if len(y) < 10 {
		return Model{}, fmt.Errorf("forecast: series %q: holt_damped needs at least 10 values, got %d", name, len(y))
	}
	// Nelder-Mead runs on unbounded coordinates mapped into R's bounds by logistic functions (beta's upper
	// bound is alpha): a penalty wall at a bound makes the simplex stall short of a minimum on or near it,
	// and such minima are common here (alpha at its floor, phi at 0.98).
	f := func(u []float64) float64 {
		a, b, phi := holtParams(u)
		s, _, _ := holtProfile(y, a, b, phi)
		return s
	}
	// The SSE surface has several local minima, so the search starts from R's own starting point and from
	// the best point of a coarse grid over the bounded region, then restarts once from the better optimum.
	a0 := loAlpha + 0.2*(hiAlpha-loAlpha)
	starts := [][]float64{holtCoords(a0, loBeta+0.1*(a0-loBeta), loPhi+0.99*(hiPhi-loPhi))}
	var gridBest []float64
	gridV := math.Inf(1)
	for _, a := range []float64{0.001, 0.05, 0.2, 0.5, 0.9} {
		for _, bf := range []float64{0.01, 0.1, 0.5} {
			for _, phi := range []float64{0.81, 0.9, 0.975} {
				u := holtCoords(a, math.Max(loBeta, bf*a), phi)
				if v := f(u); v < gridV {
					gridBest, gridV = u, v
				}
			}
		}
	}
	starts = append(starts, gridBest)
	step := []float64{1, 1, 1}
	var best []float64
	bestV := math.Inf(1)
	for _, x0 := range starts {
		if x, v := nelderMead(f, x0, step, reltol, 2000); v < bestV {
			best, bestV = x, v
		}
	}
	// One restart from the optimum with a fresh simplex: Nelder-Mead can stall on a flat SSE surface.
	if x, v := nelderMead(f, best, []float64{0.3, 0.3, 0.3}, reltol, 2000); v < bestV {
		best = x
	}
	a, b, phi := holtParams(best)
	_, l0, b0 := holtProfile(y, a, b, phi)
	m := Model{Method: HoltDamped, Alpha: a, Beta: b, Phi: phi, L0: l0, B0: b0}
	sum := m.runETS(y)
	m.MSE = sum / float64(len(y))
	// As R's ets: SSE / (n - k), k = alpha, beta, phi, l0, b0.
	m.Sigma2 = sum / float64(len(y)-5)
	return m, nil
}

// holtProfile returns the SSE at the best (l0, b0) for the given parameters, and those states. The
// model is x_t = F x_{t-1} + G e_t, e_t = y_t - H x_{t-1} with x = (l, b), F = [[1 phi] [0 phi]],
// G = (alpha, beta), H = (1, phi). With D = F - G H, e_t = e0_t - H D^(t-1) x_0, linear in x_0, where e0
// is the error sequence started from x_0 = 0; the row H D^(t-1) is carried along as r.
func holtProfile(y []float64, alpha, beta, phi float64) (sse, l0, b0 float64) {
	d11, d12 := 1-alpha, phi*(1-alpha)
	d21, d22 := -beta, phi*(1-beta)
	var l, b float64
	r1, r2 := 1.0, phi
	var ss, s1, s2, m11, m12, m22 float64
	for _, v := range y {
		e := v - l - phi*b
		ss += e * e
		s1 += r1 * e
		s2 += r2 * e
		m11 += r1 * r1
		m12 += r1 * r2
		m22 += r2 * r2
		l, b = l+phi*b+alpha*e, phi*b+beta*e
		r1, r2 = r1*d11+r2*d21, r1*d12+r2*d22
	}
	det := m11*m22 - m12*m12
	if det <= 1e-12*m11*m22 {
		// The two states cannot be told apart (e.g. a level-only series): fit the level alone.
		l0 = s1 / m11
		return ss - s1*l0, l0, 0
	}
	l0 = (m22*s1 - m12*s2) / det
	b0 = (m11*s2 - m12*s1) / det
	return ss - s1*l0 - s2*b0, l0, b0
}

// runETS filters y from the model's initial states with its parameters, sets the final states and
// returns the sum of squared one-step errors.
func (m *Model) runETS(y []float64) float64 {
	l, b := m.L0, m.B0
	phi := m.Phi
	if m.Method == SES {
		phi, b = 0, 0
	}
	var sse float64
	for _, v := range y {
		e := v - l - phi*b
		sse += e * e
		l, b = l+phi*b+m.Alpha*e, phi*b+m.Beta*e
	}
	m.Level, m.Trend, m.N = l, b, len(y)
	return sse
}

// golden minimises a unimodal f on [lo, hi] by golden-section search to absolute tolerance tol.
func golden(f func(float64) float64, lo, hi, tol float64) float64 {
	const g = 0.6180339887498949
	c, d := hi-g*(hi-lo), lo+g*(hi-lo)
	fc, fd := f(c), f(d)
	for hi-lo > tol {
		if fc < fd {
			hi, d, fd = d, c, fc
			c = hi - g*(hi-lo)
			fc = f(c)
		} else {
			lo, c, fc = c, d, fd
			d = lo + g*(hi-lo)
			fd = f(d)
		}
	}
	return (lo + hi) / 2
}

func logistic(u float64) float64 { return 1 / (1 + math.Exp(-u)) }

// logit is logistic's inverse, clamped so that a bound maps to a finite coordinate.
func logit(p float64) float64 {
	p = math.Min(math.Max(p, 1e-6), 1-1e-6)
	return math.Log(p / (1 - p))
}

// holtParams maps search coordinates into R's bounds: alpha in [loAlpha, hiAlpha], beta in
// [loBeta, alpha], phi in [loPhi, hiPhi].
func holtParams(u []float64) (alpha, beta, phi float64) {
	alpha = loAlpha + (hiAlpha-loAlpha)*logistic(u[0])
	beta = loBeta + (alpha-loBeta)*logistic(u[1])
	phi = loPhi + (hiPhi-loPhi)*logistic(u[2])
	return alpha, beta, phi
}

// holtCoords is holtParams' inverse.
func holtCoords(alpha, beta, phi float64) []float64 {
	return []float64{
		logit((alpha - loAlpha) / (hiAlpha - loAlpha)),
		logit((beta - loBeta) / (alpha - loBeta)),
		logit((phi - loPhi) / (hiPhi - loPhi)),
	}
}
