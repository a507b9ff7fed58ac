package forecast

import (
	"math"
	"strings"
	"testing"
)

func near(t *testing.T, what string, got, want, tol float64) {
	t.Helper()
	if math.Abs(got-want) > tol {
		t.Errorf("%s = %.12g, want %.12g (±%g)", what, got, want, tol)
	}
}

// Hand-derived: sizes 3, 5, 2 at days 2, 5, 7 (intervals 2, 3, 2). With alpha 0.1 and the first value as
// initial state: z = 3 -> 3.2 -> 3.08, p = 2 -> 2.1 -> 2.09; Croston 3.08/2.09, SBA 0.95 of it.
func TestCrostonAndSBAHandDerived(t *testing.T) {
	y := []float64{0, 3, 0, 0, 5, 0, 2}
	c, err := Fit(Croston, y, Options{})
	if err != nil {
		t.Fatal(err)
	}
	near(t, "croston size", c.Level, 3.08, 1e-12)
	near(t, "croston interval", c.Interval, 2.09, 1e-12)
	fc := c.Forecast(3)
	for _, p := range fc {
		near(t, "croston mean", p.Mean, 3.08/2.09, 1e-12)
		if p.HasInterval {
			t.Errorf("croston reported an interval: %+v", p)
		}
	}
	s, err := Fit(SBA, y, Options{})
	if err != nil {
		t.Fatal(err)
	}
	near(t, "sba mean", s.Forecast(1)[0].Mean, 0.95*3.08/2.09, 1e-12)
	// R's special cases: no demand forecasts 0, one demand its size over its interval.
	z, _ := Fit(Croston, []float64{0, 0, 0}, Options{})
	near(t, "all-zero croston", z.Forecast(1)[0].Mean, 0, 0)
	one, _ := Fit(Croston, []float64{0, 0, 6, 0}, Options{})
	near(t, "one-demand croston", one.Forecast(1)[0].Mean, 2, 1e-12)
}

// Hand-derived TSB pass over 0, 4, 0 from size 2, probability 0.5, alpha = beta = 0.5:
// errors -1, 3.5, -1.875; probability 0.25, 0.625, 0.3125; size 2, 3, 3.
func TestTSBHandDerived(t *testing.T) {
	sse, z, p := tsbRun([]float64{0, 4, 0}, 0.5, 0.5, 2, 0.5)
	near(t, "sse", sse, 1+12.25+3.515625, 1e-12)
	near(t, "size", z, 3, 1e-12)
	near(t, "prob", p, 0.3125, 1e-12)
	m := Model{Method: TSB, Level: z, Prob: p}
	near(t, "forecast", m.Forecast(1)[0].Mean, 0.9375, 1e-12)
}

// TSB's forecast decays through a run of zeros (the item may be obsolete); Croston's stays where the
// last demand left it.
func TestTSBDecaysAfterDemandStops(t *testing.T) {
	y := make([]float64, 120)
	for i := 0; i < 80; i += 3 {
		y[i] = 5
	}
	tsb, err := Fit(TSB, y, Options{})
	if err != nil {
		t.Fatal(err)
	}
	cro, err := Fit(Croston, y, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if tf, cf := tsb.Forecast(1)[0].Mean, cro.Forecast(1)[0].Mean; !(tf < cf/2) {
		t.Errorf("after 40 days without demand TSB forecasts %v, Croston %v: want TSB below half of Croston", tf, cf)
	}
	if tsb.Alpha < 0.01 || tsb.Alpha > 0.99 || tsb.Beta < 0.01 || tsb.Beta > 0.99 {
		t.Errorf("TSB constants outside their bounds: alpha %v beta %v", tsb.Alpha, tsb.Beta)
	}
	// The fitted constants must do at least as well in-sample as the paper's typical 0.1/0.1.
	fixed, _, _ := tsbRun(y, 0.1, 0.1, tsb.L0, tsb.B0)
	if tsb.MSE*float64(len(y)) > fixed+1e-9 {
		t.Errorf("fitted TSB SSE %v worse than alpha=beta=0.1's %v", tsb.MSE*float64(len(y)), fixed)
	}
}

func TestBadInputsNameTheSeriesAndIndex(t *testing.T) {
	cases := []struct {
		method Method
		y      []float64
		want   string
	}{
		{SES, nil, `series "sku-1": empty`},
		{SES, []float64{1, math.NaN(), 3, 4}, `series "sku-1": value 1 is NaN`},
		{HoltDamped, []float64{1, 2, math.Inf(1)}, `value 2 is +Inf`},
		{Croston, []float64{1, -2}, `value 1 is negative (-2): croston needs non-negative demand`},
		{SES, []float64{1, 2, 3}, `ses needs at least 4 values, got 3`},
		{HoltDamped, []float64{1, 2, 3, 4, 5}, `holt_damped needs at least 10 values, got 5`},
		{"arima", []float64{1, 2, 3, 4, 5}, `unknown method "arima"`},
	}
	for _, c := range cases {
		_, err := Fit(c.method, c.y, Options{Name: "sku-1"})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Fit(%s, %v) error %v, want it to contain %q", c.method, c.y, err, c.want)
		}
	}
	if _, err := Fit(Croston, []float64{1, 2}, Options{CrostonAlpha: 1.5, Name: "x"}); err == nil || !strings.Contains(err.Error(), "alpha 1.5 outside (0, 1]") {
		t.Errorf("bad croston alpha: %v", err)
	}
}
