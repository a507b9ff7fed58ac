package registry

import (
	"context"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub/ingest/commerce"
	"github.com/gemba-io/gemba/hub/learn/demand"
)

// A channel whose fit fails still sells: its demand must stay in the SKU × site's sum (as its
// plain moving average), or days of cover is overstated and the hub promotes an item that is short.
func TestFailedChannelCountsInCover(t *testing.T) {
	const days = 60
	ds, err := demand.New(demand.Options{From: monday, To: monday.AddDate(0, 0, days), ByChannel: true})
	if err != nil {
		t.Fatal(err)
	}
	sale := func(sku, ch string, d int, q float64) {
		ds.Add(commerce.Sale{OrderID: fmt.Sprintf("%s-%s-%d", sku, ch, d), Line: 1, SKU: sku, Site: "s1", Channel: ch,
			Quantity: q, UnitPrice: 1, Currency: "EUR", Time: monday.AddDate(0, 0, d).Add(10 * time.Hour)})
	}
	for d := range days {
		q := 9 + float64(d%2)*2 // 9, 11, 9, ...: 10 a day
		sale("A", "web", d, q)
		sale("B", "web", d, q)
		if d == 5 {
			sale("A", "retail", d, 2e100) // beyond what a series may hold: retail's fit fails
		} else {
			sale("A", "retail", d, q)
		}
		if d == days-2 {
			sale("B", "retail", d, math.NaN()) // B's retail has no usable recent day at all
		} else {
			sale("B", "retail", d, q)
		}
	}
	s, err := Fit(context.Background(), ds, FitOptions{By: "test", Horizon: 14})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Failed) != 2 {
		t.Fatalf("failed series: %+v, want A and B's retail", s.Failed)
	}
	ix := NewIndex(s)
	a, ok := ix.Cover("A", "s1", 100, s.To)
	if !ok {
		t.Fatal("no cover for A")
	}
	// web ~10 a day (fitted) + retail 10 a day (its moving average): 100 units last ~5 days, not ~10.
	if math.Abs(a.DailyMean-20) > 1 || math.Abs(a.Days-5) > 0.5 {
		t.Errorf("A: %.2f a day, %.2f days of cover; want ~20 a day (web's forecast + retail's moving average), ~5 days", a.DailyMean, a.Days)
	}
}

// TestFailedChannelCountsInCover's second half: the Cover says which channel fell back and why, and
// a channel without even a moving average marks the SKU × site's forecast incomplete.
func TestFailedChannelIsShown(t *testing.T) {
	const days = 60
	ds, err := demand.New(demand.Options{From: monday, To: monday.AddDate(0, 0, days), ByChannel: true})
	if err != nil {
		t.Fatal(err)
	}
	for d := range days {
		for _, sku := range []string{"A", "B"} {
			for _, ch := range []string{"web", "retail"} {
				q := 9 + float64(d%2)*2
				switch {
				case sku == "A" && ch == "retail" && d == 5:
					q = 2e100
				case sku == "B" && ch == "retail" && d == days-2:
					q = math.NaN()
				}
				ds.Add(commerce.Sale{OrderID: fmt.Sprintf("%s-%s-%d", sku, ch, d), Line: 1, SKU: sku, Site: "s1", Channel: ch,
					Quantity: q, UnitPrice: 1, Currency: "EUR", Time: monday.AddDate(0, 0, d).Add(10 * time.Hour)})
			}
		}
	}
	s, err := Fit(context.Background(), ds, FitOptions{By: "test", Horizon: 14, FallbackWindow: 7})
	if err != nil {
		t.Fatal(err)
	}
	ix := NewIndex(s)
	a, _ := ix.Cover("A", "s1", 100, s.To)
	if len(a.Fallbacks) != 1 || a.Fallbacks[0].Channel != "retail" || a.Fallbacks[0].Err == "" || a.Fallbacks[0].Days != 7 ||
		math.Abs(a.Fallbacks[0].Mean-10) > 1.01 || a.Fallbacks[0].Missing || a.Incomplete {
		t.Errorf("A's fallbacks: %+v, incomplete %v", a.Fallbacks, a.Incomplete)
	}
	if len(a.Methods) != 2 || a.Methods[1] != FallbackMethod || a.HasInterval {
		t.Errorf("A's methods %v, interval %v: want the fitted one and %s, no interval", a.Methods, a.HasInterval, FallbackMethod)
	}
	b, ok := ix.Cover("B", "s1", 100, s.To)
	if !ok || !b.Incomplete || len(b.Fallbacks) != 1 || !b.Fallbacks[0].Missing || b.Fallbacks[0].Channel != "retail" {
		t.Errorf("B (retail without a usable day): %+v, %v; want it marked incomplete", b, ok)
	}
	// The fallback is stored with the set and survives a load.
	data, err := s.encode()
	if err != nil {
		t.Fatal(err)
	}
	back, err := decode(s.Version, data)
	if err != nil {
		t.Fatal(err)
	}
	if a2, _ := NewIndex(back).Cover("A", "s1", 100, s.To); a2.DailyMean != a.DailyMean || len(a2.Fallbacks) != 1 {
		t.Errorf("after a load: %+v, before %+v", a2, a)
	}
}
