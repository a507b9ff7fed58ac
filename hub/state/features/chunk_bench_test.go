package features

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/gemba-io/gemba/signal"
)

// BenchmarkChunk is the store's share of one agent chunk on the ingest's path: Apply of the 810
// records of a 5-line site's window (bench/hub's plant: mean/min/max/count of 200 signals, units
// and availability per line) into 1,030 values under eight definitions, then their encoding into
// the log message, as Flush does — with the flush's time cache and without it.
func BenchmarkChunk(b *testing.B) {
	res := plant{}
	machines := []string{"press", "weld", "paint", "pack"}
	for l := range 5 {
		for _, m := range machines {
			res[fmt.Sprintf("s1l%d.%s.", l+1, m)] = [3]string{m, fmt.Sprintf("s1l%d", l+1), "site1"}
		}
	}
	ds := Definitions{
		{Name: "mean", Signal: "*", Feature: "mean", Key: BySignal, MaxAge: time.Minute},
		{Name: "min", Signal: "*", Feature: "min", Key: BySignal, MaxAge: time.Minute},
		{Name: "max", Signal: "*", Feature: "max", Key: BySignal, MaxAge: time.Minute},
		{Name: "count", Signal: "*", Feature: "count", Key: BySignal, MaxAge: time.Minute},
		{Name: "machine_mean", Signal: "*", Feature: "mean", Key: ByMachine, MaxAge: time.Minute},
		{Name: "line_mean", Signal: "*", Feature: "mean", Key: ByLine, MaxAge: time.Minute},
		{Name: "units", Signal: "*.pack.parts", Feature: "units", Key: BySKU, MaxAge: time.Minute},
		{Name: "availability", Signal: "*.pack.state", Feature: "availability", Key: ByLine, MaxAge: time.Minute},
	}
	var fs []signal.Feature
	for l := range 5 {
		for _, m := range machines {
			for f := range 10 {
				sig := fmt.Sprintf("s1l%d.%s.f%d", l+1, m, f)
				for _, n := range []string{"mean", "min", "max", "count"} {
					fs = append(fs, signal.Feature{Signal: sig, Name: n, Value: float64(f) + 0.25, Count: 100})
				}
			}
		}
		fs = append(fs, signal.Feature{Signal: fmt.Sprintf("s1l%d.pack.parts", l+1), Name: "units", Value: 12,
			Labels: signal.Labels{{Key: "sku", Value: fmt.Sprintf("SKU-%d", l)}}})
		fs = append(fs, signal.Feature{Signal: fmt.Sprintf("s1l%d.pack.state", l+1), Name: "availability", Value: 0.9})
	}
	for _, cached := range []bool{true, false} {
		b.Run(fmt.Sprintf("time-cache=%v", cached), func(b *testing.B) {
			s := newStore(Config{Definitions: ds}, res, slog.New(slog.DiscardHandler))
			ins := make([]Input, len(fs))
			var buf []byte
			w := 0
			for b.Loop() {
				w++
				end := t0.Add(time.Duration(w) * time.Second)
				for i := range fs {
					fs[i].WindowStart, fs[i].WindowEnd = end.Add(-time.Second), end
					ins[i] = Input{Feature: &fs[i], Lineage: Lineage{Agent: "gw1", Site: "site1", Incarnation: "b0e1",
						ConfigVersion: "3f2a9c", FirstSeq: uint64(w), StreamSeq: uint64(w)}}
				}
				s.Apply(ins)
				var tc *timeCache
				if cached {
					tc = &timeCache{}
				}
				buf = buf[:0]
				for k := range s.dirty {
					buf, _ = appendValue(buf, s.vals[k], tc)
					buf = append(buf, '\n')
				}
				clear(s.dirty)
			}
			b.ReportMetric(float64(len(buf)), "log-bytes")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(fs)), "ns/record")
		})
	}
}
