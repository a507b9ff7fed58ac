package quality

import (
	"fmt"
	"log/slog"
	"runtime"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub/state/features"
	"github.com/gemba-io/gemba/signal"
)

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// BenchmarkObserve is the observer's cost on the ingest hot path, per feature record (every record
// feeding a monitored feature; an 800-record message as the agents send them).
func BenchmarkObserve(b *testing.B) {
	o := newObserver(nil, "x", defs, nil, time.Hour)
	a := &agent{id: "a1", inc: "i1"}
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	fs := make([]signal.Feature, 800)
	for i := range fs {
		fs[i] = mean(fmt.Sprintf("line%d.oven.temp", i), t0, float64(i))
	}
	batch := a.batch(fs...)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		o.Observe(batch)
		if i%100 == 99 {
			o.mu.Lock()
			o.seal()
			o.pending = o.pending[:0]
			o.mu.Unlock()
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(fs)), "ns/record")
}

// TestMemoryPerKey measures the state a continuously fed key holds at the defaults (a day-ago
// reference): the figure docs/hub-learning.md quotes.
func TestMemoryPerKey(t *testing.T) {
	cfg := DefaultConfig()
	const keys = 200
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	ks := make([]*keyState, keys)
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for i := range ks {
		k := newKeyState("temp", fmt.Sprint(i), ptr(cfg.For("temp")), time.Hour, cfg.ring(), cfg.Slice(), cfg.Samples/cfg.Slices)
		for j := range 26 * 60 { // a value a minute for 26 hours: every slice of the ring filled
			k.add(t0.Add(time.Duration(j)*time.Minute), float64(j%17), 1, 0, true)
		}
		ks[i] = k
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := (float64(after.HeapAlloc) - float64(before.HeapAlloc)) / keys
	t.Logf("%.1f KiB per key (ring of %d slices, %d samples per slice)", per/1024, cfg.ring(), cfg.Samples/cfg.Slices)
	if per > 20<<10 {
		t.Errorf("%.0f bytes per key at the defaults, more than the 20 KiB documented", per)
	}
	runtime.KeepAlive(ks)
	// A key fed a few values (a short backlog, a rare signal) holds only the slices it used.
	clear(ks)
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range ks {
		k := newKeyState("temp", fmt.Sprint(i), ptr(cfg.For("temp")), time.Hour, cfg.ring(), cfg.Slice(), cfg.Samples/cfg.Slices)
		for j := range 6 {
			k.add(t0.Add(time.Duration(j)*time.Second), float64(j), 1, 0, true)
		}
		ks[i] = k
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	sparse := (float64(after.HeapAlloc) - float64(before.HeapAlloc)) / keys
	t.Logf("%.0f bytes per key fed 6 values", sparse)
	if sparse > 2<<10 {
		t.Errorf("%.0f bytes per sparse key: the slices are not allocated as used", sparse)
	}
	runtime.KeepAlive(ks)
}

// BenchmarkFold is what every replica spends per monitored value folding the monitor log (the
// whole fleet's values: the consumer is shared, the log is not). 800 keys, one value each per message.
func BenchmarkFold(b *testing.B) {
	cfg := testConfig()
	m := &Monitor{cfg: cfg, defs: map[string]features.Definition{}, log: discard(), now: time.Now,
		keys: map[string]map[string]*keyState{}, th: map[string]*Thresholds{}, streams: map[streamRef]*seqTracker{}, loaded: true}
	for _, d := range defs {
		m.defs[d.Name] = d
	}
	m.metrics = newMetrics(m)
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	sigs := make([]string, 800)
	for i := range sigs {
		sigs[i] = fmt.Sprintf("line%d.oven.temp", i)
	}
	var e encoder
	at := time.Now()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		e.reset()
		e.chunk(&signal.Header{Agent: "a1", Stream: signal.StreamFeatures, Incarnation: "i1", FirstSeq: uint64(i + 1), LastSeq: uint64(i + 1)})
		end := t0.Add(time.Duration(i) * 30 * time.Second)
		for j, s := range sigs {
			e.value("temp", s, float64(j%7), end.UnixNano(), false)
		}
		b.StartTimer()
		m.fold(e.buf, uint64(i+1), at)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(sigs)), "ns/value")
}
