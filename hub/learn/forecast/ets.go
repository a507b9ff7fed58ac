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
// states are solved exactly (least squares) for each (alpha, beta, phi), which Nelder-Mead searches from
// R's own starting point (alpha 0.2, beta 0.02, phi 0.9782), then restarts once from its optimum.
func fitHoltDamped(y []float64, name string) (Model, error) {
	if len(y) < 10 {
		return Model{}, fmt.Errorf("forecast: series %q: holt_damped needs at least 10 values, got %d", name, len(y))
	}
	f := func(p []float64) float64 {
		a, b, phi := p[0], p[1], p[2]
		if a < loAlpha || a > hiAlpha || b < loBeta || b > a || phi < loPhi || phi > hiPhi {
			return math.Inf(1)
		}
		s, _, _ := holtProfile(y, a, b, phi)
		return s
	}
	step := []float64{0.1, 0.05, 0.05}
	// R's initparam: alpha 0.2 of its range, beta 0.1 of [lower, alpha], phi 0.99 of its range.
	a0 := loAlpha + 0.2*(hiAlpha-loAlpha)
	best, bestV := nelderMead(f, []float64{a0, loBeta + 0.1*(a0-loBeta), loPhi + 0.99*(hiPhi-loPhi)}, step, reltol, 2000)
	// One restart from the optimum with a fresh simplex: Nelder-Mead can stall on a flat SSE surface.
	if x, v := nelderMead(f, best, []float64{0.05, 0.02, 0.02}, reltol, 2000); v < bestV {
		best = x
	}
	_, l0, b0 := holtProfile(y, best[0], best[1], best[2])
	m := Model{Method: HoltDamped, Alpha: best[0], Beta: best[1], Phi: best[2], L0: l0, B0: b0}
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
