package features

import (
	"fmt"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/gemba-io/gemba/signal"
)

const benchSignals = 10_000

func benchNames() []string {
	names := make([]string, benchSignals)
	for i := range names {
		names[i] = "line" + strconv.Itoa(i/100) + ".m" + strconv.Itoa(i%100) + ".temperature"
	}
	return names
}

// feeder produces batches of gauge samples: every signal every 100 ms of event time, values
// varying, written into one reused batch so the benchmark measures the engine.
type feeder struct {
	names []string
	batch []signal.Sample
	i     int
}

func newFeeder(size int) *feeder {
	return &feeder{names: benchNames(), batch: make([]signal.Sample, size)}
}

func (f *feeder) next() []signal.Sample {
	for j := range f.batch {
		n := f.i
		f.i++
		f.batch[j] = signal.Sample{
			Signal: f.names[n%benchSignals],
			Time:   t0.Add(time.Duration(n/benchSignals) * 100 * time.Millisecond),
			Value:  signal.Float(60 + float64(n%997)/50),
		}
	}
	return f.batch
}

func benchEngine(b *testing.B, window, compute string, bounds ...TimeBounds) *Engine {
	cfg := parseConfig(b, `
features:
  - {signal: "*", window: `+window+`, compute: `+compute+`}
`)
	emitted := 0
	opts := Options{Emit: func(fs []signal.Feature) { emitted += len(fs) }}
	if len(bounds) > 0 {
		opts.Bounds = bounds[0]
	}
	e, err := New(cfg, opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = e.Close() })
	return e
}

func runFold(b *testing.B, compute string, bounds ...TimeBounds) {
	e := benchEngine(b, "10s", compute, bounds...)
	const batch = 1000
	f := newFeeder(batch)
	// Warm up through one window close (12 s of event time), so every signal's panes and
	// sketches exist and the figures are the steady state.
	for range 120 * benchSignals / batch {
		e.Add(f.next())
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	samples := 0
	for b.Loop() {
		e.Add(f.next())
		samples += batch
	}
	b.ReportMetric(float64(samples)/time.Since(start).Seconds(), "samples/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(samples), "ns/sample")
}

// BenchmarkFoldGauge: 10,000 signals sampled every 100 ms, 10-second windows, mean/min/max/count;
// one op is a batch of 1,000 samples (allocs/op is per 1,000 samples). Every 1,000,000 samples
// all 10,000 windows close; run at least 2000x so closes are part of the figure.
func BenchmarkFoldGauge(b *testing.B) { runFold(b, "[mean, min, max, count]") }

// BenchmarkFoldGaugeBounded is BenchmarkFoldGauge with the agent's default time bounds, as the
// agent runs it (the feeder's 2026 times are in the past of the bench machine's clock).
func BenchmarkFoldGaugeBounded(b *testing.B) {
	runFold(b, "[mean, min, max, count]", DefaultTimeBounds())
}

// BenchmarkFoldGaugePercentiles adds p50/p95/p99 (DDSketch per window).
func BenchmarkFoldGaugePercentiles(b *testing.B) {
	runFold(b, "[mean, min, max, count, p50, p95, p99]")
}

// BenchmarkBaselineMapSum is the named baseline: the least any engine must do per sample (look
// the signal up in a map and add the value), so the engine's figures can be read as a ratio.
func BenchmarkBaselineMapSum(b *testing.B) {
	f := newFeeder(1000)
	sums := map[string]*float64{}
	for _, n := range f.names {
		sums[n] = new(float64)
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	samples := 0
	for b.Loop() {
		for _, s := range f.next() {
			v, _ := s.Value.Number()
			*sums[s.Signal] += v
		}
		samples += 1000
	}
	b.ReportMetric(float64(samples)/time.Since(start).Seconds(), "samples/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(samples), "ns/sample")
}

// BenchmarkFoldCounterBy: 1,000 part counters grouped by 1,000 SKU signals.
func BenchmarkFoldCounterBy(b *testing.B) {
	var cfgs string
	for i := range 1000 {
		cfgs += fmt.Sprintf("  - {signal: c%d.parts, kind: counter, window: 1m, compute: [delta], by: c%d.sku}\n", i, i)
	}
	e, err := New(parseConfig(b, "features:\n"+cfgs), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	names := make([]string, 1000)
	for i := range names {
		names[i] = fmt.Sprintf("c%d.parts", i)
	}
	batch := make([]signal.Sample, 1000)
	n := 0
	b.ReportAllocs()
	for b.Loop() {
		for j := range batch {
			batch[j] = signal.Sample{Signal: names[n%1000], Time: t0.Add(time.Duration(n/1000) * time.Second), Value: signal.Int(int64(n / 1000))}
			n++
		}
		e.Add(batch)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/sample")
}

// BenchmarkMemory reports the heap held by 10,000 signals with one open 1-minute window each
// (600 samples folded per signal), for 5 gauge features, and for 5 features including p95.
func BenchmarkMemory(b *testing.B) {
	for _, c := range []struct{ name, compute string }{
		{"5features", "[mean, min, max, count, stddev]"},
		{"5features_p95", "[mean, min, max, count, p95]"},
	} {
		b.Run(c.name, func(b *testing.B) {
			// Measured once whatever -benchtime says: one op is the whole 6,000,000-sample fill.
			per := heapPerSignal(b, c.compute)
			for b.Loop() {
			}
			b.ReportMetric(per, "B/signal")
			b.ReportMetric(per*benchSignals/(1<<20), "MiB/10k")
		})
	}
}

func heapPerSignal(b *testing.B, compute string) float64 {
	f := newFeeder(1000)
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	e := benchEngine(b, "1m", compute)
	for range 600 * benchSignals / 1000 { // 60 s of 100 ms samples: one full open window
		e.Add(f.next())
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(e)
	runtime.KeepAlive(f)
	return float64(after.HeapAlloc-before.HeapAlloc) / benchSignals
}

// BenchmarkCheckpoint encodes 10,000 gauge signals with one open window each (5 features and
// p95) and reports the checkpoint size; one op is one full checkpoint.
func BenchmarkCheckpoint(b *testing.B) {
	e := benchEngine(b, "1m", "[mean, min, max, count, p95]")
	f := newFeeder(1000)
	for range 300 * benchSignals / 1000 { // 30 s of samples
		e.Add(f.next())
	}
	var size int
	b.ReportAllocs()
	for b.Loop() {
		e.mu.Lock()
		size = len(e.encode(false))
		e.mu.Unlock()
	}
	b.ReportMetric(float64(size), "bytes")
	b.StopTimer()
	st := newMemStore()
	_ = st.PutMeta(CheckpointKey, func() []byte { e.mu.Lock(); defer e.mu.Unlock(); return e.encode(true) }())
	start := time.Now()
	e2, err := New(e.cfg, Options{Store: st})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(time.Since(start).Milliseconds()), "restore-ms")
	if got := e2.Stats().Series; got != benchSignals {
		b.Fatalf("restored %d series", got)
	}
	_ = e2.Close()
}

// BenchmarkFoldState: 1,000 machine states, each changing every second of event time.
func BenchmarkFoldState(b *testing.B) {
	var cfgs string
	for i := range 1000 {
		cfgs += fmt.Sprintf("  - {signal: m%d.state, kind: state, window: 1m, compute: [time_in_state, transitions, availability], states: {running: [run]}}\n", i)
	}
	e, err := New(parseConfig(b, "features:\n"+cfgs), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	names := make([]string, 1000)
	for i := range names {
		names[i] = fmt.Sprintf("m%d.state", i)
	}
	states := []signal.Value{signal.String("run"), signal.String("idle"), signal.String("down")}
	batch := make([]signal.Sample, 1000)
	n := 0
	b.ReportAllocs()
	for b.Loop() {
		for j := range batch {
			batch[j] = signal.Sample{Signal: names[n%1000], Time: t0.Add(time.Duration(n/1000) * time.Second), Value: states[(n/1000+j)%3]}
			n++
		}
		e.Add(batch)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/sample")
}

// BenchmarkFoldFrozenClock: 500 counters and 500 states whose source clock stopped (every sample
// has the same source time): one point each is held, whatever the number of samples.
func BenchmarkFoldFrozenClock(b *testing.B) {
	var cfgs string
	for i := range 500 {
		cfgs += fmt.Sprintf("  - {signal: c%d.parts, kind: counter, window: 1m, compute: [delta, resets]}\n", i)
		cfgs += fmt.Sprintf("  - {signal: m%d.state, kind: state, window: 1m, compute: [transitions]}\n", i)
	}
	e, err := New(parseConfig(b, "features:\n"+cfgs), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	names := make([]string, 1000)
	for i := range 500 {
		names[2*i], names[2*i+1] = fmt.Sprintf("c%d.parts", i), fmt.Sprintf("m%d.state", i)
	}
	states := []signal.Value{signal.String("run"), signal.String("idle"), signal.String("down")}
	batch := make([]signal.Sample, 1000)
	n := 0
	b.ReportAllocs()
	for b.Loop() {
		for j := range batch {
			v := signal.Int(int64(n / 1000))
			if j%2 == 1 {
				v = states[(n/1000)%3]
			}
			batch[j] = signal.Sample{Signal: names[j], Time: t0, Value: v}
			n++
		}
		e.Add(batch)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/sample")
}
