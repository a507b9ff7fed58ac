package forecast

import (
	"math"
	"strings"
	"testing"
)

// The profiled initial states must be the least-squares ones: nudging them either way cannot lower the
// SSE, and the profile's SSE must equal a plain filter pass from those states.
func TestProfiledInitialStatesAreOptimal(t *testing.T) {
	y := trendSeries(60)
	for _, p := range [][3]float64{{0.3, 0.05, 0.9}, {0.8, 0.5, 0.98}, {0.05, 0.01, 0.8}} {
		sse, l0, b0 := holtProfile(y, p[0], p[1], p[2])
		m := Model{Method: HoltDamped, Alpha: p[0], Beta: p[1], Phi: p[2], L0: l0, B0: b0}
		near(t, "profile sse vs filter", sse, m.runETS(y), 1e-6*sse)
		for _, d := range [][2]float64{{0.01, 0}, {-0.01, 0}, {0, 0.01}, {0, -0.01}} {
			mm := m
			mm.L0 += d[0]
			mm.B0 += d[1]
			if s := mm.runETS(y); s < sse-1e-9 {
				t.Errorf("params %v: moving (l0,b0) by %v lowers SSE %v -> %v", p, d, sse, s)
			}
		}
	}
	sse, l0 := sesProfile(y, 0.3)
	m := Model{Method: SES, Alpha: 0.3, L0: l0}
	near(t, "ses profile sse vs filter", sse, m.runETS(y), 1e-6*sse)
	for _, d := range []float64{0.01, -0.01} {
		mm := m
		mm.L0 += d
		if s := mm.runETS(y); s < sse-1e-9 {
			t.Errorf("moving l0 by %v lowers SES SSE %v -> %v", d, sse, s)
		}
	}
}

// Hand-derived damped trend forecast: level 10, trend 1, phi 0.9, alpha 0.5, beta 0.1, sigma2 4.
// h=1: 10.9, variance 4. h=2: 10 + 0.9 + 0.81, variance 4 * (1 + (0.5 + 0.1*0.9)^2).
func TestHoltDampedForecastFormula(t *testing.T) {
	m := Model{Method: HoltDamped, Alpha: 0.5, Beta: 0.1, Phi: 0.9, Level: 10, Trend: 1, Sigma2: 4}
	fc := m.Forecast(2)
	near(t, "h1 mean", fc[0].Mean, 10.9, 1e-12)
	near(t, "h1 lo95", fc[0].Lo95, 10.9-1.959963984540054*2, 1e-9)
	near(t, "h2 mean", fc[1].Mean, 11.71, 1e-12)
	v := 4 * (1 + 0.59*0.59)
	near(t, "h2 hi80", fc[1].Hi80, 11.71+1.2815515655446004*math.Sqrt(v), 1e-9)
	s := Model{Method: SES, Alpha: 0.5, Level: 7, Sigma2: 1}.Forecast(3)
	near(t, "ses h3 hi95", s[2].Hi95, 7+1.959963984540054*math.Sqrt(1+2*0.25), 1e-9)
	if !s[0].HasInterval || !fc[0].HasInterval {
		t.Error("ses/holt points must carry an interval")
	}
}

func TestSESOnConstantSeries(t *testing.T) {
	y := []float64{5, 5, 5, 5, 5, 5}
	m, err := Fit(SES, y, Options{})
	if err != nil {
		t.Fatal(err)
	}
	near(t, "level", m.Level, 5, 1e-9)
	near(t, "sigma2", m.Sigma2, 0, 1e-12)
}

// Holt's fitted parameters respect R's bounds and beat a grid of other parameter choices.
func TestHoltDampedFitIsAMinimum(t *testing.T) {
	y := trendSeries(120)
	m, err := Fit(HoltDamped, y, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if m.Alpha < loAlpha || m.Alpha > hiAlpha || m.Beta < loBeta || m.Beta > m.Alpha || m.Phi < loPhi || m.Phi > hiPhi {
		t.Fatalf("parameters outside R's bounds: %+v", m)
	}
	best := m.MSE * float64(len(y))
	for a := 0.05; a < 1; a += 0.1 {
		for b := 0.0001; b <= a; b += 0.05 {
			for phi := 0.8; phi <= 0.98; phi += 0.045 {
				if s, _, _ := holtProfile(y, a, b, phi); s < best*(1-1e-6) {
					t.Errorf("grid point (%.2f %.4f %.3f) has SSE %v below the fit's %v", a, b, phi, s, best)
				}
			}
		}
	}
}

// trendSeries is a damped upward trend with a deterministic wiggle.
func trendSeries(n int) []float64 {
	y := make([]float64, n)
	for i := range y {
		x := float64(i)
		y[i] = 20 + 30*(1-math.Exp(-x/50)) + 3*math.Sin(1.7*x) + 2*math.Cos(0.3*x*x)
	}
	return y
}

// Degenerate but legal demand (all zero, constant, one spike, exactly linear) must give finite
// forecasts from every method and from Select.
func TestDegenerateSeriesGiveFiniteForecasts(t *testing.T) {
	n := 60
	zero, flat, spike, line := make([]float64, n), make([]float64, n), make([]float64, n), make([]float64, n)
	for i := range flat {
		flat[i] = 7
		line[i] = float64(i)
	}
	spike[30] = 100
	for name, y := range map[string][]float64{"zero": zero, "flat": flat, "spike": spike, "line": line} {
		for _, method := range AllMethods {
			m, err := Fit(method, y, Options{Name: name})
			if err != nil {
				t.Errorf("%s/%s: %v", name, method, err)
				continue
			}
			for h, p := range m.Forecast(5) {
				for _, v := range []float64{p.Mean, p.Lo80, p.Hi80, p.Lo95, p.Hi95} {
					if math.IsNaN(v) || math.IsInf(v, 0) {
						t.Errorf("%s/%s h=%d: %+v", name, method, h+1, p)
					}
				}
			}
		}
		if m, _, err := Select(y, Options{Name: name}); err != nil || math.IsNaN(m.Forecast(1)[0].Mean) {
			t.Errorf("%s: Select gave %+v, %v", name, m, err)
		}
	}
}

// Values too large for their squares to stay finite (the SSE overflows to +Inf or NaN) must be an
// error naming the index, never a panic (damped Holt's grid found no finite point and Nelder-Mead got
// an empty start) nor a NaN or infinite forecast (SES).
func TestHugeValuesAreAnErrorNotAPanic(t *testing.T) {
	y := make([]float64, 60)
	for i := range y {
		y[i] = 1e200 * float64(i%3)
	}
	for _, method := range AllMethods {
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Errorf("%s panicked: %v", method, r)
				}
			}()
			m, err := Fit(method, y, Options{Name: "huge"})
			if err == nil {
				p := m.Forecast(1)[0]
				for _, v := range []float64{p.Mean, p.Lo80, p.Hi80, p.Lo95, p.Hi95} {
					if math.IsNaN(v) || math.IsInf(v, 0) {
						t.Errorf("%s: no error, yet forecast %+v", method, p)
						break
					}
				}
			} else if !strings.Contains(err.Error(), `series "huge": value 1 is 1e+200`) {
				t.Errorf("%s: error %v does not name value 1", method, err)
			}
		}()
	}
	func() {
		defer func() {
			if r := recover(); r != nil {
				t.Errorf("Select panicked: %v", r)
			}
		}()
		if _, _, err := Select(y, Options{Name: "huge"}); err == nil {
			t.Errorf("Select accepted values of 1e200")
		}
	}()
}
