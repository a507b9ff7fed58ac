package forecast

import "fmt"

// Week is the season of daily demand: shops sell by weekday.
const Week = 7

// minSeasonIndex: a weekday selling less than this share of the average is read as closed; its
// values say nothing about the level, which is carried over them instead of dividing by ~0.
const minSeasonIndex = 0.05

// fitSESWeekly fits SES to y with a multiplicative weekly profile: each weekday's mean over the
// average weekday mean (classical decomposition), the series divided by it, SES fitted to that, and
// the forecast multiplied back by the weekday of each step. Step t of y (and of the forecast, which
// continues y) is weekday t mod 7 of the series' own calendar. Needs two whole weeks.
func fitSESWeekly(y []float64, name string) (Model, error) {
	if len(y) < 2*Week {
		return Model{}, fmt.Errorf("forecast: series %q: %s needs at least %d values (two weeks), got %d", name, SESWeekly, 2*Week, len(y))
	}
	var sum, n [Week]float64
	for t, v := range y {
		sum[t%Week] += v
		n[t%Week]++
	}
	season := make([]float64, Week)
	var avg float64
	for d := range season {
		season[d] = sum[d] / n[d]
		avg += season[d] / Week
	}
	for d := range season {
		if avg > 0 {
			season[d] /= avg
		} else {
			season[d] = 1 // no demand at all: no profile
		}
	}
	m, err := fitSES(deseason(y, season, avg), name)
	if err != nil {
		return Model{}, err
	}
	m.Method, m.Season, m.N = SESWeekly, season, len(y)
	return m, nil
}

// deseason divides y by the weekly profile (step t is weekday t mod 7); a weekday read as closed
// repeats the previous adjusted value (carry before the first open day), so the level is carried
// over it.
func deseason(y, season []float64, carry float64) []float64 {
	ds := make([]float64, len(y))
	last := carry
	for t, v := range y {
		if s := season[t%Week]; s >= minSeasonIndex {
			last = v / s
		}
		ds[t] = last
	}
	return ds
}

// forecastSESWeekly is SES's forecast of the adjusted series, each step scaled by its weekday.
func (m Model) forecastSESWeekly(h int) []Point {
	out := make([]Point, h)
	for i := range out {
		s := m.Season[(m.N+i)%Week]
		v := m.Sigma2 * (1 + float64(i)*m.Alpha*m.Alpha)
		out[i] = withInterval(m.Level*s, v*s*s)
	}
	return out
}
