package backtest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub/act"
	"github.com/gemba-io/gemba/hub/decide/experiment"
	"github.com/gemba-io/gemba/hub/decide/rules"
)

// A rule with a holdout: a held-out unit is never promoted (the live engine records it held out,
// acts on nothing and uses up no cooldown), so the backtest must not report a promotion for it.
// The experiment id is chosen so that A on web is held out and A on retail treated.
func TestBacktestHoldsOutAsLive(t *testing.T) {
	cfg, _ := testConfig(t)
	js := hubNATS(t, cfg)
	publishHistory(t, js, cfg)
	src := strings.Replace(testRules, "promote: {channels: [\"*\"], discount: 10, duration: 24h}",
		"promote: {channels: [\"*\"], discount: 10, duration: 24h}\n    experiment: {id: "+holdoutSalt(t)+", holdout: 0.5}", 1)
	set, err := rules.Load([]byte(src), rules.KnownFeatures("availability", "units"))
	if err != nil {
		t.Fatal(err)
	}
	var got []Decision
	sum, err := Run(context.Background(), Options{JS: js, Config: cfg, Rules: set, From: at(9, 0), To: at(14, 0),
		Out: func(d Decision) { got = append(got, d) }, TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	SortDecisions(got)
	var lines []string
	for _, d := range got {
		if d.Rule == "promote-over" {
			lines = append(lines, line(d))
		}
	}
	want := []string{
		"12:30:00 A retail promote-over promote fired",
		"12:30:00 A web promote-over promote held_out", // once, for the promotion's duration
		"13:00:00 A retail promote-over promote suppressed by cooldown",
	}
	if !slices.Equal(lines, want) {
		t.Fatalf("decisions:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	if sum.ByOutcome["held_out"] != 1 || sum.ByOutcome["held"] != 6 || sum.ByOutcome["fired"] != 1 {
		t.Errorf("summary by outcome %v", sum.ByOutcome)
	}
}

// holdoutSalt is an experiment id that holds A out on web and treats it on retail (holdout 0.5).
func holdoutSalt(t *testing.T) string {
	t.Helper()
	for i := 0; ; i++ {
		s := fmt.Sprint("ho-", i)
		w, err := experiment.Assign(s, "A", "web", 0.5)
		if err != nil {
			t.Fatal(err)
		}
		r, _ := experiment.Assign(s, "A", "retail", 0.5)
		if w.Group == experiment.Held && r.Group == experiment.Treated {
			return s
		}
	}
}

// A span the streams hold nothing of (after their last input, or before their oldest) is an error
// naming what the streams do hold, not an empty replay that reads as "nothing would have happened".
func TestBacktestRefusesSpanBeyondTheStreams(t *testing.T) {
	cfg, _ := testConfig(t)
	js := hubNATS(t, cfg)
	publishHistory(t, js, cfg) // inputs from a week before the day to 14:00
	for _, c := range []struct {
		from, to time.Time
		want     string
	}{
		{at(15, 0), at(18, 0), "the latest input the streams hold is at 2026-11-20T14:00:00Z"},
		{day.AddDate(0, 0, 2), day.AddDate(0, 0, 3), "the latest input the streams hold is at 2026-11-20T14:00:00Z"},
		{day.AddDate(0, 0, -30), day.AddDate(0, 0, -29), "the oldest input the streams hold is at 2026-11-13T12:00:00Z"},
	} {
		n := 0
		_, err := Run(context.Background(), Options{JS: js, Config: cfg, Rules: testSet(t), From: c.from, To: c.to, TempDir: t.TempDir(),
			Out: func(Decision) { n++ }})
		if err == nil || !strings.Contains(err.Error(), "no input in the span") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("[%s, %s): err %v after %d decisions; want no input in the span: %q",
				c.from.Format(time.RFC3339), c.to.Format(time.RFC3339), err, n, c.want)
		}
	}
}

// A channel the hub's act section does not deliver on is not decided by the live engine (it would
// reserve caps and be recorded fired, then fail in the outbox for good): the backtest does not
// report decisions for it either.
func TestBacktestSkipsUndeliverableChannels(t *testing.T) {
	cfg, _ := testConfig(t)
	js := hubNATS(t, cfg)
	publishHistory(t, js, cfg)
	webOnly := *cfg
	a := *cfg.Act
	a.Channels = map[string]act.Channel{"web": {}}
	webOnly.Act = &a
	var got []string
	sum, err := Run(context.Background(), Options{JS: js, Config: &webOnly, Rules: testSet(t), From: at(9, 0), To: at(14, 0),
		Out: func(d Decision) { got = append(got, line(d)) }, TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 5 || slices.ContainsFunc(got, func(l string) bool { return strings.Contains(l, " retail ") }) {
		t.Fatalf("decisions:\n%s\nwant web's 5 alone", strings.Join(got, "\n"))
	}
	if sum.Undeliverable != 5 || sum.ByChannel["retail"] != 0 {
		t.Errorf("summary: %d undeliverable, by channel %v; want retail's 5 not decided", sum.Undeliverable, sum.ByChannel)
	}
}
