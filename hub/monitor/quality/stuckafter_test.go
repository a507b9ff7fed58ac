package quality

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/gemba-io/gemba/internal/testutil"
)

// A sensor whose value stopped changing before the log's oldest message: a replica opened then
// sees a constant series from the start of its history, and its reference window holds the same
// value. Its drift verdict cannot know the sensor is dead; the stuck verdict (a value unchanged
// for stuck_after of event time) must, and on every replica whatever its start: one that ran
// through it, one opened before stuck_after had passed, one opened after. A value that moves
// clears it on all of them.
func TestStuckFromTheStartOfTheLog(t *testing.T) {
	js := jetStream(t)
	s := &sink{}
	cfg := testConfig() // window 1h, reference_lag 2h: stuck_after defaults to 2h (6h at most reference_lag)
	a := open(t, js, cfg, s, nil)
	obs := a.Observer()
	const dead, young = "line1.oven.temp", "line2.oven.temp"
	ag := &agent{id: "a1", inc: "i1"}
	t0 := time.Now().UTC().Add(-12 * time.Hour).Truncate(time.Minute)
	var n uint64
	at := t0
	send := func(d time.Duration, key string, v func(i int) float64) {
		for i := 0; time.Duration(i)*30*time.Second < d; i++ {
			at = at.Add(30 * time.Second)
			obs.Observe(ag.batch(mean(key, at, v(i))))
			n++
		}
		flush(t, obs)
		waitFolded(t, a, n)
	}
	stuckAt := func(int) float64 { return 11.5 }
	send(time.Hour+30*time.Minute, dead, stuckAt) // constant for 1.5 h: not yet stuck
	b := open(t, js, cfg, nil, nil)               // opened on a log of one value only
	for name, m := range map[string]*Monitor{"a (ran through it)": a, "b (opened at 1.5 h)": b} {
		if q, _ := m.Status("temp", dead); q.Drifting || q.Bad {
			t.Errorf("%s: a value constant for 1.5 h (stuck_after 2h) is in breach: %+v", name, q)
		}
	}
	send(time.Hour, dead, stuckAt) // 2.5 h
	waitFolded(t, b, n)
	c := open(t, js, cfg, nil, nil) // opened at 2.5 h
	qs := map[string]Quality{}
	for name, m := range map[string]*Monitor{"a (ran through it)": a, "b (opened at 1.5 h)": b, "c (opened at 2.5 h)": c} {
		q, _ := m.Status("temp", dead)
		qs[name] = q
		if !q.Drifting || !strings.Contains(strings.Join(q.Reasons, "; "), "stuck") {
			t.Errorf("%s: a value unchanged for 2.5 h (stuck_after 2h) is not judged stuck: %+v", name, q)
		}
	}
	if qa, qc := qs["a (ran through it)"], qs["c (opened at 2.5 h)"]; !qa.Since.Equal(qc.Since) {
		t.Errorf("replicas disagree on when it stuck: %s and %s", qa.Since, qc.Since)
	}
	testutil.WaitFor(t, 5*time.Second, "the stuck breach on the decision log", func() bool {
		return len(s.of("stuck", StateBreach, dead)) == 1
	})
	e := s.of("stuck", StateBreach, dead)[0]
	if want := t0.Add(30 * time.Second).Add(2 * time.Hour); !e.Time.Equal(want) || !strings.Contains(e.Why, "11.5") || !strings.Contains(e.Why, "2h") {
		t.Errorf("stuck breach event: want time %s and the value and stuck_after in why, got %+v", want, e)
	}
	// Another key whose values are constant only since 1 h is not stuck; then the dead one moves.
	send(time.Hour, young, stuckAt)
	send(time.Minute, dead, func(i int) float64 { return 12 + float64(i) })
	waitFolded(t, b, n)
	waitFolded(t, c, n)
	for name, m := range map[string]*Monitor{"a": a, "b": b, "c": c} {
		if q, _ := m.Status("temp", dead); q.Drifting || q.Bad {
			t.Errorf("%s: a value that moved again is still in breach: %+v", name, q)
		}
		if q, _ := m.Status("temp", young); q.Drifting || q.Bad {
			t.Errorf("%s: a value constant for 1 h is in breach: %+v", name, q)
		}
	}
	testutil.WaitFor(t, 5*time.Second, "the stuck recovery on the decision log", func() bool {
		return len(s.of("stuck", StateRecovered, dead)) == 1
	})
}

// The known fault as it happens: one replica folded the sensor's live values and then its sticking
// (its drift verdict holds: TestStuckSensorStaysStuck); another started once those live values had
// left the log (which keeps reference_lag + window + 2 slices) folds only the stuck ones. Both must
// hold the promotions reading it, and both must let them go once it moves.
func TestStuckReplicaStartedAfterTheLiveValuesExpired(t *testing.T) {
	js := jetStream(t)
	cfg := testConfig()
	a := &folds{m: open(t, js, cfg, nil, nil)}
	cfg2 := cfg
	cfg2.Stream = "GEMBA_MONITOR_2"
	b := &folds{m: open(t, js, cfg2, nil, nil)}
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	r := rand.New(rand.NewPCG(11, 12))
	const key = "line1.oven.temp"
	at := t0
	for range 4 * 120 { // every 30 s for 4 hours of noise, which b never sees
		at = at.Add(30 * time.Second)
		a.value(at, key, 10+r.NormFloat64())
	}
	stuck, raised := at, false
	for range 6 * 120 { // then 6 hours of one value: b's log holds the last retention of them
		at = at.Add(30 * time.Second)
		a.value(at, key, 11.5)
		if at.Sub(stuck) > 6*time.Hour-cfg.Retention() {
			b.value(at, key, 11.5)
		}
		// Once in breach, a holds it: the drift verdict until its reference window is mostly the
		// stuck value, the stuck verdict from stuck_after (at most reference_lag) on.
		q, _ := a.m.Status("temp", key)
		if raised && !q.Drifting {
			t.Fatalf("the sensor stuck since %s reads clear at %s: %v", at.Sub(stuck), at.Sub(t0), q.Reasons)
		}
		raised = raised || q.Drifting
	}
	qa, _ := a.m.Status("temp", key)
	qb, _ := b.m.Status("temp", key)
	if !qa.Drifting || !qb.Drifting || qa.Stuck != qb.Stuck {
		t.Errorf("replicas disagree on a sensor stuck for 6 h:\nran through it: drifting %v, stuck %v, %v\nstarted after:  drifting %v, stuck %v, %v",
			qa.Drifting, qa.Stuck, qa.Reasons, qb.Drifting, qb.Stuck, qb.Reasons)
	}
	at = at.Add(30 * time.Second)
	a.value(at, key, 11.6)
	b.value(at, key, 11.6)
	qa, _ = a.m.Status("temp", key)
	qb, _ = b.m.Status("temp", key)
	if qa.Stuck || qb.Stuck {
		t.Errorf("a value that moved is still stuck:\n%v\n%v", qa.Reasons, qb.Reasons)
	}
}

// A value reported late (event time inside the run) that differs means the run holds only since
// then; one from before the run changes nothing, but an equal one older than it does not extend
// the run; per-feature stuck_after 0 turns the check off.
func TestStuckRunLateValuesAndOptOut(t *testing.T) {
	cfg := testConfig()
	cfg.Features = map[string]Thresholds{"units": {StuckAfter: ptr(time.Duration(0))}}
	f := &folds{m: open(t, jetStream(t), cfg, nil, nil)}
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	const key = "line1.oven.temp"
	at := t0
	for range 2 * 120 { // 2 h of one value
		at = at.Add(30 * time.Second)
		f.value(at, key, 7)
	}
	f.value(t0.Add(-time.Hour), key, 3)   // from before the run
	f.value(t0.Add(-2*time.Hour), key, 7) // older still: the run does not reach back past the 3
	if q, _ := f.m.Status("temp", key); q.Stuck {
		t.Errorf("a run of 2 h judged stuck (stuck_after 2h) through a different value: %v", q.Reasons)
	}
	f.value(t0.Add(time.Hour), key, 3) // late, inside the run: it holds since 1 h only
	for range 120 - 1 {                // 1 h more: the run spans 1h59m30s since the late value (2h59m since its first)
		at = at.Add(30 * time.Second)
		f.value(at, key, 7)
	}
	if q, _ := f.m.Status("temp", key); q.Stuck {
		t.Errorf("stuck though a late value broke the run %s before its newest: %v", at.Sub(t0.Add(time.Hour)), q.Reasons)
	}
	at = at.Add(time.Minute)
	f.value(at, key, 7+1e-12) // the same reading, to its last bits
	if q, _ := f.m.Status("temp", key); !q.Stuck || !q.Since.Equal(t0.Add(3*time.Hour)) {
		t.Errorf("not stuck, or not since stuck_after past the late value: %+v", q)
	}
	// units (a counter of a stopped line is 0 for days) opted out.
	m := f.m
	m.mu.Lock()
	for i := range 10 * 120 {
		fo := folder{m: m, at: t0.Add(time.Duration(i) * 30 * time.Second)}
		fo.value("units", []byte("A"), 0, fo.at.UnixNano(), false)
	}
	m.mu.Unlock()
	if q, ok := m.Status("units", "A"); !ok || q.Stuck || q.Drifting {
		t.Errorf("a feature with stuck_after 0 judged stuck: %+v", q)
	}
}
