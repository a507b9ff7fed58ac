package features

import (
	"testing"
	"time"
)

// A clean restart of a few seconds while a counter is quiet (a machine standing, its source
// reporting by exception) leaves the agent watching throughout: the first window after the
// standstill is complete, as it is without the restart.
func TestQuietCounterShortCleanRestart(t *testing.T) {
	h := newHarness(t, parseConfig(t, `
features:
  - {signal: press.parts, kind: counter, window: 1m, compute: [delta]}
`))
	h.add(cnt("press.parts", h.clock.Now(), 100))
	for i := range 20 {
		h.clock.Add(time.Minute)
		h.e.Tick()
		if i == 10 {
			h.restart(true)
			h.clock.Add(5 * time.Second)
		}
	}
	h.clock.Add(30 * time.Second)
	h.add(cnt("press.parts", h.clock.Now(), 104))
	h.clock.Add(time.Minute)
	h.add(cnt("press.parts", h.clock.Now(), 105))
	for _, f := range h.features() {
		if f.Partial {
			t.Fatalf("partial window although the agent watched throughout: %+v", f)
		}
	}
}

// A clean stop longer than a window is downtime: the windows it covers are partial, the quiet
// counter's windows after the restart are complete at once, and the window of its first sample
// after the restart is partial (its increase is measured from the value before the stop, so it
// includes whatever the machine made while nobody watched).
func TestQuietCounterLongCleanStop(t *testing.T) {
	h := newHarness(t, parseConfig(t, `
features:
  - {signal: parts, kind: counter, window: 1m, compute: [delta]}
`))
	h.add(cnt("parts", h.clock.Now(), 100))
	for range 10 {
		h.clock.Add(time.Minute)
		h.e.Tick()
	}
	h.restartAfter(true, 3*time.Minute) // stopped from 10:00 to 13:00
	for range 7 {
		h.clock.Add(time.Minute)
		h.e.Tick()
	}
	h.clock.Add(30 * time.Second)
	h.add(cnt("parts", h.clock.Now(), 104)) // 20:30
	for range 2 {
		h.clock.Add(time.Minute)
		h.e.Tick()
	}
	fs := h.features()
	for m := 0.0; m < 21; m++ {
		f := one(t, fs, "parts", "delta", m*60)
		if want := m >= 10 && m < 13 || m == 20; f.Partial != want {
			t.Errorf("window at %g min: partial=%v, want %v (%+v)", m, f.Partial, want, f)
		}
	}
	if f := one(t, fs, "parts", "delta", 20*60); f.Value != 4 {
		t.Errorf("first window after the standstill: delta %v, want 4", f.Value)
	}
}

// A crash is downtime whatever its length: the engine restarts from the last periodic checkpoint,
// and what was folded after it is lost. The windows from that checkpoint to the restart (the
// signal's event time extrapolated by its silence) are partial even when the process was back
// within seconds; the windows after the restart are complete.
func TestQuietCounterShortCrashRestart(t *testing.T) {
	h := newHarness(t, parseConfig(t, `
features:
  - {signal: parts, kind: counter, window: 1m, compute: [delta]}
`))
	h.add(cnt("parts", h.clock.Now(), 100))
	for range 10 {
		h.clock.Add(time.Minute)
		h.e.Tick()
	}
	if err := h.e.Checkpoint(); err != nil { // 10:00
		t.Fatal(err)
	}
	h.clock.Add(20 * time.Second)
	at := h.clock.Now()
	h.add(cnt("parts", at, 103)) // 10:20, lost with the crash
	h.clock.Add(20 * time.Second)
	h.restartAfter(false, 5*time.Second) // dies at 10:40, back at 10:45
	h.clock.Add(time.Second)
	h.add(cnt("parts", at, 103)) // the collector sends the current value again, with its time
	for range 5 {
		h.clock.Add(time.Minute)
		h.e.Tick()
	}
	fs := h.features()
	for m := 0.0; m < 15; m++ {
		f := one(t, fs, "parts", "delta", m*60)
		if want := m == 10; f.Partial != want {
			t.Errorf("window at %g min: partial=%v, want %v (%+v)", m, f.Partial, want, f)
		}
	}
	if f := one(t, fs, "parts", "delta", 10*60); f.Value != 3 {
		t.Errorf("window of the crash: delta %v, want 3", f.Value)
	}
}

// Clean stops shorter than a window add up over the windows they are charged to (open at the stop,
// or starting before the restart): two stops of 40 s while the 1-minute window at 10 min is open
// make it partial, as one stop of 80 s would; stops of 40 s in windows of their own do not.
func TestQuietCounterShortCleanStopsAddUp(t *testing.T) {
	h := newHarness(t, parseConfig(t, `
features:
  - {signal: parts, kind: counter, window: 1m, compute: [delta]}
`))
	h.add(cnt("parts", h.clock.Now(), 100))
	tick := func(to time.Duration) {
		for h.clock.Now().Sub(t0) < to {
			h.clock.Add(time.Second)
			h.e.Tick()
		}
	}
	tick(10*time.Minute + 5*time.Second)
	h.restartAfter(true, 40*time.Second) // 10:05 to 10:45
	tick(10*time.Minute + 50*time.Second)
	h.restartAfter(true, 40*time.Second) // 10:50 to 11:30
	tick(15*time.Minute + 10*time.Second)
	h.restartAfter(true, 40*time.Second) // 15:10 to 15:50
	tick(17*time.Minute + 10*time.Second)
	h.restartAfter(true, 40*time.Second) // 17:10 to 17:50
	tick(20 * time.Minute)
	h.add(cnt("parts", h.clock.Now(), 104)) // 20:00
	tick(22 * time.Minute)
	fs := h.features()
	for m := 0.0; m < 21; m++ {
		f := one(t, fs, "parts", "delta", m*60)
		if want := m == 10; f.Partial != want {
			t.Errorf("window at %g min: partial=%v, want %v (%+v)", m, f.Partial, want, f)
		}
	}
}

// The collector resends a counter's value unchanged since before the stop, with its old time (an
// OPC UA subscription sends every node's current value when it starts): that tells nothing about
// the downtime, so the window of the first newer sample, whose increase is measured from the
// value before the stop, is still partial.
func TestQuietCounterLongStopResend(t *testing.T) {
	h := newHarness(t, parseConfig(t, `
features:
  - {signal: parts, kind: counter, window: 1m, compute: [delta]}
`))
	for range 10 {
		h.clock.Add(time.Minute)
		h.e.Tick()
	}
	last := h.clock.Now()
	h.add(cnt("parts", last, 100))      // 10:00, its window open at the stop
	h.restartAfter(true, 3*time.Minute) // stopped from 10:00 to 13:00
	h.add(cnt("parts", last, 100))      // resent with its time
	for range 7 {
		h.clock.Add(time.Minute)
		h.e.Tick()
	}
	h.clock.Add(30 * time.Second)
	h.add(cnt("parts", h.clock.Now(), 104)) // 20:30
	for range 2 {
		h.clock.Add(time.Minute)
		h.e.Tick()
	}
	fs := h.features()
	for m := 10.0; m < 21; m++ {
		f := one(t, fs, "parts", "delta", m*60)
		if want := m < 13 || m == 20; f.Partial != want {
			t.Errorf("window at %g min: partial=%v, want %v (%+v)", m, f.Partial, want, f)
		}
	}
}
