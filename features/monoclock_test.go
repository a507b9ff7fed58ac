package features

import (
	"bytes"
	"encoding/gob"
	"testing"
	"time"
	"unsafe"
)

// A wall-clock step while the agent runs (NTP setting a gateway without an RTC battery late) is
// no silence: time.Now carries a monotonic reading the step does not move, and the engine's
// elapsed times (now.Sub) use it. What the engine keeps or saves on the wall clock must then be
// on the clock after the step. The fake clock's times carry no monotonic reading (its Sub sees
// every step), so these tests give them one: the boot's clock, which Step does not move either.

// monoTime returns a time whose wall clock is wall and whose monotonic reading is mono, as
// time.Now returns them. The time package has no constructor for it: the reading is set in
// time.Time's ext field, which holds it when the wall field says there is one (since Go 1.9).
func monoTime(t testing.TB, wall time.Time, mono time.Duration) time.Time {
	t.Helper()
	now := time.Now()                    // a wall field in the form with a monotonic reading
	r := now.Add(wall.Sub(now.Round(0))) // in time.Local: UTC() drops the reading
	setMono(&r, mono)
	// The layout is the time package's own: fail loudly, not silently, should it change.
	same := r
	setMono(&same, mono+time.Second)
	if r.UnixNano() != wall.UnixNano() || same.Sub(r) != time.Second {
		t.Fatalf("monoTime(%v, %v) = %v: time.Time's layout changed", wall, mono, r)
	}
	return r
}

func setMono(t *time.Time, mono time.Duration) {
	(*struct {
		wall uint64
		ext  int64
		loc  *time.Location
	})(unsafe.Pointer(t)).ext = int64(mono)
}

// monoClock is the fake clock whose times carry the boot's clock as their monotonic reading.
func monoClock(t testing.TB, c *fakeClock) func() time.Time {
	return func() time.Time {
		c.mu.Lock()
		wall, since := c.t, c.since
		c.mu.Unlock()
		return monoTime(t, wall, since)
	}
}

// The monotonic reading is what now.Sub uses: Step moves the wall clock alone.
func TestMonoClockStep(t *testing.T) {
	c := &fakeClock{t: t0, boot: "boot", since: time.Hour}
	now := monoClock(t, c)
	a := now()
	c.Add(time.Minute)
	c.Step(time.Hour)
	b := now()
	if d := b.Sub(a); d != time.Minute {
		t.Fatalf("Sub across a step = %v, want 1m", d)
	}
	if w := b.UnixNano() - a.UnixNano(); w != int64(time.Hour+time.Minute) {
		t.Fatalf("wall clock moved %v, want 1h1m", time.Duration(w))
	}
}

// monoHarness is a harness whose engine reads the monotonic fake clock.
func monoHarness(t *testing.T, yml string) *harness {
	t.Helper()
	h := &harness{t: t, cfg: parseConfig(t, yml), clock: &fakeClock{t: t0, boot: "boot", since: time.Hour}, store: newMemStore(), mono: true}
	h.start()
	return h
}

// savedSeries decodes the checkpoint in the store and returns the series of sig.
func savedSeries(t *testing.T, st *memStore, sig string) *series {
	t.Helper()
	data, ok, _ := st.GetMeta(CheckpointKey)
	if !ok {
		t.Fatal("no checkpoint")
	}
	var ck checkpoint
	if err := gob.NewDecoder(bytes.NewReader(data)).Decode(&ck); err != nil {
		t.Fatal(err)
	}
	for _, cs := range ck.Series {
		if cs.Sig == sig {
			return cs.S
		}
	}
	t.Fatalf("no series %s in the checkpoint", sig)
	return nil
}

// The checkpoint saves the last arrival on the wall clock of the save: a signal silent for 30 s
// across a step of an hour is saved 30 s silent, and a restart continues with 30 s, not an hour
// and 30 s that would close its windows an hour ahead of its source and make its samples late.
func TestCheckpointArrivalAfterStepWhileRunning(t *testing.T) {
	h := monoHarness(t, `
features:
  - {signal: g, window: 1m, idle_timeout: 1m, compute: [mean]}
`)
	h.add(gauge("g", t0, 1))
	h.clock.Add(30 * time.Second)
	h.clock.Step(time.Hour)
	if err := h.e.Close(); err != nil {
		t.Fatal(err)
	}
	s := savedSeries(t, h.store, "g")
	if want := h.clock.Now().Add(-30 * time.Second); s.Arrival != want.UnixNano() {
		t.Errorf("saved Arrival %v, want %v (30 s before the save on the clock after the step)", time.Unix(0, s.Arrival).UTC(), want)
	}
	h.start() // same boot, no time passed
	h.clock.Add(45 * time.Second)
	h.e.Tick()
	h.add(gauge("g", t0.Add(75*time.Second), 2))
	if st := h.e.Stats(); st.Late != 0 {
		t.Errorf("%d samples late after the restart: the silence before it was taken for an hour", st.Late)
	}
}

// A signal silent past its idle timeout has its watermark extrapolated by the time that passed:
// a step of the wall clock meanwhile is not time passed, and does not close windows ahead of the
// source (its next samples would all be late, not folded).
func TestIdleCloseStepWhileRunning(t *testing.T) {
	h := monoHarness(t, `
features:
  - {signal: g, window: 1m, idle_timeout: 1m, compute: [mean]}
`)
	defer h.e.Close()
	h.add(gauge("g", t0.Add(10*time.Second), 1))
	for range 8 { // 2 minutes: the idle timeout closes window 0
		h.clock.Add(15 * time.Second)
		h.e.Tick()
	}
	h.clock.Step(time.Hour)
	h.clock.Add(5 * time.Second)
	h.add(gauge("g", t0.Add(2*time.Minute+5*time.Second), 2))
	for range 5 { // silent past the idle timeout again: window 2 closes
		h.clock.Add(15 * time.Second)
		h.e.Tick()
	}
	h.add(gauge("g", t0.Add(3*time.Minute+20*time.Second), 3))
	if st := h.e.Stats(); st.Late != 0 || st.Folded != 3 {
		t.Errorf("folded %d, late %d, want 3 and 0: the wall clock's step taken for an hour of silence", st.Folded, st.Late)
	}
	// The checkpoint's extrapolation is on the clock after the step.
	if err := h.e.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	if s := savedSeries(t, h.store, "g"); s.ExtAt != 0 && h.clock.Now().UnixNano()-s.ExtAt > int64(time.Minute) {
		t.Errorf("saved ExtAt %v, %v before the save", time.Unix(0, s.ExtAt).UTC(), time.Duration(h.clock.Now().UnixNano()-s.ExtAt))
	}
}
