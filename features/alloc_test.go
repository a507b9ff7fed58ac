package features

import (
	"testing"
	"time"

	"github.com/gemba-io/gemba/signal"
)

// TestGaugePathZeroAlloc: folding gauge samples into open windows allocates nothing.
func TestGaugePathZeroAlloc(t *testing.T) {
	cfg := parseConfig(t, `
features:
  - {signal: "*", window: 1m, compute: [count, mean, min, max, stddev, first, last, twa, ewma]}
`)
	e, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	names := []string{"a", "b", "c", "d"}
	batch := make([]signal.Sample, 100)
	n := 0
	fill := func() {
		for j := range batch {
			batch[j] = signal.Sample{Signal: names[n%4], Time: t0.Add(time.Duration(n) * time.Millisecond), Value: signal.Float(float64(n % 13))}
			n++
		}
	}
	fill()
	e.Add(batch)
	allocs := testing.AllocsPerRun(200, func() { // 20,000 samples, 20 s of event time: one window
		fill()
		e.Add(batch)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per batch of %d gauge samples, want 0", allocs, len(batch))
	}
}

// TestFrozenClockPathZeroAlloc: samples of a counter and a state whose source time does not move
// fold into the point of that time without allocating (nor holding more memory).
func TestFrozenClockPathZeroAlloc(t *testing.T) {
	cfg := parseConfig(t, `
features:
  - {signal: parts, kind: counter, window: 1m, compute: [delta, resets]}
  - {signal: st, kind: state, window: 1m, compute: [transitions]}
`)
	e, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	states := []signal.Value{signal.String("run"), signal.String("idle")}
	batch := make([]signal.Sample, 100)
	n := 0
	fill := func() {
		for j := range batch {
			v := signal.Int(int64(n))
			if j%2 == 1 {
				v = states[n%2]
			}
			batch[j] = signal.Sample{Signal: []string{"parts", "st"}[j%2], Time: t0, Value: v}
			n++
		}
	}
	fill()
	e.Add(batch)
	allocs := testing.AllocsPerRun(200, func() {
		fill()
		e.Add(batch)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per batch of %d samples of one source time, want 0", allocs, len(batch))
	}
}
