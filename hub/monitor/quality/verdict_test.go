package quality

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/gemba-io/gemba/signal"
)

// folds feeds a monitor directly (the log's order and times, as its follower would).
type folds struct {
	m   *Monitor
	seq uint64
}

func (f *folds) value(at time.Time, key string, v float64) {
	f.seq++
	fo := folder{m: f.m, at: at}
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	fo.chunk("a1", signal.StreamFeatures, "i1", f.seq, f.seq)
	fo.value("temp", []byte(key), v, at.UnixNano(), false)
}

// A key that stops being fed for longer than the log's retention is known to a replica that ran
// through the silence and unknown to one started during it. When the key resumes both must reach
// the same verdict: a drift verdict from a day ago (kept while the reference window is empty) must
// not suppress decisions on one replica only, for a day.
func TestSilenceLongerThanRetentionForgetsTheVerdict(t *testing.T) {
	js := jetStream(t)
	cfg := testConfig()
	a := &folds{m: open(t, js, cfg, nil, nil)}
	cfg2 := cfg
	cfg2.Stream = "GEMBA_MONITOR_2"
	b := &folds{m: open(t, js, cfg2, nil, nil)} // started during the silence: the log holds nothing of the key
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	r := rand.New(rand.NewPCG(5, 6))
	const key = "line1.oven.temp"
	for i := range 6 * 120 { // every 30 s for 6 hours, the mean shifting by 3σ at 4 h
		at := t0.Add(time.Duration(i) * 30 * time.Second)
		mu := 10.0
		if i >= 4*120 {
			mu = 13
		}
		a.value(at, key, mu+r.NormFloat64())
	}
	if q, _ := a.m.Status("temp", key); !q.Drifting {
		t.Fatalf("the shifted sensor is not drifting: %+v", q)
	}
	resume := t0.Add(6*time.Hour + cfg.Retention() + time.Hour)
	for i := range 90 { // 45 minutes of stable values after the silence
		at := resume.Add(time.Duration(i) * 30 * time.Second)
		v := 13 + r.NormFloat64()
		a.value(at, key, v)
		b.value(at, key, v)
	}
	qa, _ := a.m.Status("temp", key)
	qb, _ := b.m.Status("temp", key)
	if qa.Drifting != qb.Drifting || qa.Values != qb.Values {
		t.Errorf("replicas disagree after a silence longer than the log's retention:\nran through it: drifting %v, %d values, %v\nstarted in it:  drifting %v, %d values, %v",
			qa.Drifting, qa.Values, qa.Reasons, qb.Drifting, qb.Values, qb.Reasons)
	}
}

// A window with fewer than min_count values judges nothing (docs/hub-learning.md): a sensor in
// breach that goes on sending, but fewer values than min_count an hour (it is failing further),
// stays in breach. Read as "recovered", the decisions it held would resume on garbage.
func TestTooFewValuesKeepTheVerdict(t *testing.T) {
	cfg := testConfig()
	m := open(t, jetStream(t), cfg, nil, nil)
	f := &folds{m: m}
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	r := rand.New(rand.NewPCG(7, 8))
	const bad, drift = "line1.oven.temp", "line2.oven.temp"
	var at time.Time
	for i := range 6 * 120 { // every 30 s for 6 hours; from 4 h on one sensor half NaN, the other shifted 3σ
		at = t0.Add(time.Duration(i) * 30 * time.Second)
		v, mu := 10+r.NormFloat64(), 10.0
		if i >= 4*120 {
			mu = 13
			if i%2 == 0 {
				v = math.NaN()
			}
		}
		f.value(at, bad, v)
		f.value(at, drift, mu+r.NormFloat64())
	}
	if q, _ := f.m.Status("temp", bad); !q.Bad {
		t.Fatalf("half NaN is not bad: %+v", q)
	}
	if q, _ := f.m.Status("temp", drift); !q.Drifting {
		t.Fatalf("3σ shift is not drifting: %+v", q)
	}
	for i := range 3 * 10 { // then 10 values an hour (min_count 30) for 3 hours, as before
		at = at.Add(6 * time.Minute)
		v := 10 + r.NormFloat64()
		if i%2 == 0 {
			v = math.NaN()
		}
		f.value(at, bad, v)
		f.value(at, drift, 13+r.NormFloat64())
	}
	if q, _ := f.m.Status("temp", bad); !q.Bad {
		t.Errorf("a half-NaN sensor sending 10 values an hour (min_count 30) reads recovered: share %v, %+v", q.BadShare, q.Reasons)
	}
	if q, _ := f.m.Status("temp", drift); !q.Drifting {
		t.Errorf("a shifted sensor sending 10 values an hour (min_count 30) reads recovered: %+v", q.Reasons)
	}
}
