package hubbench

import (
	"encoding/json"
	"math"
	"runtime/metrics"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub/state/features"
	"github.com/gemba-io/gemba/hub/state/kvkey"
)

// schedWait is the Go runtime's histogram of how long goroutines waited runnable before they ran
// (/sched/latencies:seconds) and of stop-the-world pauses for GC: on a shared machine a message's
// latency tail is often time the process was not given a core, whatever stage it was in. Latency
// rounds report the two over the round next to their own percentiles.
type schedWait struct{ sched, gc *metrics.Float64Histogram }

func readSched() schedWait {
	s := []metrics.Sample{{Name: "/sched/latencies:seconds"}, {Name: "/sched/pauses/total/gc:seconds"}}
	metrics.Read(s)
	var w schedWait
	if s[0].Value.Kind() == metrics.KindFloat64Histogram {
		w.sched = s[0].Value.Float64Histogram()
	}
	if s[1].Value.Kind() == metrics.KindFloat64Histogram {
		w.gc = s[1].Value.Float64Histogram()
	}
	return w
}

// since returns the quantile q and the largest bucket reached of each histogram's growth since
// before (upper bucket bounds; 0 when nothing was counted).
func (w schedWait) since(before schedWait, q float64) (schedQ, schedMax, gcQ, gcMax time.Duration) {
	schedQ, schedMax = histDelta(before.sched, w.sched, q)
	gcQ, gcMax = histDelta(before.gc, w.gc, q)
	return
}

func histDelta(a, b *metrics.Float64Histogram, q float64) (quant, most time.Duration) {
	if a == nil || b == nil || len(a.Counts) != len(b.Counts) {
		return 0, 0
	}
	counts := make([]uint64, len(b.Counts))
	var total uint64
	for i := range counts {
		counts[i] = b.Counts[i] - a.Counts[i]
		total += counts[i]
	}
	if total == 0 {
		return 0, 0
	}
	upper := func(i int) time.Duration {
		u := b.Buckets[i+1]
		if math.IsInf(u, 1) {
			u = b.Buckets[i]
		}
		return time.Duration(u * float64(time.Second))
	}
	want := uint64(math.Ceil(q * float64(total)))
	var seen uint64
	for i, c := range counts {
		seen += c
		if c > 0 {
			most = upper(i)
		}
		if quant == 0 && seen >= want && c > 0 {
			quant = upper(i)
		}
	}
	return quant, most
}

func TestHistDelta(t *testing.T) {
	a := &metrics.Float64Histogram{Counts: []uint64{5, 0, 0}, Buckets: []float64{0, 0.001, 0.01, math.Inf(1)}}
	b := &metrics.Float64Histogram{Counts: []uint64{104, 0, 1}, Buckets: a.Buckets}
	q, most := histDelta(a, b, 0.99)
	if q != time.Millisecond || most != 10*time.Millisecond {
		t.Errorf("p99 %s, max %s: want 1ms and 10ms (99 of 100 waits in the first bucket, one in the last)", q, most)
	}
	if q, most := histDelta(b, b, 0.99); q != 0 || most != 0 {
		t.Errorf("nothing counted: got %s, %s", q, most)
	}
	if w := readSched(); w.sched == nil || w.gc == nil {
		t.Error("the runtime no longer exports /sched/latencies:seconds or /sched/pauses/total/gc:seconds")
	}
}

// The latency rounds read the feature log by scanning its lines (keyOf, lineageOf): they must
// agree with what the store writes (encoding/json's form of features.Value, byte for byte).
func TestLogLineScan(t *testing.T) {
	v := features.Value{Name: "mean", Key: "s1l1.press.f0", Value: 1, Lineage: features.Lineage{Agent: "gw3", FirstSeq: 42, StreamSeq: 7}}
	line, err := json.Marshal(&v)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := keyOf(line), kvkey.Join("mean", "s1l1.press.f0"); got != want {
		t.Errorf("keyOf = %q, want %q (line %s)", got, want, line)
	}
	if a, seq, ok := lineageOf(line); !ok || a != "gw3" || seq != 42 {
		t.Errorf("lineageOf = %q, %d, %v; want gw3, 42 (line %s)", a, seq, ok, line)
	}
}
