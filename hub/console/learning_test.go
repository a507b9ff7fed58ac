package console

import (
	"context"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub/learn/registry"
	"github.com/gemba-io/gemba/hub/monitor/kpi"
	"github.com/gemba-io/gemba/hub/state/features"
	"github.com/gemba-io/gemba/hub/state/inventory"
)

type fakeLearning struct {
	sets  []registry.Meta
	lifts []kpi.Lift
}

func (f *fakeLearning) ModelSets(context.Context) (string, string, []registry.Meta, error) {
	return f.sets[0].Version, f.sets[1].Version, f.sets, nil
}

func (f *fakeLearning) Lifts(context.Context) ([]kpi.Lift, error) { return f.lifts, nil }

// The learning page shows which model set gives days of cover and which is shadowed, and each
// experiment's lift per arm with its interval and a sample-ratio mismatch; with learning off it
// says so rather than failing.
func TestLearningPage(t *testing.T) {
	e := newEnv(t, nil)
	sc, _ := e.login(t, "vera", "viewer-pw")
	off := e.do("GET", "/console/learning", nil, []*http.Cookie{sc}, nil)
	if off.Code != 200 || !strings.Contains(off.Body.String(), "learning is off") {
		t.Fatalf("learning off: %d\n%s", off.Code, off.Body.String())
	}
	day := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	e.learning = &fakeLearning{
		sets: []registry.Meta{{Version: "aaaaaaaaaaaaaaaa1", From: day, To: day.AddDate(0, 0, 28), Series: 120, MASE: 0.823, Baseline: 0.888, Backtested: 120},
			{Version: "bbbbbbbbbbbbbbbb2", From: day, To: day.AddDate(0, 0, 29), Series: 121, Failed: 2, MASE: 0.8, Baseline: 0.9, Backtested: -1},
			{Version: "cccccccccccccccc3", From: day, To: day.AddDate(0, 0, 20), Series: 7}},
		lifts: []kpi.Lift{{Rule: "clear-web", Arm: "holdout", Lift: 1.31, Low: 1.12, High: 1.53, Level: 0.95, Treated: 90, Held: 10, SRM: true},
			{Rule: "clear-web", Arm: "10%", Lift: 1.2, Low: 1.1, High: 1.3, Level: 0.95, Treated: 40}},
	}
	page := e.do("GET", "/console/learning", nil, []*http.Cookie{sc}, nil)
	body := page.Body.String()
	for _, want := range []string{"aaaaaaaaaaaa", "<strong>active</strong>", "shadow", "0.823", "0.888", "clear-web", "holdout", "1.310", "1.120 – 1.530 (95.0%)", "mismatch", "10%"} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if page.Code != 200 {
		t.Errorf("status %d", page.Code)
	}
	row := func(v string) string {
		i := strings.Index(body, v)
		if i < 0 {
			return ""
		}
		return body[strings.LastIndex(body[:i], "<tr"):][:strings.Index(body[strings.LastIndex(body[:i], "<tr"):], "</tr>")]
	}
	if a, s := row("aaaaaaaaaaaa"), row("bbbbbbbbbbbb"); !strings.Contains(a, "<strong>active</strong>") || !strings.Contains(s, "shadow") {
		t.Errorf("rows: active %q shadow %q", a, s)
	}
	// A set none of whose series was backtested has no MASE (not a perfect 0.000); one stored
	// before sets counted them (-1) shows its figures.
	if c := row("cccccccccccc"); strings.Contains(c, "0.000") || !strings.Contains(c, "–") {
		t.Errorf("a set never backtested: %q", c)
	}
	if b := row("bbbbbbbbbbbb"); !strings.Contains(b, "0.800") {
		t.Errorf("a set stored before backtested was counted: %q", b)
	}
}

// The inventory page shows the active model set's cover beside the moving average's: days, the
// interval, the daily mean and the set; a set past its horizon marked stale; "no demand" for +Inf.
func TestInventoryForecastColumn(t *testing.T) {
	e := newEnv(t, nil)
	day := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	rows := []inventoryRow{
		{position: inventory.Position{SKU: "A", Site: "s1", Position: 40, DailyRate: 4, DaysOfCover: 10},
			Forecast: &registry.Cover{Version: "cafecafecafecafe", Days: 12.5, LowDays: 9.25, HighDays: math.Inf(1), DailyMean: 3.2, DataTo: day}},
		{position: inventory.Position{SKU: "B", Site: "s1", Position: 5, DailyRate: 1, DaysOfCover: 5}},
		{position: inventory.Position{SKU: "C", Site: "s1", Position: 5, DailyRate: 1, DaysOfCover: 5},
			Forecast: &registry.Cover{Version: "beefbeefbeefbeef", Days: 7, LowDays: 7, HighDays: 7, Stale: true}},
	}
	w := httptest.NewRecorder()
	e.c.render(w, httptest.NewRequest("GET", "/console/inventory", nil), http.StatusOK, "inventory", page{Title: "Inventory",
		Data: map[string]any{"Positions": rows, "Now": day}})
	body := w.Body.String()
	if w.Code != 200 {
		t.Fatalf("render: %d %s\n%s", w.Code, body, e.logs.String())
	}
	for _, want := range []string{"12.5 (9.2 – no demand), 3.2/day", "cafecafecafe", `class="stale"`, "beefbeefbeef"} {
		if !strings.Contains(body, want) {
			t.Errorf("inventory page lacks %q", want)
		}
	}
}

// The Lines table: each line's state (as decisions derive it), availability with its freshness,
// units per hour, and its state over time from the monitor's slices, coloured per state.
func TestLinesTable(t *testing.T) {
	e := newEnv(t, nil)
	day := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	avail := features.Reading{Value: features.Value{Value: 0.92}, AgeSeconds: 12}
	rows := []lineRow{
		{ID: "l1", Site: "s1", State: "running", Availability: &avail, UnitsPerHour: 240, Units: &avail,
			Timeline:     []cell{{X: 0, W: 500, State: "running", Title: "00:00 running"}, {X: 500, W: 500, State: "down", Title: "12:00 down"}},
			TimelineFrom: day, TimelineTo: day.Add(24 * time.Hour)},
		{ID: "l2", Site: "s1", State: "unknown"},
	}
	w := httptest.NewRecorder()
	e.c.render(w, httptest.NewRequest("GET", "/console/features", nil), http.StatusOK, "features", page{Title: "Lines & features",
		Data: map[string]any{"LineRows": rows}})
	body := w.Body.String()
	if w.Code != 200 {
		t.Fatalf("render: %d %s\n%s", w.Code, body, e.logs.String())
	}
	for _, want := range []string{`id="lines"`, "c-running", "0.92", "240", `class="s-running"`, `class="s-down"`, "12:00 down", "no reading", "no history kept"} {
		if !strings.Contains(body, want) {
			t.Errorf("lines table lacks %q", want)
		}
	}
}

// A lift that is not a finite number (+Inf over a baseline near 0, its interval NaN: kpi.Lift)
// shows as "—", as the console shows a figure it does not have, not as "+Inf" or "NaN".
func TestLearningPageNonFiniteLift(t *testing.T) {
	e := newEnv(t, nil)
	sc, _ := e.login(t, "vera", "viewer-pw")
	day := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	e.learning = &fakeLearning{
		sets:  []registry.Meta{{Version: "aaaaaaaaaaaaaaaa1", From: day, To: day}, {Version: "bbbbbbbbbbbbbbbb2", From: day, To: day}},
		lifts: []kpi.Lift{{Rule: "clear-web", Arm: "holdout", Lift: math.Inf(1), Low: math.NaN(), High: math.Inf(-1), Level: 0.95, Treated: 2, Held: 2}},
	}
	page := e.do("GET", "/console/learning", nil, []*http.Cookie{sc}, nil)
	body := page.Body.String()
	i := strings.Index(body, `id="lifts"`)
	if page.Code != 200 || i < 0 {
		t.Fatalf("%d %s", page.Code, body)
	}
	lifts := body[i:]
	for _, bad := range []string{"Inf", "NaN"} {
		if strings.Contains(lifts, bad) {
			t.Errorf("the lifts table shows %q:\n%s", bad, lifts)
		}
	}
	if !strings.Contains(lifts, `<td class="n">—</td>`) || !strings.Contains(lifts, "— – — (95.0%)") {
		t.Errorf("the lifts table does not show — for the lift and its interval:\n%s", lifts)
	}
}
