package registry

import (
	"context"
	"math"
	"testing"

	"github.com/gemba-io/gemba/hub/ingest/commerce"
	"github.com/gemba-io/gemba/hub/learn/demand"
	"github.com/gemba-io/gemba/sim"
	simcommerce "github.com/gemba-io/gemba/sim/commerce"
)

// simDemand runs the commerce simulator for days simulated days (one hour a step) and returns its
// daily demand per SKU × site × channel.
func simDemand(t *testing.T, seed uint64, days int) *demand.Set {
	t.Helper()
	plant := sim.DefaultConfig()
	plant.Seed, plant.Speed = seed, 3600
	s, err := simcommerce.New(simcommerce.Config{Plant: plant, Start: monday, NoQueue: true, DemandScale: 0.1})
	if err != nil {
		t.Fatal(err)
	}
	ds, err := demand.New(demand.Options{From: monday, To: monday.AddDate(0, 0, days), ByChannel: true})
	if err != nil {
		t.Fatal(err)
	}
	for range days * 24 {
		for _, ev := range s.Step() {
			if sale, ok := ev.(commerce.Sale); ok {
				ds.Add(sale)
			}
		}
	}
	return ds
}

// On the simulator's demand the chosen models' backtest MASE is lower than the 28-day moving
// average's on the same origins, for every seed (the target), and so is their absolute error
// on the last 28 days, which the fit never saw (selection cannot flatter that one). Before the weekly
// model (ses_weekly) the out-of-sample comparison was mixed, within a few per cent either way: the
// simulator sells by weekday and no method modelled it; with it the error is about 30 % lower.
func TestChosenBeatsMovingAverageOnSimulator(t *testing.T) {
	const days, holdout = 210, 28
	var errModel, errMA float64
	for _, seed := range []uint64{1, 7, 42, 99} {
		ds := simDemand(t, seed, days)
		if len(ds.Series) < 9 {
			t.Fatalf("seed %d: %d series from the simulator", seed, len(ds.Series))
		}
		set, err := Fit(context.Background(), ds, FitOptions{Horizon: holdout})
		if err != nil {
			t.Fatal(err)
		}
		sum := set.Summary()
		t.Logf("seed %d: backtest over %d series: chosen mean MASE %.4f, moving average %.4f; methods %v", seed, sum.Backtested,
			sum.MeanMASE, sum.MeanBaseline, sum.Methods)
		if sum.Backtested != len(ds.Series) || !(sum.MeanMASE < sum.MeanBaseline) {
			t.Errorf("seed %d: chosen MASE %.4f not below the moving average's %.4f (%d of %d series backtested)", seed,
				sum.MeanMASE, sum.MeanBaseline, sum.Backtested, len(ds.Series))
		}
		m, a := outOfSample(t, ds, days, holdout)
		t.Logf("seed %d: out of sample, last %d days: chosen models' absolute error %.1f, moving average's %.1f", seed, holdout, m, a)
		if !(m < a) {
			t.Errorf("seed %d: out of sample the chosen models (%.1f) do not beat the moving average (%.1f)", seed, m, a)
		}
		errModel += m
		errMA += a
	}
	t.Logf("out of sample, last %d days, four seeds: chosen models' absolute error %.1f, moving average's %.1f (%.1f %% lower)",
		holdout, errModel, errMA, 100*(1-errModel/errMA))
}

// outOfSample fits on all but the last holdout days and returns the absolute error over them of the
// chosen models and of the 28-day moving average at the same origin.
func outOfSample(t *testing.T, ds *demand.Set, days, holdout int) (errModel, errMA float64) {
	t.Helper()
	train, err := demand.New(demand.Options{From: monday, To: monday.AddDate(0, 0, days-holdout), ByChannel: true})
	if err != nil {
		t.Fatal(err)
	}
	for k, sr := range ds.Series {
		train.Series[k] = &demand.Series{Key: k, Values: sr.Values[:days-holdout]}
	}
	fitted, err := Fit(context.Background(), train, FitOptions{Horizon: holdout})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range fitted.Series {
		y := ds.Series[m.Key].Values
		var ma float64
		for _, v := range y[days-holdout-28 : days-holdout] {
			ma += v / 28
		}
		for j, p := range m.Forecast {
			actual := y[days-holdout+j]
			errModel += math.Abs(p.Mean - actual)
			errMA += math.Abs(ma - actual)
		}
	}
	return errModel, errMA
}
