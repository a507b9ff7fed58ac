package commerce

import (
	"math"
	"strings"
	"testing"

	"github.com/gemba-io/gemba/hub/ingest/commerce"
)

// InitialDaysOf gives one SKU its own opening cover: its opening count is that many days of its
// mean demand, the others keep InitialDays; an unknown SKU or a negative cover is refused by name.
func TestInitialDaysOf(t *testing.T) {
	base := newSim(t, Config{Plant: hourly(3), Start: monday, InitialDays: 10, SlowMovers: -1})
	s := newSim(t, Config{Plant: hourly(3), Start: monday, InitialDays: 10, SlowMovers: -1,
		InitialDaysOf: map[string]float64{"A-100": 90, "C-120": 3}})
	open := func(s *Sim) map[string]float64 {
		out := map[string]float64{}
		for _, ev := range s.Step() {
			if c, ok := ev.(commerce.Snapshot); ok {
				out[c.SKU] = c.OnHand
			}
		}
		return out
	}
	b, o := open(base), open(s)
	for sku, ratio := range map[string]float64{"A-100": 9, "C-120": 0.3, "B-110": 1} {
		if got := o[sku] / b[sku]; math.Abs(got-ratio) > 0.001 {
			t.Errorf("%s opens with %v units, %v × the %v of 10 days: want × %v", sku, o[sku], got, b[sku], ratio)
		}
	}
	_, err := New(Config{InitialDaysOf: map[string]float64{"Z-999": 3}})
	if err == nil || !strings.Contains(err.Error(), `"Z-999" is not a SKU of the plant`) {
		t.Errorf("unknown SKU: %v", err)
	}
	_, err = New(Config{InitialDaysOf: map[string]float64{"A-100": -1}})
	if err == nil || !strings.Contains(err.Error(), "initial_days_of[A-100] -1") {
		t.Errorf("negative cover: %v", err)
	}
}
