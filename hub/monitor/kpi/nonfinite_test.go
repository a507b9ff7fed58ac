package kpi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/decide/experiment"
	"github.com/gemba-io/gemba/hub/decide/guard"
	"github.com/gemba-io/gemba/hub/decide/rules"
	"github.com/gemba-io/gemba/hub/ingest/commerce"
	"github.com/gemba-io/gemba/hub/monitor/kpi"
	"github.com/gemba-io/gemba/hub/monitor/outcome"
	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

// TestNonFiniteLiftServedAsNull: a holdout whose treated unit sold 25 against a baseline of 1e-307
// (sales of 1e-307 a day before: a quantity the commerce API takes, any finite one but 0 within
// ±1e15) has a response of 25/1e-307 = +Inf: its lift is +Inf and its interval NaN (the variance of
// an infinite mean). encoding/json refuses both, and the KPI API answered 200 with an empty body
// (the figures lost with it, the error nowhere). Now each non-finite figure is null, the others are
// served, and an encoding error would be a 500 that says what failed.
func TestNonFiniteLiftServedAsNull(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, js := natstest.Connect(t, natstest.JetStream(t).URL())
	acfg := audit.Config{Prefix: "gemba"}
	acfg.Defaults()
	log, err := audit.Open(ctx, js, acfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ccfg := commerce.DefaultConfig()
	if _, err := commerce.EnsureStream(ctx, js, ccfg); err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	order := 0
	sell := func(sku string, at time.Time, qty float64) {
		order++
		b, err := commerce.EncodeSale(commerce.Sale{OrderID: fmt.Sprint("o", order), Line: 1, SKU: sku, Site: "s1", Channel: "web",
			Quantity: qty, UnitPrice: 2, Currency: "EUR", Time: at})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(ctx, commerce.SalesSubject("gemba", "web"), b); err != nil {
			t.Fatal(err)
		}
	}
	// A (treated) sold 1e-307 a day for four weeks, then 25 in its window; C (treated), B and D
	// (held out) 10 a day, then 20, 12 and 8.
	for sku, q := range map[string][2]float64{"A": {1e-307, 25}, "B": {10, 12}, "C": {10, 20}, "D": {10, 8}} {
		for d := 1; d <= 28; d++ {
			sell(sku, start.Add(-time.Duration(d)*24*time.Hour+time.Hour), q[0])
		}
		sell(sku, start.Add(3*time.Hour), q[1])
	}
	for sku, g := range map[string]experiment.Group{"A": experiment.Treated, "C": experiment.Treated, "B": experiment.Held, "D": experiment.Held} {
		id := fmt.Sprintf("%032x", sku[0])
		r := audit.Record{DecisionID: id, Event: audit.EventDecided, Outcome: audit.OutcomeFired, Mode: audit.ModeActive, Time: start,
			RuleSet: audit.RuleSetRef{Name: "x", Version: "v1"}, Rule: audit.RuleRef{Name: "clear"}, SKU: sku, Site: "s1", Channel: "web",
			Action:     rules.Action{Kind: rules.Promote, Channels: []string{"web"}, Discount: 10, Duration: 24 * time.Hour},
			Experiment: &audit.ExperimentRef{ID: "clear", Holdout: &experiment.Assignment{Salt: "clear", Share: 0.5, Group: g}}}
		if g == experiment.Held {
			r.Outcome = audit.OutcomeHeldOut
		} else {
			r.Verdict = &guard.Verdict{DecisionID: id, Outcome: guard.Allow, ActionTime: start}
		}
		if _, err := log.Publish(ctx, r, 0); err != nil {
			t.Fatal(err)
		}
	}
	m := outcome.New(js, nil, outcome.Options{Audit: acfg, Commerce: ccfg.Stream, Prefix: "gemba", Every: 50 * time.Millisecond,
		Now: func() time.Time { return start.Add(3 * 24 * time.Hour) }})
	var wg sync.WaitGroup
	wg.Go(func() { _ = m.Run(ctx) })
	defer wg.Wait()
	defer cancel()
	testutil.WaitFor(t, 20*time.Second, "the holdout's lift", func() bool { l, _ := m.Lifts(ctx); return len(l) == 1 })
	l, _ := m.Lifts(ctx)
	t.Logf("measured: %+v", l[0])
	if !math.IsInf(l[0].Lift, 1) || !math.IsNaN(l[0].Low) || !math.IsNaN(l[0].High) {
		t.Fatalf("lift %+v: want +Inf in NaN – NaN (the case this test is about)", l[0])
	}

	tr, err := kpi.Open(ctx, js, kpi.Options{Audit: acfg, Lifts: m})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	srv := httptest.NewServer(tr.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/api/v1/kpis")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var got struct {
		Decisions map[string]uint64 `json:"decisions"`
		Lifts     []map[string]any  `json:"lifts"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &got) != nil {
		t.Fatalf("GET /api/v1/kpis: %d, body %q: want 200 with the figures", resp.StatusCode, body)
	}
	if got.Decisions[audit.OutcomeFired] != 2 || len(got.Lifts) != 1 {
		t.Fatalf("figures %s: want 2 fired and the holdout's lift", body)
	}
	lift := got.Lifts[0]
	for _, k := range []string{"lift", "low", "high"} {
		if v, ok := lift[k]; !ok || v != nil {
			t.Errorf("%s: %v (present %v), want null", k, v, ok)
		}
	}
	if lift["treated"] != 2.0 || lift["level"] != 0.95 || !bytes.Contains(body, []byte(`"lift": null`)) {
		t.Errorf("lift %s: want the finite figures as they are", body)
	}
}
