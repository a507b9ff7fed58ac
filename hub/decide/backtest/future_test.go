package backtest

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub"
	"github.com/gemba-io/gemba/hub/ingest/commerce"
)

// An agent whose clock is a year ahead, or a sale dated a year out, is refused by the hub (the
// feature store's and the inventory's max_future, against the hub's clock when it read them): the
// backtest refuses them too, and goes on reading what its stream holds after them. It decides the
// scripted day's decisions, counting the refused record.
func TestBacktestRefusesFutureInputs(t *testing.T) {
	ahead := time.Now().UTC().AddDate(1, 0, 0).Truncate(time.Second)
	for _, c := range []struct {
		name    string
		publish func(t *testing.T, js jetstream.JetStream, cfg *hub.Config)
		future  int // feature records refused for their future window
		refused int // sales and counts the inventory refuses
	}{
		{"agent clock ahead", func(t *testing.T, js jetstream.JetStream, _ *hub.Config) {
			ag := &agent{js: js, id: "agent-skew"}
			ag.add("l2.pack.state", "availability", ahead, 0.9)
			ag.flush(t)
		}, 1, 0},
		{"sale dated ahead", func(t *testing.T, js jetstream.JetStream, cfg *hub.Config) {
			pub, err := commerce.NewPublisher(js, cfg.Commerce)
			if err != nil {
				t.Fatal(err)
			}
			mustPublish(t, pub.Publish(context.Background(), []commerce.Event{commerce.Sale{OrderID: "typo", Line: 1, SKU: "A",
				Site: "s1", Channel: "web", Quantity: 1, UnitPrice: 2, Currency: "EUR", Time: ahead}}))
		}, 0, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, _ := testConfig(t)
			js := hubNATS(t, cfg)
			c.publish(t, js, cfg) // first in its stream: everything the day holds comes after it
			publishHistory(t, js, cfg)
			var got []Decision
			sum, err := Run(context.Background(), Options{JS: js, Config: cfg, Rules: testSet(t), From: at(9, 0), To: at(14, 0),
				Out: func(d Decision) { got = append(got, d) }, TempDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			SortDecisions(got)
			var lines []string
			for _, d := range got {
				lines = append(lines, line(d))
			}
			want := []string{
				"10:00:10 A retail hold-short hold held",
				"10:00:10 A web hold-short hold held",
				"11:00:00 A retail hold-short hold held",
				"11:00:00 A web hold-short hold held",
				"12:00:00 A retail hold-short hold held",
				"12:00:00 A web hold-short hold held",
				"12:30:00 A retail promote-over promote fired",
				"12:30:00 A web promote-over promote fired",
				"13:00:00 A retail promote-over promote suppressed by cooldown",
				"13:00:00 A web promote-over promote suppressed by cooldown",
			}
			if !slices.Equal(lines, want) {
				t.Errorf("decisions:\n%s\nwant the scripted day's:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
			}
			if sum.Future != c.future || sum.Refused != c.refused || sum.Sales != 7+c.refused || sum.Snapshots != 2 {
				t.Errorf("summary: %d future, %d refused, %d sales, %d counts; want %d future, %d refused, %d sales, 2 counts",
					sum.Future, sum.Refused, sum.Sales, sum.Snapshots, c.future, c.refused, 7+c.refused)
			}
		})
	}
}
