package forecast

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// weekly is daily demand with a shop's week: 10 a weekday, 30 on day 5, nothing on day 6.
func weekly(n int, seed uint64) []float64 {
	rng := rand.New(rand.NewPCG(seed, seed))
	profile := [Week]float64{10, 10, 10, 10, 10, 30, 0}
	y := make([]float64, n)
	for t := range y {
		y[t] = math.Max(0, profile[t%Week]+rng.NormFloat64()*1.5)
		if profile[t%Week] == 0 {
			y[t] = 0
		}
	}
	return y
}

// On weekly demand the weekly model is chosen over the flat ones, and its forecast follows the week:
// the busy day about three times a weekday, the closed day about nothing, each continuing the
// series' own calendar.
func TestWeeklyProfile(t *testing.T) {
	y := weekly(120, 3) // 120 = 17 weeks + 1 day: the forecast starts on day 1
	m, bt, err := Select(y, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if m.Method != SESWeekly {
		t.Fatalf("chose %s (scores %+v)", m.Method, bt.Scores)
	}
	var ses, weeklyScore float64
	for _, s := range bt.Scores {
		switch s.Method {
		case SES:
			ses = s.MASE
		case SESWeekly:
			weeklyScore = s.MASE
		}
	}
	if !(weeklyScore < ses/2) {
		t.Errorf("weekly MASE %v, SES %v: the profile should at least halve the error", weeklyScore, ses)
	}
	fc := m.Forecast(Week)
	for i, p := range fc {
		d := (len(y) + i) % Week
		want := [Week]float64{10, 10, 10, 10, 10, 30, 0}[d]
		if math.Abs(p.Mean-want) > 2 || !p.HasInterval {
			t.Errorf("step %d (weekday %d): %+v, want about %v with an interval", i, d, p, want)
		}
	}
	if p := fc[(Week+5-len(y)%Week)%Week]; !(p.Hi80-p.Lo80 > 0) {
		t.Errorf("the busy day has no interval width: %+v", p)
	}
}

func TestWeeklyNeedsTwoWeeks(t *testing.T) {
	if _, err := Fit(SESWeekly, weekly(13, 1), Options{Name: "new sku"}); err == nil || !strings.Contains(err.Error(), `"new sku"`) {
		t.Errorf("13 days: %v", err)
	}
	if _, err := Fit(SESWeekly, weekly(14, 1), Options{}); err != nil {
		t.Errorf("14 days: %v", err)
	}
}

// The backtest runs each method's states through the data up to every origin. With a flat week
// (every weekday alike, so the profile is all ones) ses_weekly is SES, and both must score alike,
// whatever the step between origins; a level that jumps after the training part shows whether
// ses_weekly's level follows the data or stays where the training part left it.
func TestSESWeeklyBacktestFollowsTheData(t *testing.T) {
	weeks := []float64{10, 12, 9, 11, 10, 30, 33, 29, 31, 30, 32, 28}
	var y []float64
	for _, w := range weeks {
		for range Week {
			y = append(y, w)
		}
	}
	// Steps of 7 (training on days 0-34) and of 5 (horizon 3: training on days 0-55): whole weeks, so
	// the profile stays flat.
	for _, o := range []Options{{Step: 7}, {Step: 5, Horizon: 3}} {
		o.Name, o.Candidates = "jump", []Method{SES, SESWeekly}
		step := o.Step
		_, bt, err := Select(y, o)
		if err != nil {
			t.Fatal(err)
		}
		ses, weekly := bt.Scores[0], bt.Scores[1]
		if math.Abs(ses.MASE-weekly.MASE) > 1e-6*ses.MASE || math.Abs(ses.Bias-weekly.Bias) > 1e-6*ses.MASE {
			t.Errorf("step %d: ses scores %+v, ses_weekly with a flat profile %+v", step, ses, weekly)
		}
	}
}
