package quality

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// A sensor that sticks at one value drifts from its reference window; once it has been stuck
// longer than reference_lag + window the reference is stuck too, and two windows of the same
// single value compare as identical (KS D 0). That is no recovery: the sensor stays in breach (the
// promotions reading it stay blocked) until its value moves. A sensor that was always constant
// (never in breach) is not made one by the windows (it is stuck once unchanged for stuck_after).
func TestStuckSensorStaysStuck(t *testing.T) {
	cfg := testConfig()
	f := &folds{m: open(t, jetStream(t), cfg, nil, nil)}
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	r := rand.New(rand.NewPCG(9, 10))
	const stuck, constant = "line1.oven.temp", "line2.oven.temp"
	var at time.Time
	for i := range 4 * 120 { // every 30 s for 4 hours of noise
		at = t0.Add(time.Duration(i) * 30 * time.Second)
		f.value(at, stuck, 10+r.NormFloat64())
		f.value(at, constant, 1)
	}
	for i := range 3 * 120 { // then 3 hours of one value (reference_lag 2h + window 1h = 3h)
		at = at.Add(30 * time.Second)
		f.value(at, stuck, 11.5)
		f.value(at, constant, 1)
		if i == 90 {
			if q, _ := f.m.Status("temp", stuck); !q.Drifting {
				t.Fatalf("a sensor stuck for 45 minutes is not drifting: %+v", q)
			}
		}
	}
	for range 2 * 120 { // still stuck, 2 hours past reference_lag + window
		at = at.Add(30 * time.Second)
		f.value(at, stuck, 11.5)
		f.value(at, constant, 1)
		if q, _ := f.m.Status("temp", stuck); !q.Drifting {
			t.Fatalf("a sensor stuck at one value for %s reads recovered (its reference window is stuck too): %+v",
				at.Sub(t0.Add(4*time.Hour)), q)
		}
	}
	// A sensor constant from the start is not judged by drift (its windows agree) but stuck once
	// unchanged for stuck_after (TestStuckFromTheStartOfTheLog).
	if q, _ := f.m.Status("temp", constant); !q.Stuck || strings.Contains(strings.Join(q.Reasons, "; "), "drifting:") {
		t.Errorf("a sensor constant from the start: want stuck, not drifting by its windows: %+v", q)
	}
	for range 2 * 120 { // it moves again: judged as before, against the (stuck) reference first
		at = at.Add(30 * time.Second)
		f.value(at, stuck, 11.5+r.NormFloat64())
	}
	for range 4 * 120 { // and once the reference window moves too, it recovers
		at = at.Add(30 * time.Second)
		f.value(at, stuck, 11.5+r.NormFloat64())
	}
	if q, _ := f.m.Status("temp", stuck); q.Drifting {
		t.Errorf("a sensor moving again for 6 hours is still drifting: %+v", q)
	}
}
