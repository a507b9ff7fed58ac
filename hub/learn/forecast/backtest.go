package forecast

import (
	"fmt"
	"math"
)

// Options tune Select. The zero value is usable: every field has a default.
type Options struct {
	// Name identifies the series in errors (e.g. "sku 123 / web").
	Name string
	// Candidates are the methods Select compares (default AllMethods).
	Candidates []Method
	// Horizon is the number of periods forecast from each backtest origin (default 14).
	Horizon int
	// Origins is the number of backtest origins (default 6), Step the periods between them (default 7).
	Origins, Step int
	// MinTrain is the fewest periods the parameters are fitted on before the first origin (default 28).
	MinTrain int
	// CrostonAlpha is the fixed smoothing constant of Croston and SBA (default 0.1, R's default).
	CrostonAlpha float64
	// MAWindow is the window of the moving-average baseline the backtest also scores (default 28).
	MAWindow int
}

func (o Options) withDefaults() Options {
	if len(o.Candidates) == 0 {
		o.Candidates = AllMethods
	}
	if o.Horizon <= 0 {
		o.Horizon = 14
	}
	if o.Origins <= 0 {
		o.Origins = 6
	}
	if o.Step <= 0 {
		o.Step = 7
	}
	if o.MinTrain <= 0 {
		o.MinTrain = 28
	}
	if o.MAWindow <= 0 {
		o.MAWindow = 28
	}
	return o
}

func (o Options) crostonAlpha() float64 {
	if o.CrostonAlpha == 0 {
		return DefaultCrostonAlpha
	}
	return o.CrostonAlpha
}

// Score is one method's backtest result. MASE is the mean absolute error over every origin and step,
// scaled by the in-sample mean absolute one-step naive error of the training part (Hyndman & Koehler
// 2006): below 1 beats the naive forecast. Bias is the mean error (forecast - actual) on the same scale:
// positive over-forecasts. Err says why a method could not be scored.
type Score struct {
	Method Method  `json:"method"`
	MASE   float64 `json:"mase"`
	Bias   float64 `json:"bias"`
	Err    string  `json:"error,omitempty"`
}

// Backtest reports how Select chose. Origins is 0 when the series was too short to backtest (Note says
// why and how the method was chosen instead). Baseline scores a flat moving average of the last MAWindow
// periods at each origin, for comparison only.
type Backtest struct {
	Chosen   Method  `json:"chosen"`
	Origins  int     `json:"origins"`
	Horizon  int     `json:"horizon"`
	Train    int     `json:"train"`
	Scale    float64 `json:"scale"`
	Scores   []Score `json:"scores"`
	Baseline Score   `json:"baseline"`
	Note     string  `json:"note,omitempty"`
}

// Select chooses a method for y by rolling-origin backtest and returns it fitted on all of y.
//
// The parameters of each candidate are fitted once on the periods before the first origin; the origin
// then rolls forward Step periods at a time, each time filtering the states through the data up to the
// origin with those parameters and forecasting Horizon periods (a rolling origin without recalibration,
// Tashman 2000: it keeps the cost to two fits per method while no forecast sees its own future). The
// lowest MASE wins; ties go to the smaller absolute bias, then to the earlier candidate.
func Select(y []float64, opts Options) (Model, Backtest, error) {
	opts = opts.withDefaults()
	if err := checkSeries(y, opts.Name, SES); err != nil {
		return Model{}, Backtest{}, err
	}
	n := len(y)
	origins := opts.Origins
	first := n - opts.Horizon - (origins-1)*opts.Step
	for origins > 0 && first < opts.MinTrain {
		origins--
		first += opts.Step
	}
	bt := Backtest{Origins: origins, Horizon: opts.Horizon}
	if origins == 0 {
		return selectShort(y, opts, bt)
	}
	train := y[:first]
	bt.Train = first
	bt.Scale = maseScale(train)
	chosen := -1
	for _, method := range opts.Candidates {
		sc := Score{Method: method}
		m, err := Fit(method, train, opts)
		if err != nil {
			sc.Err = err.Error()
			sc.MASE, sc.Bias = math.Inf(1), math.Inf(1)
			bt.Scores = append(bt.Scores, sc)
			continue
		}
		sc.MASE, sc.Bias = score(y, first, origins, opts, bt.Scale, func(hist []float64, h int) []float64 {
			return means(m.refilter(hist, opts).Forecast(h))
		})
		bt.Scores = append(bt.Scores, sc)
		if chosen < 0 || better(sc, bt.Scores[chosen]) {
			chosen = len(bt.Scores) - 1
		}
	}
	bt.Baseline = Score{Method: "moving_average"}
	bt.Baseline.MASE, bt.Baseline.Bias = score(y, first, origins, opts, bt.Scale, func(hist []float64, h int) []float64 {
		w := hist[max(0, len(hist)-opts.MAWindow):]
		var s float64
		for _, v := range w {
			s += v
		}
		out := make([]float64, h)
		for i := range out {
			out[i] = s / float64(len(w))
		}
		return out
	})
	if chosen < 0 {
		return Model{}, bt, fmt.Errorf("forecast: series %q: no candidate method could be fitted: %v", opts.Name, bt.Scores)
	}
	bt.Chosen = bt.Scores[chosen].Method
	m, err := Fit(bt.Chosen, y, opts)
	return m, bt, err
}

func better(a, b Score) bool {
	if math.Abs(a.MASE-b.MASE) > 1e-9*math.Max(1, math.Abs(b.MASE)) {
		return a.MASE < b.MASE
	}
	return math.Abs(a.Bias) < math.Abs(b.Bias)
}

// score runs the rolling origins: fc gives h forecasts from the history before an origin.
func score(y []float64, first, origins int, opts Options, scale float64, fc func(hist []float64, h int) []float64) (mase, bias float64) {
	var sumAbs, sumErr float64
	k := 0
	for i := 0; i < origins; i++ {
		o := first + i*opts.Step
		h := min(opts.Horizon, len(y)-o)
		f := fc(y[:o], h)
		for j := 0; j < h; j++ {
			e := f[j] - y[o+j]
			sumAbs += math.Abs(e)
			sumErr += e
			k++
		}
	}
	return sumAbs / float64(k) / scale, sumErr / float64(k) / scale
}

// maseScale is the mean absolute one-step naive error of the training data; a constant training series
// falls back to its mean absolute value, and an all-zero one to 1, so that MASE stays finite.
func maseScale(y []float64) float64 {
	var s float64
	for i := 1; i < len(y); i++ {
		s += math.Abs(y[i] - y[i-1])
	}
	if s > 0 {
		return s / float64(len(y)-1)
	}
	for _, v := range y {
		s += math.Abs(v)
	}
	if s > 0 {
		return s / float64(len(y))
	}
	return 1
}

// refilter returns the model with its states run through hist with its fitted parameters and initial
// states unchanged (nothing is re-estimated).
func (m Model) refilter(hist []float64, opts Options) Model {
	switch m.Method {
	case SES, HoltDamped:
		m.runETS(hist)
	case Croston, SBA:
		r, _ := fitCroston(m.Method, hist, m.Alpha, opts.Name)
		r.MSE, r.Sigma2 = m.MSE, m.Sigma2
		return r
	case TSB:
		_, m.Level, m.Prob = tsbRun(hist, m.Alpha, m.Beta, m.L0, m.B0)
		m.N = len(hist)
	case SESWeekly:
		// SES (no trend: Phi, Beta and B0 are zero) on the history adjusted by the fitted profile; N
		// places the forecast's weekdays. Closed days before the first open one carry the initial
		// level (the fit carried the series' mean weekday there; this changes nothing after it).
		m.runETS(deseason(hist, m.Season, m.L0))
	}
	return m
}

func means(p []Point) []float64 {
	out := make([]float64, len(p))
	for i := range p {
		out[i] = p[i].Mean
	}
	return out
}

// minSelect is the fewest values Select forecasts from.
const minSelect = 4

// selectShort chooses without a backtest: SBA when demand is intermittent (more than a third of the
// periods are zero; SBA is the least biased of the Croston family), SES otherwise.
func selectShort(y []float64, opts Options, bt Backtest) (Model, Backtest, error) {
	// Whatever the method: SES would refuse so few values, Croston and SBA would not.
	if len(y) < minSelect {
		return Model{}, bt, fmt.Errorf("forecast: series %q: needs at least %d values to forecast, got %d", opts.Name, minSelect, len(y))
	}
	zeros := 0
	for _, v := range y {
		if v == 0 {
			zeros++
		}
	}
	bt.Chosen = SES
	if 3*zeros > len(y) {
		bt.Chosen = SBA
	}
	bt.Note = fmt.Sprintf("%d periods are too few to backtest (need %d training and %d forecast periods): chose %s by the share of zero periods (%d of %d)",
		len(y), opts.MinTrain, opts.Horizon, bt.Chosen, zeros, len(y))
	m, err := Fit(bt.Chosen, y, opts)
	return m, bt, err
}
