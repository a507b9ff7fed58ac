package quality

import (
	"testing"
	"time"

	"github.com/gemba-io/gemba/signal"
)

// Sample counts dated more than max_ahead past their logging (a device clock ahead) count as bad
// at the logging time, as values do (docs/hub-learning.md, "Limits"): every sample of them, not
// only the ones the source marked bad.
func TestFutureSamplesAreBad(t *testing.T) {
	cfg := testConfig()
	m := open(t, jetStream(t), cfg, nil, nil)
	f := &folds{m: m}
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	const key = "line1.oven.temp"
	var at time.Time
	for i := range 120 { // a window of good values every 30 s
		at = t0.Add(time.Duration(i) * 30 * time.Second)
		f.value(at, key, 10)
	}
	f.seq++
	fo := folder{m: m, at: at}
	m.mu.Lock()
	fo.chunk("a1", signal.StreamSamples, "i1", f.seq, f.seq)
	fo.samples("temp", []byte(key), at.AddDate(1, 0, 0).UnixNano(), 120, 0) // a year ahead, none marked bad
	m.mu.Unlock()
	f.value(at.Add(cfg.Slice()), key, 10) // the next slice: the window is evaluated
	q, _ := m.Status("temp", key)
	if m.Stats.Future.Load() != 1 || q.BadShare < 0.49 {
		t.Errorf("120 samples dated a year ahead among 120 good values: future %d, bad share %v (want 0.5)", m.Stats.Future.Load(), q.BadShare)
	}
}

// One sample dated a year ahead among a message's 120 good ones is one bad sample: the others,
// dated now, are not counted bad with it (the observer sums a message's samples per key).
func TestOneFutureSampleAmongGoodOnes(t *testing.T) {
	cfg := testConfig()
	m := open(t, jetStream(t), cfg, nil, nil)
	obs := m.Observer()
	a := &agent{id: "a7", inc: "i1"}
	now := time.Now().UTC()
	batch := func(ss ...signal.Sample) *signal.Batch {
		a.seq++
		return &signal.Batch{Header: signal.Header{Schema: 2, Agent: a.id, Site: "s1", Stream: signal.StreamSamples,
			Incarnation: a.inc, FirstSeq: a.seq, LastSeq: a.seq, Count: len(ss)}, Samples: ss}
	}
	var ss []signal.Sample
	for i := range 120 {
		ss = append(ss, signal.Sample{Signal: "line7.oven.temp", Time: now.Add(time.Duration(i-120) * time.Second), Value: signal.Float(10), Quality: signal.Good})
	}
	ss = append(ss, signal.Sample{Signal: "line7.oven.temp", Time: now.AddDate(1, 0, 0), Value: signal.Float(10), Quality: signal.Good})
	obs.Observe(batch(ss...))
	obs.Observe(batch(signal.Sample{Signal: "line7.oven.temp", Time: now.Add(cfg.Slice()), Value: signal.Float(10), Quality: signal.Good}))
	flush(t, obs)
	waitFolded(t, m, 2)
	q, _ := m.Status("temp", "line7.oven.temp")
	if m.Stats.Future.Load() != 1 || q.BadShare < 0.5/121 || q.BadShare > 2.0/121 {
		t.Errorf("1 sample a year ahead among 120 good ones: future %d, bad share %v (want 1/121)", m.Stats.Future.Load(), q.BadShare)
	}
}
