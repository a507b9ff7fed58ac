package quality

import (
	"context"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
)

// A sensor whose mean shifts by two standard deviations raises a drift event within the
// configured windows; a stable one (same noise, fixed seeds) never does, over hours of windows.
func TestDriftingSensorRaisesDriftStableDoesNot(t *testing.T) {
	js := jetStream(t)
	s := &sink{}
	cfg := testConfig()
	m := open(t, js, cfg, s, nil)
	obs := m.Observer()
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	shift := t0.Add(5 * time.Hour)
	drifting, stable := &agent{id: "a1", inc: "i1"}, &agent{id: "a2", inc: "i1"}
	r1, r2 := rand.New(rand.NewPCG(1, 2)), rand.New(rand.NewPCG(3, 4))
	var n uint64
	for i := range 8 * 120 { // every 30 s for 8 hours
		end := t0.Add(time.Duration(i) * 30 * time.Second)
		mu := 10.0
		if !end.Before(shift) {
			mu = 12
		}
		obs.Observe(drifting.batch(mean("line1.oven.temp", end, mu+r1.NormFloat64())))
		obs.Observe(stable.batch(mean("line2.oven.temp", end, 10+r2.NormFloat64())))
		n += 2
		if i%120 == 119 {
			flush(t, obs)
		}
	}
	flush(t, obs)
	waitFolded(t, m, n)
	testutil.WaitFor(t, 5*time.Second, "the drift event", func() bool { return len(s.of(KindDrift, StateBreach, "line1.oven.temp")) > 0 })
	e := s.of(KindDrift, StateBreach, "line1.oven.temp")[0]
	if e.Time.Before(shift) || e.Time.After(shift.Add(cfg.Window+cfg.Slice())) {
		t.Errorf("drift raised at %s, want within window + slice of the shift at %s", e.Time, shift)
	}
	t.Logf("drift event: %+v", e)
	if e.Agent != "a1" || e.Why == "" || e.Current == 0 || e.Reference == 0 {
		t.Errorf("drift event lacks its evidence: %+v", e)
	}
	if got := s.of(KindDrift, "", "line2.oven.temp"); len(got) != 0 {
		t.Errorf("the stable sensor raised %d drift events, first %+v", len(got), got[0])
	}
	q, ok := m.Status("temp", "line1.oven.temp")
	if !ok || !q.Drifting || q.Since.IsZero() || len(q.Reasons) == 0 {
		t.Errorf("status of the drifting sensor: %+v %v", q, ok)
	}
	q, ok = m.Status("temp", "line2.oven.temp")
	if !ok || q.Drifting || q.Values != 8*120 {
		t.Errorf("status of the stable sensor: %+v %v", q, ok)
	}
	// The timeline holds the slices still kept (lag + window + the current one), oldest first: the
	// drifting sensor's means step from about 10 to about 12 at the shift.
	tl, ok := m.Timeline("temp", "line1.oven.temp")
	if !ok || len(tl) < 12 {
		t.Fatalf("timeline: %d spans, %v", len(tl), ok)
	}
	for i, sp := range tl {
		want := 10.0
		if !sp.Start.Before(shift) {
			want = 12
		}
		if math.Abs(sp.Mean-want) > 0.6 || sp.Width != cfg.Slice() || (i > 0 && !sp.Start.After(tl[i-1].Start)) {
			t.Errorf("span %d %+v: want a mean near %v, width %s, after the previous", i, sp, want, cfg.Slice())
		}
	}
	if _, ok := m.Timeline("temp", "nowhere"); ok {
		t.Error("a timeline for a key never seen")
	}
	// A second replica that starts later folds the same log to the same verdicts, raising nothing
	// for what happened before it started.
	s2 := &sink{}
	m2 := open(t, js, cfg, s2, nil)
	q2, _ := m2.Status("temp", "line1.oven.temp")
	q1, _ := m.Status("temp", "line1.oven.temp")
	if q2.Drifting != q1.Drifting || q2.PSI != q1.PSI || q2.KS != q1.KS || q2.Values != q1.Values {
		t.Errorf("replicas disagree: %+v vs %+v", q2, q1)
	}
	if len(s2.of(KindDrift, "", "")) != 0 {
		t.Errorf("the late replica raised events for history")
	}
}

// A dropped message is a gap once gap_after passes; a redelivered one is not, and is not counted
// twice; a late copy of the dropped one closes the gap; a new incarnation starts a new sequence
// space; an unclean-stop jump is not a gap.
func TestGaps(t *testing.T) {
	js := jetStream(t)
	s := &sink{}
	c := &clock{}
	m := open(t, js, testConfig(), s, c)
	obs := m.Observer()
	a := &agent{id: "a3", inc: "i1"}
	now := time.Now().UTC()
	var dropped []*signal.Batch
	var redelivered *signal.Batch
	for i := 1; i <= 20; i++ {
		b := a.batch(mean("line3.oven.temp", now.Add(time.Duration(i)*time.Second), 10))
		switch i {
		case 7, 8:
			dropped = append(dropped, b)
			continue
		case 12:
			redelivered = b
		}
		obs.Observe(b)
	}
	flush(t, obs)
	obs.Observe(redelivered) // a redelivery on another replica, after its flush failed there
	flush(t, obs)
	waitFolded(t, m, 19)
	if d := m.Stats.Duplicates.Load(); d != 1 {
		t.Errorf("duplicates folded: %d, want 1", d)
	}
	q, _ := m.Status("temp", "line3.oven.temp")
	if q.Gap || q.Values != 18 {
		t.Errorf("before gap_after: %+v (want no gap yet, 18 values)", q)
	}
	c.skip(2 * time.Minute)
	m.Check()
	testutil.WaitFor(t, 5*time.Second, "the gap event", func() bool { return len(s.of(KindGap, StateBreach, "a3")) == 1 })
	if e := s.of(KindGap, StateBreach, "a3")[0]; e.From != 7 || e.To != 8 {
		t.Errorf("gap %d-%d, want 7-8", e.From, e.To)
	}
	g := m.Gaps("a3")
	if len(g) != 1 || g[0].Missing != 2 || len(g[0].Holes) != 1 {
		t.Errorf("gaps: %+v", g)
	}
	q, _ = m.Status("temp", "line3.oven.temp")
	if !q.Gap || q.Missing != 2 || q.OK() {
		t.Errorf("status with the gap: %+v", q)
	}
	m.Check() // reported once
	// The dropped messages arrive late after all.
	for _, b := range dropped {
		obs.Observe(b)
	}
	flush(t, obs)
	waitFolded(t, m, 21)
	testutil.WaitFor(t, 5*time.Second, "the gap's recovery", func() bool { return len(s.of(KindGap, StateRecovered, "a3")) == 1 })
	if n := len(s.of(KindGap, StateBreach, "a3")); n != 1 {
		t.Errorf("gap reported %d times, want once", n)
	}
	if g := m.Gaps("a3"); g[0].Missing != 0 {
		t.Errorf("after the late copies: %+v", g)
	}
	// A new buffer incarnation restarts at 1: not a replay, not a gap. An unclean stop's jump is not one either.
	b := &agent{id: "a3", inc: "i2"}
	for range 3 {
		obs.Observe(b.batch(mean("line3.oven.temp", time.Now(), 10)))
	}
	b.seq += 1 << 20
	obs.Observe(b.batch(mean("line3.oven.temp", time.Now(), 10)))
	flush(t, obs)
	waitFolded(t, m, 25)
	c.skip(2 * time.Minute)
	m.Check()
	for _, g := range m.Gaps("a3") {
		if g.Missing != 0 {
			t.Errorf("stream %+v: missing %d, want 0", g, g.Missing)
		}
		if g.Incarnation == "i2" && g.Jumps != 1 {
			t.Errorf("incarnation i2: %d jumps, want 1", g.Jumps)
		}
	}
}

// Bad values (NaN, Inf, partial windows) and bad samples raise the bad share, not a crash; an
// unknown feature is an error naming it; a malformed log message is skipped with its sequence.
func TestBadInputs(t *testing.T) {
	js := jetStream(t)
	s := &sink{}
	m := open(t, js, testConfig(), s, nil)
	obs := m.Observer()
	a := &agent{id: "a4", inc: "i1"}
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	var n uint64
	for i := range 240 { // two hours, every 30 s; the second hour mostly bad
		end := t0.Add(time.Duration(i) * 30 * time.Second)
		f := mean("line4.oven.temp", end, 10)
		if i >= 120 && i%3 != 0 {
			switch i % 3 {
			case 1:
				f.Value = math.NaN()
			case 2:
				f.Partial = true
			}
			if i%7 == 0 {
				f.Value = math.Inf(1)
			}
		}
		obs.Observe(a.batch(f))
		n++
	}
	// Samples with bad quality count toward the sku key's share.
	sb := &signal.Batch{Header: signal.Header{Schema: 2, Agent: "a4", Stream: signal.StreamSamples, Incarnation: "i1", FirstSeq: 1, LastSeq: 1}}
	for i := range 10 {
		q := signal.Good
		if i < 4 {
			q = signal.Bad
		}
		sb.Samples = append(sb.Samples, signal.Sample{Signal: "line4.pack.count", Time: t0, Quality: q, Labels: signal.Labels{{Key: "sku", Value: "B-1"}}})
	}
	obs.Observe(sb)
	n++
	flush(t, obs)
	// A message no hub wrote: skipped, counted, and the log goes on.
	if _, err := js.PublishMsg(context.Background(), &nats.Msg{Subject: obs.subj, Data: []byte("mX garbage")}); err != nil {
		t.Fatal(err)
	}
	obs.Observe(a.batch(mean("line4.oven.temp", t0.Add(3*time.Hour), 10)))
	n++
	flush(t, obs)
	waitFolded(t, m, n)
	if m.Stats.Unreadable.Load() != 1 {
		t.Errorf("unreadable: %d, want 1", m.Stats.Unreadable.Load())
	}
	testutil.WaitFor(t, 5*time.Second, "the bad share event", func() bool { return len(s.of(KindBadShare, StateBreach, "line4.oven.temp")) > 0 })
	q, err := m.Lookup("temp", "line4.oven.temp")
	if err != nil || q.Values == 0 {
		t.Fatalf("lookup: %+v %v", q, err)
	}
	if _, err := m.Lookup("pressure", "line4"); err == nil || !strings.Contains(err.Error(), `unknown feature "pressure"`) ||
		!strings.Contains(err.Error(), "temp, units") {
		t.Errorf("unknown feature: %v", err)
	}
	if _, err := m.Lookup("temp", "line9.oven.temp"); err == nil || !strings.Contains(err.Error(), "line9.oven.temp") {
		t.Errorf("unknown key: %v", err)
	}
	if _, ok := m.Status("units", "B-1"); !ok {
		t.Errorf("the bad samples' key is not monitored")
	}
}

// collect is a visitor that keeps what it is given.
type collect struct{ vals []float64 }

func (c *collect) chunk(string, signal.Stream, string, uint64, uint64)  {}
func (c *collect) value(_ string, _ []byte, v float64, _ int64, _ bool) { c.vals = append(c.vals, v) }
func (c *collect) samples(string, []byte, int64, uint64, uint64)        {}

func TestDecodeMalformed(t *testing.T) {
	var e encoder
	e.reset()
	e.chunk(&signal.Header{Agent: "a", Stream: signal.StreamFeatures, Incarnation: "i", FirstSeq: 1, LastSeq: 1})
	e.value("temp", "k", 1.5, 42, true)
	good := append([]byte(nil), e.buf...)
	var c collect
	if err := scan(good, &c); err != nil || len(c.vals) != 1 || c.vals[0] != 1.5 {
		t.Fatalf("round trip: %+v %v", c.vals, err)
	}
	for name, data := range map[string][]byte{
		"empty":       nil,
		"not ours":    []byte(`{"json":true}`),
		"new version": {'m', 9},
		"truncated":   good[:len(good)-3],
		"value first": {'m', 1, 'S', 1, 'x', 'V', 0, 0},
		"bad index":   {'m', 1, 'C', 5},
		"unknown":     {'m', 1, 'Z'},
	} {
		if err := scan(data, nil); err == nil || !strings.Contains(err.Error(), "monitor log message") {
			t.Errorf("%s: got %v", name, err)
		}
	}
}

// A replica that starts after a key went stale and a gap opened takes them as its starting state:
// it reports them but raises no event for them again.
func TestRestartRaisesNothingOld(t *testing.T) {
	js := jetStream(t)
	s, c := &sink{}, &clock{}
	m := open(t, js, testConfig(), s, c)
	obs := m.Observer()
	a := &agent{id: "a5", inc: "i1"}
	old := time.Now().Add(-time.Hour)
	obs.Observe(a.batch(mean("line5.oven.temp", old, 10)))
	a.seq++ // seq 2 never arrives
	obs.Observe(a.batch(mean("line5.oven.temp", old.Add(time.Second), 10)))
	flush(t, obs)
	waitFolded(t, m, 2)
	c.skip(2 * time.Minute)
	m.Check()
	testutil.WaitFor(t, 5*time.Second, "stale and gap events", func() bool {
		return len(s.of(KindStale, StateBreach, "line5.oven.temp")) == 1 && len(s.of(KindGap, StateBreach, "a5")) == 1
	})
	s2 := &sink{}
	m2 := open(t, js, testConfig(), s2, c)
	m2.Check()
	q, ok := m2.Status("temp", "line5.oven.temp")
	if !ok || !q.Stale || !q.Gap || q.Since.IsZero() {
		t.Errorf("the new replica's status: %+v %v", q, ok)
	}
	s2.mu.Lock()
	defer s2.mu.Unlock()
	if len(s2.evs) != 0 {
		t.Errorf("the new replica raised %d events for what was already so: %+v", len(s2.evs), s2.evs)
	}
}

// A value from a clock far ahead neither moves the key's windows nor is lost: it counts as bad.
func TestFutureTimeIsBad(t *testing.T) {
	js := jetStream(t)
	m := open(t, js, testConfig(), &sink{}, nil)
	obs := m.Observer()
	a := &agent{id: "a6", inc: "i1"}
	now := time.Now().UTC()
	obs.Observe(a.batch(mean("line6.oven.temp", now, 10)))
	obs.Observe(a.batch(mean("line6.oven.temp", now.AddDate(100, 0, 0), 10)))
	flush(t, obs)
	waitFolded(t, m, 2)
	q, _ := m.Status("temp", "line6.oven.temp")
	if m.Stats.Future.Load() != 1 || q.Newest.After(now.Add(time.Hour)) {
		t.Errorf("future: %d, newest %s", m.Stats.Future.Load(), q.Newest)
	}
}

// listed_only: a feature without thresholds of its own is not observed at all.
func TestListedOnly(t *testing.T) {
	js := jetStream(t)
	cfg := testConfig()
	cfg.ListedOnly = true
	cfg.Features = map[string]Thresholds{"units": {}}
	m := open(t, js, cfg, &sink{}, nil)
	obs := m.Observer()
	a := &agent{id: "a7", inc: "i1"}
	obs.Observe(a.batch(mean("line7.oven.temp", time.Now(), 10)))
	flush(t, obs)
	waitFolded(t, m, 1)
	if obs.Stats.Values.Load() != 0 {
		t.Errorf("%d values of an unlisted feature observed", obs.Stats.Values.Load())
	}
	if _, err := m.Lookup("temp", "line7.oven.temp"); err == nil || !strings.Contains(err.Error(), "monitored: units") {
		t.Errorf("lookup of an unlisted feature: %v", err)
	}
}

// Two replicas share the agents' consumer, so each ingests part of an agent's messages: each sees
// the gap in what all of them ingested, and no gap where the other replica took the message.
func TestGapsAcrossReplicas(t *testing.T) {
	js := jetStream(t)
	c := &clock{}
	s1, s2 := &sink{}, &sink{}
	m1, m2 := open(t, js, testConfig(), s1, c), open(t, js, testConfig(), s2, c)
	a := &agent{id: "a10", inc: "i1"}
	now := time.Now()
	for i := 1; i <= 40; i++ {
		b := a.batch(mean("line10.oven.temp", now.Add(time.Duration(i)*time.Second), 10))
		switch {
		case i == 23: // dropped: no replica ever gets it
		case i%2 == 0:
			m1.Observer().Observe(b)
		default:
			m2.Observer().Observe(b)
		}
	}
	flush(t, m1.Observer())
	flush(t, m2.Observer())
	waitFolded(t, m1, 39)
	waitFolded(t, m2, 39)
	c.skip(2 * time.Minute)
	for _, m := range []*Monitor{m1, m2} {
		g := m.Gaps("a10")
		if len(g) != 1 || g[0].Missing != 1 || len(g[0].Holes) != 1 || g[0].Holes[0].From != 23 {
			t.Errorf("gaps seen by a replica: %+v", g)
		}
		q, _ := m.Status("temp", "line10.oven.temp")
		if q.Values != 39 {
			t.Errorf("values folded: %d, want 39 (both replicas' share)", q.Values)
		}
	}
	m1.Check()
	m2.Check()
	testutil.WaitFor(t, 5*time.Second, "both replicas raise the gap", func() bool {
		return len(s1.of(KindGap, StateBreach, "a10")) == 1 && len(s2.of(KindGap, StateBreach, "a10")) == 1
	})
	e1, e2 := s1.of(KindGap, StateBreach, "a10")[0], s2.of(KindGap, StateBreach, "a10")[0]
	if e1.ID() != e2.ID() {
		t.Errorf("the replicas' events differ in id (the decision log would store two): %s vs %s", e1.ID(), e2.ID())
	}
}
