package console

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub/learn/registry"
	"github.com/gemba-io/gemba/hub/monitor/kpi"
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
		sets: []registry.Meta{{Version: "aaaaaaaaaaaaaaaa1", From: day, To: day.AddDate(0, 0, 28), Series: 120, MASE: 0.823, Baseline: 0.888},
			{Version: "bbbbbbbbbbbbbbbb2", From: day, To: day.AddDate(0, 0, 29), Series: 121, Failed: 2, MASE: 0.8, Baseline: 0.9}},
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
}
