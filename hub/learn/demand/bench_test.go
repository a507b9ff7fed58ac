package demand

import (
	"context"
	"fmt"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub/ingest/commerce"
)

// BenchmarkBuild reads 100,000 sales (1,000 SKUs × 100 days) from the COMMERCE stream into daily
// series; publishing them is not timed. go test -run XXX -bench Build -benchtime 1x ./hub/learn/demand/
func BenchmarkBuild(b *testing.B) {
	js := startJS(b)
	ctx := context.Background()
	ccfg := commerce.DefaultConfig()
	if _, err := commerce.EnsureStream(ctx, js, ccfg); err != nil {
		b.Fatal(err)
	}
	pub, err := commerce.NewPublisher(js, ccfg)
	if err != nil {
		b.Fatal(err)
	}
	const skus, days = 1000, 100
	for d := range days {
		evs := make([]commerce.Event, 0, skus)
		for i := range skus {
			evs = append(evs, commerce.Sale{OrderID: fmt.Sprintf("o%d-%d", d, i), Line: 1, SKU: fmt.Sprintf("sku-%d", i), Site: "s1",
				Channel: "web", Quantity: 1, UnitPrice: 1, Currency: "EUR", Time: monday.AddDate(0, 0, d).Add(time.Hour)})
		}
		for _, r := range pub.Publish(ctx, evs) {
			if r.Err != nil {
				b.Fatal(r.Err)
			}
		}
	}
	var ru0, ru1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	b.ResetTimer()
	for b.Loop() {
		set, err := Build(ctx, js, Source{Stream: ccfg.Stream, Prefix: ccfg.Prefix}, Options{From: monday, To: monday.AddDate(0, 0, days)})
		if err != nil {
			b.Fatal(err)
		}
		if set.Stats.Sales != skus*days {
			b.Fatalf("%d sales read, want %d", set.Stats.Sales, skus*days)
		}
	}
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
	b.ReportMetric(float64(skus*days)*float64(b.N)/b.Elapsed().Seconds(), "sales/s")
	// CPU per sale, the embedded server's included: the wall rate on a shared machine is the neighbours'.
	b.ReportMetric(float64(cpu.Microseconds())/float64(skus*days*b.N), "cpu-µs/sale")
}

// BenchmarkSeriesMemory measures what a long history holds in memory: 1,000 SKUs × 3 channels ×
// 3,650 days (learn.history_days at its maximum, by channel), one sale per series a week. The series
// are dense (8 bytes a day whether it sold or not); each sale read also keeps a 16-byte identity for
// deduplication. Scale by SKUs: 10,000 SKUs hold ten times this.
// go test -run XXX -bench SeriesMemory -benchtime 1x ./hub/learn/demand/
func BenchmarkSeriesMemory(b *testing.B) {
	const skus, channels, days, every = 1000, 3, 3650, 7
	for b.Loop() {
		heap := func() uint64 {
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			return ms.HeapAlloc
		}
		h0 := heap()
		set, err := New(Options{From: monday, To: monday.AddDate(0, 0, days), ByChannel: true})
		if err != nil {
			b.Fatal(err)
		}
		sales := 0
		for d := 0; d < days; d += every {
			for i := range skus {
				for c := range channels {
					set.Add(commerce.Sale{OrderID: fmt.Sprintf("o%d-%d-%d", d, i, c), Line: 1, SKU: fmt.Sprintf("sku-%05d", i), Site: "s1",
						Channel: fmt.Sprintf("ch%d", c), Quantity: 1, UnitPrice: 1, Currency: "EUR", Time: monday.AddDate(0, 0, d).Add(time.Hour)})
					sales++
				}
			}
		}
		h1 := heap()
		set.seen = nil
		h2 := heap()
		if len(set.Series) != skus*channels {
			b.Fatalf("%d series", len(set.Series))
		}
		seriesDays := float64(skus * channels * days)
		b.ReportMetric(float64(h2-h0)/seriesDays, "B/series-day")
		b.ReportMetric(float64(h1-h2)/float64(sales), "dedup-B/sale")
		b.ReportMetric(float64(h2-h0)/(1<<20), "series-MiB")
		b.ReportMetric(float64(h1-h2)/(1<<20), "dedup-MiB")
		runtime.KeepAlive(set)
	}
}
