package console

import (
	"math"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/decide/experiment"
	"github.com/gemba-io/gemba/hub/decide/rules"
)

// pageText is a page's text without markup, spaces collapsed.
func pageText(body string) string {
	return strings.Join(strings.Fields(regexp.MustCompile(`<[^>]+>`).ReplaceAllString(body, " ")), " ")
}

// The why page shows a decision's experiment and forecast as sections of their own: the bandit's
// arm, posterior, arms and safety cap, the holdout's draw; the model set's days of cover with its
// interval and daily rate beside the shadow set's and the moving average's. A decision with
// neither has no such section and no empty table.
func TestWhyExperimentAndForecast(t *testing.T) {
	e := newEnv(t, nil)
	day := time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)
	both := rec(7, "SKU-7")
	both.Inventory = &audit.InventoryInput{
		Inventory:     rules.Inventory{Position: 120, DaysOfCover: 8.5, DaysOfCoverLow: 6.25, DaysOfCoverHigh: 11.75, DailyRate: 14.1, Forecast: "fa11fa11fa11fa11"},
		MovingAverage: 10,
		Forecast: &audit.ForecastRef{Version: "fa11fa11fa11fa11", Methods: []string{"ses_weekly"}, DataTo: day, HasInterval: true,
			Shadow: &audit.ShadowCover{Version: "5badc0de5badc0de", Cover: rules.Inventory{DaysOfCover: 9.5, DaysOfCoverLow: 7, DaysOfCoverHigh: math.Inf(1), DailyRate: 12.6}}},
	}
	both.Experiment = &audit.ExperimentRef{ID: "clear-web",
		Holdout: &experiment.Assignment{Salt: "clear-web", Share: 0.1, Bucket: 0.4321, Group: experiment.Treated},
		Bandit: &experiment.Choice{Experiment: "clear-web", Pool: "web", PoolRevision: 42, Discount: 10, Reason: experiment.ReasonThompson,
			Curve: experiment.Curve{N: 17}, Beta: [2]float64{0.5, -0.25},
			Arms: []experiment.ArmDraw{
				{Discount: 5, PoolN: 6, ExpectedLift: 1.1, ExpectedExtra: 3, Eligible: true, Drawn: true, Sample: 1.12, Value: 0.98},
				{Discount: 10, PoolN: 8, ExpectedLift: 1.3, ExpectedExtra: 9, Eligible: true, Drawn: true, Sample: 1.35, Value: 1.08},
				{Discount: 20, PoolN: 3, ExpectedLift: 1.6, ExpectedExtra: 180, Eligible: false},
			}}}
	neither := rec(8, "SKU-8")
	neither.Inventory = &audit.InventoryInput{Inventory: rules.Inventory{Position: 30, DaysOfCover: 3, DailyRate: 10}, MovingAverage: 10}
	e.dec.recs = []audit.Record{neither, both}
	sc, _ := e.login(t, "vera", "viewer-pw")
	get := func(r audit.Record) (string, string) {
		t.Helper()
		w := e.do("GET", "/console/decisions/"+r.DecisionID, nil, []*http.Cookie{sc}, nil)
		if w.Code != 200 {
			t.Fatalf("why %s: %d\n%s\n%s", r.DecisionID, w.Code, w.Body.String(), e.logs.String())
		}
		return w.Body.String(), pageText(w.Body.String())
	}

	body, text := get(both)
	for _, want := range []string{
		// forecast: the set in force, its interval and rate; the shadow's; the moving average's fallback (120 / 10 = 12 days)
		`id="forecast"`, "Days of cover from model set fa11fa11fa11 (methods ses_weekly), fitted on data to 2026-11-20 00:00:00Z",
		"model set fa11fa11fa11 8.5 6.2 – 11.8 14.1/day in force",
		"shadow model set 5badc0de5bad 9.5 7.0 – no demand 12.6/day decides nothing",
		"moving average — 12.0 none 10/day the fallback",
		// experiment: holdout draw and arm, bandit arm, posterior, safety cap, arms
		`id="experiment"`, "Experiment clear-web", "Holdout 10.0% of SKU × channel", "Draw 0.4321 (held out when below 0.1000)", "Arm treated",
		"Bandit pool web", "Arm chosen 10% (the best draw among the eligible arms (Thompson))",
		"Posterior pool state revision 42; 17 outcomes behind the curve", "β = (0.5, -0.25)",
		"Safety cap eligible: 5%, 10%; capped (expected extra units above the stock less its safety days, position 120): 20%",
		`id="arms"`, "20% 3 1.600 180.0 no: above the stock less safety — —", "5% 6 1.100 3.0 yes 1.120 0.980",
	} {
		if !strings.Contains(text, want) && !strings.Contains(body, want) {
			t.Errorf("why with both lacks %q", want)
		}
	}
	if !regexp.MustCompile(`<tr class="chosen"><td>10%</td>`).MatchString(body) {
		t.Errorf("the chosen arm's row is not marked")
	}

	body, text = get(neither)
	for _, absent := range []string{`id="forecast"`, `id="experiment"`, `id="arms"`, "<h2>Forecast</h2>", "<h2>Experiment</h2>"} {
		if strings.Contains(body, absent) {
			t.Errorf("why with neither has %q", absent)
		}
	}
	if !strings.Contains(text, "days of cover from the moving average of daily sales (no model set covered this SKU)") {
		t.Errorf("why with neither does not say the moving average gave the days: %s", text)
	}

	// A bandit that found no arm within the cover: none chosen, every arm capped.
	none := rec(9, "SKU-9")
	none.Outcome = audit.OutcomeSuppressed
	none.Experiment = &audit.ExperimentRef{ID: "clear-web", Bandit: &experiment.Choice{Pool: "web",
		Unit: experiment.Unit{SKU: "SKU-9", Channel: "web", Baseline: 40, Position: 30, SafetyStock: 35},
		Arms: []experiment.ArmDraw{{Discount: 5, ExpectedExtra: 50}, {Discount: 10, ExpectedExtra: 90}}}}
	e.dec.recs = []audit.Record{none}
	body, text = get(none)
	for _, want := range []string{"Arm chosen none : no arm fits the stock above safety (suppressed)", "Safety cap no arm eligible; capped (expected extra units above the stock less its safety days, position 30, safety stock 35): 5%, 10%"} {
		if !strings.Contains(text, want) {
			t.Errorf("why with no arm lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(body, `class="chosen`) {
		t.Error("an arm is marked chosen though none was")
	}
}
