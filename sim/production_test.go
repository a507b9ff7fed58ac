package sim

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"
)

// The machines' own records equal what a reader of the published points derives: each step's
// counter increase under the SKU published with it, each step's seconds under the state published
// with it.
func TestProductionMatchesPublishedPoints(t *testing.T) {
	p := NewPlant(Config{Seed: 7, Lines: 2, MachinesPerLine: 3, Tick: time.Second, Speed: 30})
	dt := 30.0
	want := map[*Machine]Production{}
	for _, m := range p.Machines {
		want[m] = Production{Parts: map[string]int64{}, Seconds: map[string]float64{}}
	}
	const steps = 3000
	for range steps {
		before := map[*Machine]int64{}
		for _, m := range p.Machines {
			before[m] = m.Points[pParts].I
		}
		p.Step()
		for _, m := range p.Machines {
			w := want[m]
			if d := m.Points[pParts].I - before[m]; d != 0 {
				w.Parts[m.Points[pSKU].S] += d
			}
			w.Seconds[m.Points[pState].S] += dt
		}
	}
	skus, states := map[string]bool{}, map[string]bool{}
	for _, m := range p.Machines {
		got := m.Production()
		for k, v := range got.Parts {
			if v == 0 {
				delete(got.Parts, k) // a SKU that ran only through zero-part steps
			}
		}
		if !maps.Equal(got.Parts, want[m].Parts) {
			t.Errorf("%s parts: got %v, derived from the points %v", DeviceID(m), got.Parts, want[m].Parts)
		}
		if !maps.Equal(got.Seconds, want[m].Seconds) {
			t.Errorf("%s seconds: got %v, derived from the points %v", DeviceID(m), got.Seconds, want[m].Seconds)
		}
		var total float64
		for st, s := range got.Seconds {
			total += s
			states[st] = true
		}
		if total != steps*dt {
			t.Errorf("%s: %v seconds booked, want %v", DeviceID(m), total, steps*dt)
		}
		for sku := range got.Parts {
			skus[sku] = true
		}
	}
	// The run must exercise what the record is for: SKU changes and every state.
	if len(skus) < 6 || len(states) != 4 {
		t.Fatalf("run too uneventful to test the record: SKUs %v, states %v", skus, states)
	}
}

// Sim.Production is a consistent copy taken under the step lock while Run steps the plant.
func TestSimProductionWhileRunning(t *testing.T) {
	s, err := New(Options{Plant: Config{Seed: 3, Tick: time.Millisecond, Speed: 10}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = s.Run(ctx) })
	defer func() { cancel(); wg.Wait() }()
	dt := time.Millisecond.Seconds() * 10
	var last uint64
	for last < 200 {
		prod, steps := s.Production()
		if steps < last {
			t.Fatalf("steps went back from %d to %d", last, steps)
		}
		last = steps
		for id, p := range prod {
			var total float64
			for _, v := range p.Seconds {
				total += v
			}
			// Booked seconds are a sum of equal steps: compare with a rounding margin only.
			if diff := total - float64(steps)*dt; diff > 1e-9 || diff < -1e-9 {
				t.Fatalf("%s: %v seconds after %d steps of %v: not one step's state", id, total, steps, dt)
			}
			p.Parts["X-999"] = 1 // a copy: must not reach the simulator
		}
	}
	prod, _ := s.Production()
	for id, p := range prod {
		if _, ok := p.Parts["X-999"]; ok {
			t.Fatalf("%s: a caller's change reached the simulator's record", id)
		}
	}
}

// A Clock stamps the messages of each step: the ledger of acknowledged messages holds its times.
func TestClockStampsMessages(t *testing.T) {
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	broker, err := StartBroker(fmt.Sprintf("127.0.0.1:%d", port), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer broker.Close()
	base := time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC)
	now := base
	s, err := New(Options{Plant: Config{Seed: 1}, Broker: fmt.Sprintf("tcp://127.0.0.1:%d", port), ClientID: "clock-test",
		Clock: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	var want []int64
	for i := range 3 {
		now = base.Add(time.Duration(i) * 10 * time.Second)
		want = append(want, now.UnixMilli())
		s.Step()
	}
	s.Close() // waits for the acknowledgements
	if got := s.Ledger().Snapshot()["line2.press"].Times; !slices.Equal(got, want) {
		t.Fatalf("line2.press message times %v, want the clock's %v", got, want)
	}
}
