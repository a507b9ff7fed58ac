package forecast

import (
	"math"
	"reflect"
	"strings"
	"testing"
)

// A steady upward trend must go to damped Holt: SES lags it at every origin.
func TestSelectPicksHoltForATrend(t *testing.T) {
	y := make([]float64, 200)
	for i := range y {
		y[i] = 10 + 0.5*float64(i) + 2*math.Sin(2.3*float64(i))
	}
	m, bt, err := Select(y, Options{Name: "trend"})
	if err != nil {
		t.Fatal(err)
	}
	if bt.Chosen != HoltDamped || m.Method != HoltDamped {
		t.Fatalf("chose %s, want holt_damped; scores %+v", bt.Chosen, bt.Scores)
	}
	if bt.Origins != 6 || bt.Train != 200-14-5*7 || len(bt.Scores) != len(AllMethods) {
		t.Errorf("backtest shape: %+v", bt)
	}
	ses := bt.Scores[0]
	if !(bt.Scores[1].MASE < ses.MASE) || !(ses.Bias < 0) {
		t.Errorf("want holt MASE below SES's and SES biased low on a rising series: %+v", bt.Scores)
	}
	if m.N != len(y) {
		t.Errorf("final model fitted on %d values, want all %d", m.N, len(y))
	}
}

// No forecast may see its own future: the parameters come from the data before the first origin, so a
// shift of everything after it changes the scores (a bias appears) but not the training fit.
func TestBacktestFitsOnTrainingPartOnly(t *testing.T) {
	y := trendSeries(150)
	_, a, err := Select(y, Options{Candidates: []Method{SES}})
	if err != nil {
		t.Fatal(err)
	}
	train, _ := Fit(SES, y[:a.Train], Options{})
	z := append([]float64(nil), y...)
	for i := a.Train; i < len(z); i++ {
		z[i] += 1000 // a future the fit must not have seen
	}
	train2, _ := Fit(SES, z[:a.Train], Options{})
	if !reflect.DeepEqual(train, train2) {
		t.Fatalf("training fit changed with data after the first origin")
	}
	_, b, err := Select(z, Options{Candidates: []Method{SES}})
	if err != nil {
		t.Fatal(err)
	}
	if !(b.Scores[0].Bias < a.Scores[0].Bias) {
		t.Errorf("a jump after the first origin must show as under-forecast bias: before %v after %v", a.Scores[0].Bias, b.Scores[0].Bias)
	}
}

func TestSelectShortSeriesFallsBack(t *testing.T) {
	m, bt, err := Select([]float64{0, 2, 0, 0, 3, 0, 0, 1, 0, 0}, Options{Name: "new"})
	if err != nil {
		t.Fatal(err)
	}
	if bt.Origins != 0 || bt.Chosen != SBA || m.Method != SBA || !strings.Contains(bt.Note, "too few to backtest") {
		t.Errorf("short intermittent series: model %s backtest %+v", m.Method, bt)
	}
	_, bt, err = Select([]float64{4, 5, 6, 5, 4, 5}, Options{})
	if err != nil || bt.Chosen != SES {
		t.Errorf("short smooth series: chose %s, err %v", bt.Chosen, err)
	}
	if _, _, err := Select([]float64{1, 2}, Options{Name: "tiny"}); err == nil || !strings.Contains(err.Error(), `series "tiny": needs at least 4 values`) {
		t.Errorf("two values: %v", err)
	}
}

// A method that cannot fit is reported with its reason and never chosen.
func TestSelectReportsUnfittableCandidates(t *testing.T) {
	y := trendSeries(100)
	y[3] = -1 // negative demand: fine for SES, refused by Croston
	_, bt, err := Select(y, Options{Candidates: []Method{Croston, SES}})
	if err != nil {
		t.Fatal(err)
	}
	if bt.Chosen != SES || !strings.Contains(bt.Scores[0].Err, "negative") {
		t.Errorf("want croston refused and ses chosen: %+v", bt)
	}
}

func TestDaysOfCover(t *testing.T) {
	fc := []Point{{Mean: 2}, {Mean: 4}, {Mean: -1}, {Mean: 3}}
	cases := []struct {
		stock, want float64
	}{
		{0, 0},
		{1, 0.5},
		{2, 1},
		{4, 1.5},
		{6, 2},     // 2+4, then a negative mean counts as zero
		{7.5, 3.5}, // 6 used, 1.5 of the 3 on day 4
		{12, 5},    // beyond the horizon the last mean (3) goes on: 9 used after 4 days, 3 more is one day
	}
	for _, c := range cases {
		near(t, "cover", DaysOfCover(c.stock, fc), c.want, 1e-12)
	}
	if d := DaysOfCover(5, []Point{{Mean: 1}, {Mean: 0}}); !math.IsInf(d, 1) {
		t.Errorf("no demand at the end of the horizon: cover %v, want +Inf", d)
	}
}

// Out of sample, the chosen models must beat the flat 28-day moving average (the baseline) in
// total absolute error over the last 28 days of 300 seeded series they never saw.
func TestChosenBeatsMovingAverageOutOfSample(t *testing.T) {
	var chosen, ma float64
	for i, y := range benchSeries(300, 365) {
		train, test := y[:len(y)-28], y[len(y)-28:]
		m, _, err := Select(train, Options{})
		if err != nil {
			t.Fatalf("series %d: %v", i, err)
		}
		fc := m.Forecast(len(test))
		var avg float64
		for _, v := range train[len(train)-28:] {
			avg += v / 28
		}
		for j, v := range test {
			chosen += math.Abs(fc[j].Mean - v)
			ma += math.Abs(avg - v)
		}
	}
	t.Logf("28-day holdout, total absolute error: chosen %.1f, moving average %.1f", chosen, ma)
	if !(chosen < ma) {
		t.Errorf("chosen models' holdout error %.1f not below the moving average's %.1f", chosen, ma)
	}
}

// Fewer than 4 values is an error whatever the share of zeros: a series of a day or two (a new SKU, a
// stream trimmed by its retention) says nothing about demand, and an intermittent-looking one used to
// get SBA's forecast (0 for [0], 2.4 a day for [0, 5]) while a smooth one of the same length failed.
func TestSelectTooShortIsAnErrorWhateverTheZeros(t *testing.T) {
	for _, y := range [][]float64{{0}, {0, 5}, {0, 0, 5}, {5, 5, 5}} {
		m, bt, err := Select(y, Options{Name: "new sku"})
		if err == nil || !strings.Contains(err.Error(), `series "new sku"`) || !strings.Contains(err.Error(), "at least 4 values") {
			t.Errorf("%v: chose %s (forecast %v), err %v; want an error naming the series and the 4 values needed", y, bt.Chosen, m.Forecast(1), err)
		}
	}
}
