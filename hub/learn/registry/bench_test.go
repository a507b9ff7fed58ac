package registry

import (
	"context"
	"syscall"
	"testing"
	"time"
)

// cpu is the process's user + system CPU time so far (the embedded server's included): on a shared
// machine the wall time says more about the neighbours than about the code.
func cpu() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkFitStore is the target with the registry included: 10,000 series × 365 days
// (a third intermittent) fitted (backtest, choice, final fit, 28-day forecast), encoded, stored in
// the object store and loaded back (decode and check) as a follower does. Building the series is not
// timed. Run once: go test -run XXX -bench FitStore -benchtime 1x ./hub/learn/registry/
func BenchmarkFitStore(b *testing.B) {
	ds := synthetic(b, 10_000, 365, 1)
	r := openRegistry(b, connect(b, startServer(b)), Options{})
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		start, c0 := time.Now(), cpu()
		s, err := Fit(ctx, ds, FitOptions{Horizon: 28})
		if err != nil {
			b.Fatal(err)
		}
		fit, fitCPU := time.Since(start), cpu()-c0
		start, c0 = time.Now(), cpu()
		v, err := r.Store(ctx, s)
		if err != nil {
			b.Fatal(err)
		}
		store, storeCPU := time.Since(start), cpu()-c0
		start, c0 = time.Now(), cpu()
		loaded, err := r.Load(ctx, v)
		if err != nil {
			b.Fatal(err)
		}
		NewIndex(loaded)
		load, loadCPU := time.Since(start), cpu()-c0
		metas, _ := r.List(ctx)
		b.ReportMetric(fit.Seconds(), "fit-s")
		b.ReportMetric(store.Seconds(), "store-s")
		b.ReportMetric(load.Seconds(), "load-s")
		b.ReportMetric(fitCPU.Seconds(), "fit-cpu-s")
		b.ReportMetric(storeCPU.Seconds(), "store-cpu-s")
		b.ReportMetric(loadCPU.Seconds(), "load-cpu-s")
		if len(metas) > 0 {
			b.ReportMetric(float64(metas[len(metas)-1].Size)/(1<<20), "MiB")
		}
	}
}
