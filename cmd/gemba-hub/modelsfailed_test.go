package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub"
	"github.com/gemba-io/gemba/hub/ingest/commerce"
	"github.com/gemba-io/gemba/hub/learn/demand"
	"github.com/gemba-io/gemba/hub/learn/registry"
	"github.com/gemba-io/gemba/internal/natstest"
)

// A SKU whose only series failed to fit is in the set (its failure, its moving average): models
// show --sku says so, and what the SKU counts as: no forecast at all (the hub's cover falls back to
// the inventory's own moving average), not "counted at its moving average" as a channel of a fitted
// SKU is. It used to say "no series" and exit 1.
func TestModelsShowSKUWhoseOnlySeriesFailed(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	dir := t.TempDir()
	cfgFile := writeFile(t, filepath.Join(dir, "hub.yaml"), fmt.Sprintf(`hub: {id: t1, data_dir: %s/data}
nats: {servers: [%q]}
learn: {enabled: true, horizon_days: 7}
`, dir, n.URL()))
	cfg := hubMade(t, js, cfgFile)

	const days = 60
	from := time.Date(2026, 9, 1, 0, 0, 0, 0, time.UTC)
	ds, err := demand.New(demand.Options{From: from, To: from.AddDate(0, 0, days), ByChannel: true})
	if err != nil {
		t.Fatal(err)
	}
	for d := range days {
		q := 9 + float64(d%2)*2
		sale := func(sku, ch string, q float64) {
			ds.Add(commerce.Sale{OrderID: fmt.Sprintf("%s-%s-%d", sku, ch, d), Line: 1, SKU: sku, Site: "s1", Channel: ch,
				Quantity: q, UnitPrice: 1, Currency: "EUR", Time: from.AddDate(0, 0, d).Add(10 * time.Hour)})
		}
		sale("A", "web", q)
		// A's retail and N's only series hold a value beyond what a series may hold (a bad day long
		// ago): their fits fail, their last week's moving average is 10 a day.
		big := q
		if d == 5 {
			big = 2e100
		}
		sale("A", "retail", big)
		sale("N", "web", big)
	}
	s, err := registry.Fit(context.Background(), ds, registry.FitOptions{By: "test", Horizon: 7})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Failed) != 2 || len(s.Series) != 1 {
		t.Fatalf("script: %d fitted, failed %+v; want A's web fitted, A's retail and N's web failed", len(s.Series), s.Failed)
	}
	reg, err := hub.OpenModels(context.Background(), js, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	v, err := reg.Store(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}

	out, errOut, code := runHub(t, dir, nil, "models", "show", v, "--sku", "N", "-c", cfgFile)
	if code != 0 || !strings.Contains(out, "failed: N @ s1 / web: ") || !strings.Contains(out, "beyond") ||
		!strings.Contains(out, "no forecast for N @ s1") || !strings.Contains(out, "inventory's moving average") || strings.Contains(out, "counted at") {
		t.Errorf("show --sku N: exit %d\n%s%s\nwant its failure and that N @ s1 has no forecast (the inventory's moving average decides)", code, out, errOut)
	}
	// A fitted SKU's failed channel is counted at its moving average, beside its fitted one.
	out, errOut, code = runHub(t, dir, nil, "models", "show", v, "--sku", "A", "-c", cfgFile)
	if code != 0 || !strings.Contains(out, "A @ s1 / web: ") || !strings.Contains(out, "failed: A @ s1 / retail: ") ||
		!strings.Contains(out, "counted at its moving average, 10.142857142857142/day over 7 days") {
		t.Errorf("show --sku A: exit %d\n%s%s", code, out, errOut)
	}
	// The set's summary says the same of each failure.
	out, errOut, code = runHub(t, dir, nil, "models", "show", v, "-c", cfgFile)
	if code != 0 || !strings.Contains(out, "series: 1 fitted, 2 failed") || strings.Count(out, "counted at its moving average") != 1 ||
		!strings.Contains(out, "no forecast for N @ s1") {
		t.Errorf("show: exit %d\n%s%s", code, out, errOut)
	}
	out, errOut, code = runHub(t, dir, nil, "models", "show", v, "--sku", "N", "--json", "-c", cfgFile)
	var doc struct {
		Series     []registry.Model   `json:"series"`
		Failed     []registry.Failure `json:"failed"`
		NoForecast []string           `json:"no_forecast"`
	}
	if err := json.Unmarshal([]byte(out), &doc); code != 0 || err != nil || len(doc.Series) != 0 || len(doc.Failed) != 1 ||
		doc.Failed[0].Fallback == nil || len(doc.NoForecast) != 1 || doc.NoForecast[0] != "s1" {
		t.Errorf("show --sku N --json: exit %d, %v\n%s%s", code, err, out, errOut)
	}
	// --site without --sku used to be ignored: the whole set printed as if it were the site's.
	if out, errOut, code = runHub(t, dir, nil, "models", "show", v, "--site", "s2", "-c", cfgFile); code != 2 || !strings.Contains(errOut, "--site") {
		t.Errorf("show --site without --sku: exit %d\n%s%s\nwant exit 2 naming --site", code, out, errOut)
	}
	if _, errOut, code = runHub(t, dir, nil, "models", "show", v, "--sku", "N", "--site", "s2", "-c", cfgFile); code != 1 ||
		!strings.Contains(errOut, `no series for SKU "N" at site s2`) {
		t.Errorf("show --sku N --site s2: exit %d, %s", code, errOut)
	}
}

// A set whose series were all too short to backtest has no MASE: list and show say so rather than
// print a mean MASE of 0.000 (a perfect forecast) for it and for the moving average.
func TestModelsWithoutBacktestShowNoMASE(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	dir := t.TempDir()
	cfgFile := writeFile(t, filepath.Join(dir, "hub.yaml"), fmt.Sprintf(`hub: {id: t1, data_dir: %s/data}
nats: {servers: [%q]}
learn: {enabled: true, horizon_days: 7}
`, dir, n.URL()))
	cfg := hubMade(t, js, cfgFile)
	from := time.Date(2026, 9, 1, 0, 0, 0, 0, time.UTC)
	ds, err := demand.New(demand.Options{From: from, To: from.AddDate(0, 0, 30)})
	if err != nil {
		t.Fatal(err)
	}
	for d := range 30 {
		ds.Add(commerce.Sale{OrderID: fmt.Sprint(d), Line: 1, SKU: "A", Site: "s1", Channel: "web", Quantity: float64(9 + d%3),
			UnitPrice: 1, Currency: "EUR", Time: from.AddDate(0, 0, d).Add(10 * time.Hour)})
	}
	s, err := registry.Fit(context.Background(), ds, registry.FitOptions{By: "test", Horizon: 7})
	if err != nil {
		t.Fatal(err)
	}
	if sum := s.Summary(); sum.Backtested != 0 || sum.Series != 1 {
		t.Fatalf("script: %+v, want one series, not backtested", sum)
	}
	reg, err := hub.OpenModels(context.Background(), js, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	v, err := reg.Store(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runHub(t, dir, nil, "models", "list", "-c", cfgFile)
	if code != 0 || !strings.Contains(out, v) || strings.Contains(out, "0.000") {
		t.Errorf("list: exit %d\n%s%s\nwant no MASE of 0.000 for a set never backtested", code, out, errOut)
	}
	out, errOut, code = runHub(t, dir, nil, "models", "show", v, "-c", cfgFile)
	if code != 0 || strings.Contains(out, "MASE 0.000") || !strings.Contains(out, "backtested 0") {
		t.Errorf("show: exit %d\n%s%s\nwant no mean MASE of 0.000 for a set never backtested", code, out, errOut)
	}
}
