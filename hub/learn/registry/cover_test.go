package registry

import (
	"math"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub/learn/demand"
	"github.com/gemba-io/gemba/hub/learn/forecast"
)

func points(mean func(j int) float64, sd float64, n int) []forecast.Point {
	out := make([]forecast.Point, n)
	for j := range out {
		m := mean(j)
		out[j] = forecast.Point{Mean: m}
		if sd > 0 {
			out[j] = forecast.Point{Mean: m, Lo80: m - z80*sd, Hi80: m + z80*sd, Lo95: m - 2*sd, Hi95: m + 2*sd, HasInterval: true}
		}
	}
	return out
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

// Cover counts from now: the forecast starts at the end of the data, the part of today already gone
// is not demand any more, channels add up, and the 80 % interval bounds the days.
func TestCoverSemantics(t *testing.T) {
	to := monday.AddDate(0, 0, 10)
	rising := func(j int) float64 { return 10 * float64(j+1) } // 10, 20, 30, ...
	s := &Set{Version: "v1", To: to, Location: "UTC", Horizon: 28, Series: []Model{
		{Key: demand.Key{SKU: "A", Site: "s1"}, Model: forecast.Model{Method: forecast.HoltDamped}, Forecast: points(rising, 5, 28)},
		{Key: demand.Key{SKU: "B", Site: "s1", Channel: "web"}, Model: forecast.Model{Method: forecast.SES}, Forecast: points(func(int) float64 { return 10 }, 3, 28)},
		{Key: demand.Key{SKU: "B", Site: "s1", Channel: "retail"}, Model: forecast.Model{Method: forecast.SES}, Forecast: points(func(int) float64 { return 5 }, 4, 28)},
		{Key: demand.Key{SKU: "C", Site: "s1"}, Model: forecast.Model{Method: forecast.Croston}, Forecast: points(func(int) float64 { return 2 }, 0, 28)},
		{Key: demand.Key{SKU: "Z", Site: "s1"}, Model: forecast.Model{Method: forecast.SES}, Forecast: points(func(int) float64 { return 0 }, 1, 28)},
	}}
	ix := NewIndex(s)
	cases := []struct {
		name     string
		sku      string
		pos      float64
		now      time.Time
		days     float64
		mean     float64
		interval bool
		stale    bool
	}{
		{"at the forecast's start", "A", 25, to, 1 + 15.0/20, 145, true, false},
		{"half of the first day gone", "A", 25, to.Add(12 * time.Hour), 0.5 + 1, 145, true, false},
		{"a day later: the forecast moves on", "A", 25, to.AddDate(0, 0, 1), 1 + 5.0/30, 150, true, false},
		{"before the forecast starts", "A", 25, to.Add(-36 * time.Hour), 1 + 15.0/20, 145, true, false},
		{"channels add up", "B", 45, to, 3, 15, true, false},
		{"no interval (Croston)", "C", 9, to, 4.5, 2, false, false},
		{"past the horizon: the last day goes on", "A", 560, to.AddDate(0, 0, 40), 2, 280, true, true},
		{"nothing on hand", "A", 0, to, 0, 145, true, false},
	}
	for _, c := range cases {
		got, ok := ix.Cover(c.sku, "s1", c.pos, c.now)
		if !ok {
			t.Fatalf("%s: no cover", c.name)
		}
		if !near(got.Days, c.days) || !near(got.DailyMean, c.mean) || got.HasInterval != c.interval || got.Stale != c.stale || got.Version != "v1" {
			t.Errorf("%s: days %v mean %v interval %v stale %v; want %v, %v, %v, %v", c.name, got.Days, got.DailyMean, got.HasInterval,
				got.Stale, c.days, c.mean, c.interval, c.stale)
		}
		if c.days > 0 && !got.StockOut.Equal(c.now.Add(time.Duration(c.days*24*float64(time.Hour)))) {
			t.Errorf("%s: stock-out %v, want now + %v days", c.name, got.StockOut, c.days)
		}
		if c.interval && c.pos > 0 && !(got.LowDays < got.Days && got.Days < got.HighDays) {
			t.Errorf("%s: low %v, days %v, high %v: want low < days < high", c.name, got.LowDays, got.Days, got.HighDays)
		}
		if !c.interval && (got.LowDays != got.Days || got.HighDays != got.Days) {
			t.Errorf("%s: without an interval low %v and high %v should equal days %v", c.name, got.LowDays, got.HighDays, got.Days)
		}
	}
	// B's channels: sd sqrt(3² + 4²) = 5, so the top of the interval is 15 + 5·z80 a day.
	b, _ := ix.Cover("B", "s1", 45, to)
	if !near(b.LowDays, 45/(15+5*z80)) || len(b.Methods) != 2 {
		t.Errorf("B: low days %v, want %v; methods %v", b.LowDays, 45/(15+5*z80), b.Methods)
	}
	// Never any demand: infinite cover and no stock-out date.
	z, _ := ix.Cover("Z", "s1", 10, to)
	if !math.IsInf(z.Days, 1) || !z.StockOut.IsZero() {
		t.Errorf("no demand: days %v, stock-out %v", z.Days, z.StockOut)
	}
	if _, ok := ix.Cover("A", "other-site", 10, to); ok {
		t.Error("a cover for a site without a forecast")
	}
	var nilLive *Live
	if _, ok := nilLive.Cover("A", "s1", 10, to); ok {
		t.Error("a cover with no live state")
	}
}

// The forecast's step j is the calendar day To + j in the set's time zone, whatever the length of
// the days in between: across a DST change (a 23 or 25 hour day) now still falls on its own day's
// step, and the part of that day gone is a share of that day's length.
func TestCoverFollowsCalendarDaysAcrossDST(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	rising := func(j int) float64 { return 10 * float64(j+1) } // 10, 20, 30, ...
	for _, c := range []struct {
		name string
		to   time.Time // the forecast's first day (a Saturday before the change)
		now  time.Time
		step int     // the calendar day now falls on, counted from to
		frac float64 // the share of that day gone
	}{
		// Clocks go forward on Sunday 28 March 2027: that day has 23 hours.
		{"spring: just after Monday's midnight", time.Date(2027, 3, 27, 0, 0, 0, 0, berlin), time.Date(2027, 3, 29, 0, 30, 0, 0, berlin), 2, 0.5 / 24},
		{"spring: Sunday evening", time.Date(2027, 3, 27, 0, 0, 0, 0, berlin), time.Date(2027, 3, 28, 23, 0, 0, 0, berlin), 1, 22.0 / 23},
		// Clocks go back on Sunday 31 October 2027: that day has 25 hours.
		{"autumn: Sunday just before midnight", time.Date(2027, 10, 30, 0, 0, 0, 0, berlin), time.Date(2027, 10, 31, 23, 30, 0, 0, berlin), 1, 24.5 / 25},
		{"autumn: Monday morning", time.Date(2027, 10, 30, 0, 0, 0, 0, berlin), time.Date(2027, 11, 1, 6, 0, 0, 0, berlin), 2, 6.0 / 24},
	} {
		s := &Set{Version: "v1", To: c.to, Location: "Europe/Berlin", Horizon: 28, Series: []Model{
			{Key: demand.Key{SKU: "A", Site: "s1"}, Model: forecast.Model{Method: forecast.SES}, Forecast: points(rising, 0, 28)}}}
		got, ok := NewIndex(s).Cover("A", "s1", 100, c.now)
		if !ok {
			t.Fatalf("%s: no cover", c.name)
		}
		// What is left of today's demand, then whole days.
		left, want := 100.0, 0.0
		for j := c.step; ; j++ {
			length := 1.0
			if j == c.step {
				length = 1 - c.frac
			}
			if d := rising(j); d*length >= left {
				want += left / d
				break
			} else {
				left -= d * length
				want += length
			}
		}
		if !near(got.Days, want) {
			t.Errorf("%s: days %v, want %v (step %d, %.4f of the day gone)", c.name, got.Days, want, c.step, c.frac)
		}
	}
}

// A slow mover with plenty on hand covers more days than a time.Duration can hold (~292 years): its
// stock-out date must not wrap around into the past, where it would read as already out of stock.
func TestCoverStockOutBeyondDurationRange(t *testing.T) {
	to := monday.AddDate(0, 0, 10)
	s := &Set{Version: "v1", To: to, Location: "UTC", Horizon: 28, Series: []Model{
		{Key: demand.Key{SKU: "slow", Site: "s1"}, Model: forecast.Model{Method: forecast.SBA}, Forecast: points(func(int) float64 { return 0.001 }, 0, 28)}}}
	got, ok := NewIndex(s).Cover("slow", "s1", 200, to)
	if !ok {
		t.Fatal("no cover")
	}
	if !near(got.Days, 200000) {
		t.Fatalf("days %v, want 200000", got.Days)
	}
	if !got.StockOut.IsZero() && !got.StockOut.After(to) {
		t.Errorf("stock-out %v for %v days of cover from %v: in the past", got.StockOut, got.Days, to)
	}
}
