package features

import (
	"testing"
	"time"
)

// The wall clock set while the agent was stopped (a gateway without an RTC battery whose NTP
// steps the clock late) must not pass for downtime, nor hide it. The samples carry the source's
// time, which the step does not move.

// quietCounter folds one sample of a quiet counter at t0 and lets 10 minutes pass (in wall-clock
// terms) with the idle check closing its windows, the gateway's wall clock off from the source's
// time by off. Sample times are bounded as by the agent's defaults.
func quietCounter(t *testing.T, off time.Duration) *harness {
	t.Helper()
	h := &harness{t: t, cfg: parseConfig(t, `
features:
  - {signal: parts, kind: counter, window: 1m, compute: [delta]}
`), clock: &fakeClock{t: t0.Add(off), boot: "boot", since: time.Hour}, store: newMemStore(), bounds: DefaultTimeBounds()}
	h.start()
	h.add(cnt("parts", t0, 100))
	for range 10 {
		h.clock.Add(time.Minute)
		h.e.Tick()
	}
	return h
}

// finishQuiet lets time pass up to 20:30 source time, folds the counter's next value at 20:30 source time (off
// from the wall clock by off) and closes its window; it returns the windows from 0 to 20 min,
// each emitted exactly once.
func finishQuiet(t *testing.T, h *harness, off time.Duration) map[float64]bool {
	t.Helper()
	for h.clock.Now().Add(-off).Before(t0.Add(20*time.Minute + 30*time.Second)) {
		h.clock.Add(time.Second)
		h.e.Tick()
	}
	h.add(cnt("parts", t0.Add(20*time.Minute+30*time.Second), 104))
	for range 7 { // past its window's end with the clock behind by up to the skew allowed (5m)
		h.clock.Add(time.Minute)
		h.e.Tick()
	}
	fs := h.features()
	partial := map[float64]bool{}
	var sum float64
	for m := 0.0; m < 21; m++ {
		f := one(t, fs, "parts", "delta", m*60)
		partial[m] = f.Partial
		sum += f.Value
	}
	if sum != 4 {
		t.Errorf("deltas add up to %v, want 4", sum)
	}
	return partial
}

// A short clean stop (5 s) during which NTP set the wall clock forward by 4 minutes is no
// downtime: the agent watched the quiet counter throughout, its windows are complete as without
// the step.
func TestRestartClockStepForwardWhileStopped(t *testing.T) {
	h := quietCounter(t, -4*time.Minute) // the wall clock 4 minutes behind
	if err := h.e.Close(); err != nil {
		t.Fatal(err)
	}
	h.clock.Add(5 * time.Second)
	h.clock.Step(4 * time.Minute)
	h.start()
	for m, p := range finishQuiet(t, h, 0) {
		if p {
			t.Errorf("window at %g min partial after a 5 s stop (the wall clock set forward by 4m meanwhile)", m)
		}
	}
}

// The same with a source whose clock is 10 minutes behind the gateway's: the idle clock goes on
// from the stop by the time that passed, not by the step, so it does not close windows ahead of
// the source's time and the counter's next value is folded, not late.
func TestRestartClockStepForwardSourceBehind(t *testing.T) {
	h := quietCounter(t, 10*time.Minute) // the wall clock 10 minutes ahead of the source
	if err := h.e.Close(); err != nil {
		t.Fatal(err)
	}
	h.clock.Add(5 * time.Second)
	h.clock.Step(4 * time.Minute)
	h.start()
	for m, p := range finishQuiet(t, h, 14*time.Minute) {
		if p {
			t.Errorf("window at %g min partial after a 5 s stop (the wall clock set forward by 4m meanwhile)", m)
		}
	}
}

// A clean stop of 3 minutes during which NTP set the wall clock back by an hour is downtime of 3
// minutes: the windows it covers are partial, as without the step, and so is the window of the
// counter's first sample after it.
func TestRestartClockStepBackWhileStopped(t *testing.T) {
	h := quietCounter(t, time.Hour) // the wall clock an hour ahead
	if err := h.e.Close(); err != nil {
		t.Fatal(err)
	}
	h.clock.Add(3 * time.Minute) // stopped from 10:00 to 13:00
	h.clock.Step(-time.Hour)
	h.start()
	for m, p := range finishQuiet(t, h, 0) {
		if want := m >= 10 && m < 13 || m == 20; p != want {
			t.Errorf("window at %g min: partial=%v, want %v (stopped from 10:00 to 13:00, the wall clock set back by 1h meanwhile)", m, p, want)
		}
	}
}

// Across a reboot the boot's clock says nothing: a wall clock before the checkpoint's save (set
// back, or a gateway without an RTC battery booting with an old time) leaves the downtime
// unknown, never negative. Every window from the stop up to the counter's first sample after the
// restart is partial: nobody knows how long nobody watched.
func TestRestartClockBehindAcrossReboot(t *testing.T) {
	h := quietCounter(t, 0)
	if err := h.e.Close(); err != nil {
		t.Fatal(err)
	}
	// Down 3 minutes; the machine comes up with its wall clock 4 minutes behind.
	h.clock.Reboot(t0.Add(13*time.Minute-4*time.Minute), 30*time.Second)
	h.start()
	for m, p := range finishQuiet(t, h, -4*time.Minute) {
		if want := m >= 10; p != want {
			t.Errorf("window at %g min: partial=%v, want %v (a reboot, the wall clock behind the last checkpoint)", m, p, want)
		}
	}
}

// The collector's resend of a value unchanged since before the stop, with its old time, does not
// tell where the source's time got to: after a downtime not known the windows stay partial up to
// the first newer sample.
func TestRestartClockBehindAcrossRebootResend(t *testing.T) {
	h := quietCounter(t, 0)
	last := t0.Add(10 * time.Minute)
	h.add(cnt("parts", last, 100)) // window 10 open at the stop
	if err := h.e.Close(); err != nil {
		t.Fatal(err)
	}
	h.clock.Reboot(t0.Add(13*time.Minute-4*time.Minute), 30*time.Second)
	h.start()
	h.add(cnt("parts", last, 100))
	for m, p := range finishQuiet(t, h, -4*time.Minute) {
		if want := m >= 10; p != want {
			t.Errorf("window at %g min: partial=%v, want %v (a reboot, the wall clock behind the last checkpoint)", m, p, want)
		}
	}
}

// Across a reboot with a right clock the wall clock gives the downtime, as before: 3 minutes down
// make the windows they cover partial, and the window of the first sample after them.
func TestRestartClockReboot(t *testing.T) {
	h := quietCounter(t, 0)
	if err := h.e.Close(); err != nil {
		t.Fatal(err)
	}
	h.clock.Reboot(t0.Add(13*time.Minute), 30*time.Second)
	h.start()
	for m, p := range finishQuiet(t, h, 0) {
		if want := m >= 10 && m < 13 || m == 20; p != want {
			t.Errorf("window at %g min: partial=%v, want %v (a reboot from 10:00 to 13:00)", m, p, want)
		}
	}
}
