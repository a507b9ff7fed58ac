package backtest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/gemba-io/gemba/hub/decide/rules"
	"github.com/gemba-io/gemba/hub/ingest/commerce"
)

// A SKU stocked and sold at a site where no line makes it (a warehouse the graph has no line
// of) is a unit the live engine learns of from the inventory's notices and from then on
// evaluates every timer tick with the graph's units: a promotion of its overstock is decided again
// each time bucket (suppressed by the cooldown here), as live, not only when its stock moves.
func TestBacktestEvaluatesInventoryUnitsOnTheTimer(t *testing.T) {
	cfg, _ := testConfig(t)
	js := hubNATS(t, cfg)
	pub, err := commerce.NewPublisher(js, cfg.Commerce)
	if err != nil {
		t.Fatal(err)
	}
	var evs []commerce.Event
	for d := 7; d >= 1; d-- {
		evs = append(evs, commerce.Sale{OrderID: fmt.Sprintf("w%d", d), Line: 1, SKU: "A", Site: "w2", Channel: "web",
			Quantity: 100, UnitPrice: 2, Currency: "EUR", Time: at(12, 0).AddDate(0, 0, -d)})
	}
	evs = append(evs, commerce.Snapshot{SnapshotID: "erp-w2", SKU: "A", Site: "w2", OnHand: 4000, Time: at(9, 30)})
	mustPublish(t, pub.Publish(context.Background(), evs))
	publishHistory(t, js, cfg)
	set, err := rules.Load([]byte(`name: dc
hit_policy: first
rules:
  - name: promote-dc
    when: lines.size() == 0 && inventory.days_of_cover > 30.0
    promote: {channels: [web], discount: 10, duration: 24h}
`), rules.KnownFeatures("availability", "units"))
	if err != nil {
		t.Fatal(err)
	}
	var got []Decision
	if _, err := Run(context.Background(), Options{JS: js, Config: cfg, Rules: set, From: at(9, 0), To: at(14, 0),
		Out: func(d Decision) { got = append(got, d) }, TempDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	SortDecisions(got)
	var lines []string
	for _, d := range got {
		lines = append(lines, line(d)+" "+d.Site)
	}
	want := []string{
		"09:30:00 A web promote-dc promote fired w2",
		"10:00:00 A web promote-dc promote suppressed by cooldown w2",
		"11:00:00 A web promote-dc promote suppressed by cooldown w2",
		"12:00:00 A web promote-dc promote suppressed by cooldown w2",
		"13:00:00 A web promote-dc promote suppressed by cooldown w2",
	}
	if !slices.Equal(lines, want) {
		t.Fatalf("decisions:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
}
