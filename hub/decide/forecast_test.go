package decide

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/learn/forecast"
	"github.com/gemba-io/gemba/hub/learn/registry"
	"github.com/gemba-io/gemba/internal/testutil"
)

// Days of cover come from the active model set's forecast when it covers the SKU: A's moving
// average says 10 days (no promotion under "> 30"), its forecast 40; the record and the why say
// which model set and what the moving average was. A forecast past its horizon (B's) is not used.
func TestForecastDrivesDaysOfCover(t *testing.T) {
	r := newRig(t, nil)
	r.activate(testRules)
	now := r.clock()
	r.fc.set("A", "s1", registry.Cover{Version: "models-7", Methods: []forecast.Method{forecast.SES}, DailyMean: 2.5,
		Days: 40, LowDays: 32, HighDays: 55, HasInterval: true, DataTo: now.Add(-12 * time.Hour),
		Shadow: &registry.Cover{Version: "models-8", Days: 38, LowDays: 30, HighDays: math.Inf(1)}})
	r.fc.set("B", "s1", registry.Cover{Version: "models-7", Days: 40, LowDays: 40, HighDays: 40, Stale: true})
	for _, sku := range []string{"A", "B"} {
		r.state.setFeature("units", sku, 40, now, nil)
		r.state.setCover(sku, "s1", 10)
	}
	r.state.setFeature("availability", "l1", 0.9, now, nil)
	r.state.setFeature("availability", "l2", 0.9, now, nil)
	r.eng.FeatureChanged("availability", "l1")
	r.eng.FeatureChanged("availability", "l2")
	testutil.WaitFor(t, 10*time.Second, "A promoted on its forecast", func() bool {
		return len(r.records(audit.Filter{SKU: "A", Outcome: audit.OutcomeFired})) == 2
	})
	rec := r.records(audit.Filter{SKU: "A", Outcome: audit.OutcomeFired})[0]
	inv := rec.Inventory
	if inv == nil || inv.Forecast == nil || inv.Forecast.Version != "models-7" || inv.Inventory.DaysOfCover != 40 ||
		inv.Inventory.DaysOfCoverLow != 32 || inv.Inventory.DaysOfCoverHigh != 55 || inv.Inventory.Forecast != "models-7" ||
		inv.Inventory.DailyRate != 2.5 || inv.MovingAverage != 10 {
		t.Fatalf("inventory input %+v (forecast %+v)", inv, inv.Forecast)
	}
	var b strings.Builder
	audit.Explain(&b, []audit.Record{rec}, nil)
	why := b.String()
	if sc := inv.Forecast.Shadow; sc == nil || sc.Version != "models-8" || sc.Cover.DaysOfCover != 38 || !math.IsInf(sc.Cover.DaysOfCoverHigh, 1) {
		t.Errorf("shadow cover %+v", sc)
	}
	if !strings.Contains(why, "model set models-7") || !strings.Contains(why, "32 to 55") || !strings.Contains(why, "shadow model set models-8") {
		t.Errorf("why does not name the forecast:\n%s", why)
	}
	// B's forecast is past its horizon: its moving average decides. At 10 days nothing; at 45 a
	// promotion whose record names no model set.
	if n := len(r.records(audit.Filter{SKU: "B"})); n != 0 {
		t.Errorf("%d records of B at 10 days of cover: a forecast past its horizon was used", n)
	}
	r.state.setCover("B", "s1", 45)
	r.eng.FeatureChanged("units", "B")
	testutil.WaitFor(t, 10*time.Second, "B promoted on its moving average", func() bool {
		return len(r.records(audit.Filter{SKU: "B", Outcome: audit.OutcomeFired})) == 1
	})
	if inv := r.records(audit.Filter{SKU: "B"})[0].Inventory; inv.Forecast != nil || inv.Inventory.DaysOfCover != 45 || inv.Inventory.Forecast != "" {
		t.Errorf("B's inventory input %+v (forecast %+v)", inv, inv.Forecast)
	}
}

// A forecast a channel fell back in is used and the record and the why say which channel and why; a
// forecast missing a channel (Incomplete) understates demand and is not used: B's moving average
// (10 days) decides, not its forecast's 40.
func TestForecastFallbacksShownIncompleteNotUsed(t *testing.T) {
	r := newRig(t, nil)
	r.activate(testRules)
	now := r.clock()
	r.fc.set("A", "s1", registry.Cover{Version: "models-7", Methods: []forecast.Method{forecast.SES, registry.FallbackMethod},
		DailyMean: 2.5, Days: 40, LowDays: 40, HighDays: 40, DataTo: now.Add(-12 * time.Hour),
		Fallbacks: []registry.ChannelFallback{{Channel: "retail", Err: "value 5 is beyond ±1e+100", Mean: 1.5, Days: 7}}})
	r.fc.set("B", "s1", registry.Cover{Version: "models-7", Methods: []forecast.Method{forecast.SES}, Days: 40, LowDays: 40, HighDays: 40,
		DataTo: now.Add(-12 * time.Hour), Incomplete: true,
		Fallbacks: []registry.ChannelFallback{{Channel: "retail", Err: "value 58 is NaN", Missing: true}}})
	for _, sku := range []string{"A", "B"} {
		r.state.setFeature("units", sku, 40, now, nil)
		r.state.setCover(sku, "s1", 10)
	}
	r.state.setFeature("availability", "l1", 0.9, now, nil)
	r.state.setFeature("availability", "l2", 0.9, now, nil)
	r.eng.FeatureChanged("availability", "l1")
	r.eng.FeatureChanged("availability", "l2")
	testutil.WaitFor(t, 10*time.Second, "A promoted on its forecast", func() bool {
		return len(r.records(audit.Filter{SKU: "A", Outcome: audit.OutcomeFired})) == 2
	})
	rec := r.records(audit.Filter{SKU: "A", Outcome: audit.OutcomeFired})[0]
	if fc := rec.Inventory.Forecast; fc == nil || len(fc.Fallbacks) != 1 || !strings.Contains(fc.Fallbacks[0], "retail") {
		t.Errorf("A's forecast reference: %+v", fc)
	}
	var b strings.Builder
	audit.Explain(&b, []audit.Record{rec}, nil)
	if why := b.String(); !strings.Contains(why, "retail") || !strings.Contains(why, "beyond") {
		t.Errorf("the why does not say retail fell back:\n%s", why)
	}
	if n := len(r.records(audit.Filter{SKU: "B"})); n != 0 {
		t.Errorf("%d records of B at 10 days of cover: an incomplete forecast (40 days) was used", n)
	}
	// At 45 days of its moving average B is promoted; the record and the why say why its forecast was not used.
	r.state.setCover("B", "s1", 45)
	r.eng.FeatureChanged("units", "B")
	testutil.WaitFor(t, 10*time.Second, "B promoted on its moving average", func() bool {
		return len(r.records(audit.Filter{SKU: "B", Outcome: audit.OutcomeFired})) == 1
	})
	recB := r.records(audit.Filter{SKU: "B"})[0]
	b.Reset()
	audit.Explain(&b, []audit.Record{recB}, nil)
	if inv := recB.Inventory; inv.Forecast != nil || !strings.Contains(inv.NotUsed, "incomplete") || !strings.Contains(b.String(), "retail (fit failed: value 58 is NaN)") {
		t.Errorf("B's record: forecast %+v, not used %q; why:\n%s", inv.Forecast, inv.NotUsed, b.String())
	}
}
