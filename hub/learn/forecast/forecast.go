// Package forecast holds per-series demand forecasting: SES, damped Holt, Croston, SBA and TSB, fitted as
// R's forecast package fits them, chosen per series by a rolling-origin backtest (MASE, bias).
package forecast

import (
	"fmt"
	"math"
)

// Method names a forecasting method.
type Method string

// The methods. SES and HoltDamped are the additive-error exponential smoothing models ETS(A,N,N) and
// ETS(A,Ad,N) of Hyndman et al. (2008), as R's forecast::ses and forecast::holt(damped=TRUE) fit them.
// Croston, SBA and TSB are for intermittent demand and have no prediction interval.
const (
	SES        Method = "ses"
	HoltDamped Method = "holt_damped"
	Croston    Method = "croston"
	SBA        Method = "sba"
	TSB        Method = "tsb"
	// SESWeekly is SES on the series adjusted by a multiplicative weekly profile (daily demand whose
	// weekdays differ, as shops' do), the forecast scaled back by weekday; its interval is SES's,
	// scaled the same way. Not in R's forecast package as such (stlf with ETS(A,N,N) is the nearest).
	SESWeekly Method = "ses_weekly"
)

// AllMethods is the default candidate set of Select, in its tie-breaking order (simpler first).
var AllMethods = []Method{SES, HoltDamped, Croston, SBA, TSB, SESWeekly}

// Normal quantiles for the central 80 % and 95 % intervals (qnorm(0.9), qnorm(0.975) in R).
const (
	z80 = 1.2815515655446004
	z95 = 1.959963984540054
)

// Point is one step of a forecast. Mean is the point forecast. The interval bounds are set only when
// HasInterval is true: SES and damped Holt have the analytic intervals of their state-space model (as R's
// forecast.ets computes them, normal errors, unclipped so they can go below zero); Croston, SBA and TSB
// have no underlying stochastic model that gives a valid interval, so they report none.
type Point struct {
	Mean        float64 `json:"mean"`
	Lo80        float64 `json:"lo80,omitempty"`
	Hi80        float64 `json:"hi80,omitempty"`
	Lo95        float64 `json:"lo95,omitempty"`
	Hi95        float64 `json:"hi95,omitempty"`
	HasInterval bool    `json:"has_interval"`
}

// Model is a fitted model: its parameters, initial and final states. Fields a method does not use are zero.
type Model struct {
	Method Method `json:"method"`
	// Alpha smooths the level (SES, Holt) or the demand size (Croston, SBA, TSB). Beta smooths the trend
	// (Holt, in the error-correction form b_t = phi*b_{t-1} + beta*e_t that R reports) or the demand
	// probability (TSB). Phi damps the trend (Holt).
	Alpha float64 `json:"alpha"`
	Beta  float64 `json:"beta,omitempty"`
	Phi   float64 `json:"phi,omitempty"`
	// L0 and B0 are the fitted initial level and trend (SES, Holt), or TSB's initial size and probability.
	L0 float64 `json:"l0,omitempty"`
	B0 float64 `json:"b0,omitempty"`
	// Level and Trend are the states after the last observation. For Croston and SBA Level is the smoothed
	// non-zero demand size and Interval the smoothed interval between demands; for TSB Level is the
	// smoothed size and Prob the smoothed probability of a demand in a period.
	Level    float64 `json:"level"`
	Trend    float64 `json:"trend,omitempty"`
	Interval float64 `json:"interval,omitempty"`
	Prob     float64 `json:"prob,omitempty"`
	// Sigma2 is the residual variance (SSE / (n - k), k as R counts it); MSE the in-sample one-step mean
	// squared error; N the number of observations fitted.
	Sigma2 float64 `json:"sigma2,omitempty"`
	MSE    float64 `json:"mse"`
	N      int     `json:"n"`
	// Season is the weekly profile of SESWeekly: the multiplier of weekday t mod 7 (average 1).
	Season []float64 `json:"season,omitempty"`
}

// Forecast returns the next h steps after the fitted data.
func (m Model) Forecast(h int) []Point {
	if h <= 0 {
		return nil
	}
	out := make([]Point, h)
	switch m.Method {
	case SES:
		for i := range out {
			v := m.Sigma2 * (1 + float64(i)*m.Alpha*m.Alpha)
			out[i] = withInterval(m.Level, v)
		}
	case HoltDamped:
		// Mean: l + (phi + ... + phi^h) b. Variance (Hyndman et al. 2008, class 1):
		// sigma2 * (1 + sum_{j=1}^{h-1} c_j^2), c_j = alpha + beta*(phi + ... + phi^j).
		damp, pow, cum := 0.0, 1.0, 0.0
		for i := range out {
			pow *= m.Phi
			damp += pow
			out[i] = withInterval(m.Level+damp*m.Trend, m.Sigma2*(1+cum))
			c := m.Alpha + m.Beta*damp
			cum += c * c
		}
	case SESWeekly:
		return m.forecastSESWeekly(h)
	default:
		mean := m.intermittentMean()
		for i := range out {
			out[i] = Point{Mean: mean}
		}
	}
	return out
}

func withInterval(mean, variance float64) Point {
	sd := math.Sqrt(variance)
	return Point{Mean: mean, Lo80: mean - z80*sd, Hi80: mean + z80*sd, Lo95: mean - z95*sd, Hi95: mean + z95*sd, HasInterval: true}
}

// Fit fits one method to y (oldest first, one value per period). opts supplies the fixed smoothing
// constants of Croston and SBA and the series name used in errors.
func Fit(method Method, y []float64, opts Options) (Model, error) {
	if err := checkSeries(y, opts.Name, method); err != nil {
		return Model{}, err
	}
	switch method {
	case SES:
		return fitSES(y, opts.Name)
	case HoltDamped:
		return fitHoltDamped(y, opts.Name)
	case Croston, SBA:
		return fitCroston(method, y, opts.crostonAlpha(), opts.Name)
	case TSB:
		return fitTSB(y, opts.Name)
	case SESWeekly:
		return fitSESWeekly(y, opts.Name)
	default:
		return Model{}, fmt.Errorf("forecast: series %q: unknown method %q (want one of %v)", opts.Name, method, AllMethods)
	}
}

// MaxValue bounds a series' values: far beyond any demand (the hub's sales are within ±1e15 units
// each), and small enough that sums of squared errors over any series stay finite.
const MaxValue = 1e100

// checkSeries rejects values no demand series can hold, naming the first offending index.
func checkSeries(y []float64, name string, method Method) error {
	if len(y) == 0 {
		return fmt.Errorf("forecast: series %q: empty", name)
	}
	for i, v := range y {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("forecast: series %q: value %d is %v", name, i, v)
		}
		if math.Abs(v) > MaxValue {
			return fmt.Errorf("forecast: series %q: value %d is %v, beyond ±%g", name, i, v, MaxValue)
		}
		if v < 0 && (method == Croston || method == SBA || method == TSB) {
			return fmt.Errorf("forecast: series %q: value %d is negative (%v): %s needs non-negative demand", name, i, v, method)
		}
	}
	return nil
}

// DaysOfCover returns how many periods stock lasts against the forecast means: the fractional period at
// which cumulative demand reaches stock. Beyond the forecast horizon the last mean is assumed to go on.
// It returns +Inf when demand is never positive, and 0 when stock is not positive. Negative means (a
// trend forecast below zero) count as zero demand.
func DaysOfCover(stock float64, fc []Point) float64 {
	if stock <= 0 {
		return 0
	}
	left := stock
	last := 0.0
	for i, p := range fc {
		d := math.Max(p.Mean, 0)
		if d >= left {
			return float64(i) + left/d
		}
		left -= d
		last = d
	}
	if last <= 0 {
		return math.Inf(1)
	}
	return float64(len(fc)) + left/last
}
