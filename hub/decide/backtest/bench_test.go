package backtest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub"
	"github.com/gemba-io/gemba/hub/decide/rules"
	"github.com/gemba-io/gemba/hub/ingest/commerce"
	"github.com/gemba-io/gemba/signal"
)

// plantGraph is a 2-line plant: each line has press, weld and pack with 7 signals each (42
// signals) and makes three SKUs, sold via web, retail and wholesale.
func plantGraph() string {
	var b strings.Builder
	b.WriteString("version: bench1\nsites: [{id: p1}]\nlines: [{id: line1, site: p1}, {id: line2, site: p1}]\nmachines:\n")
	for _, l := range []string{"line1", "line2"} {
		for _, m := range machines {
			fmt.Fprintf(&b, "  - {id: %s.%s, line: %s}\n", l, m, l)
		}
	}
	b.WriteString("signals:\n")
	for _, l := range []string{"line1", "line2"} {
		for _, m := range machines {
			for _, f := range fields {
				fmt.Fprintf(&b, "  - {id: %s.%s.%s, machine: %s.%s}\n", l, m, f, l, m)
			}
		}
	}
	b.WriteString("skus:\n")
	for _, s := range benchSKUs {
		fmt.Fprintf(&b, "  - {id: %s}\n", s)
	}
	b.WriteString("channels: [{id: web}, {id: retail}, {id: wholesale}]\nedges:\n")
	for i, s := range benchSKUs {
		fmt.Fprintf(&b, "  - {kind: produces, from: line%d, to: %s}\n", i/3+1, s)
		for _, c := range []string{"web", "retail", "wholesale"}[:i%3+1] {
			fmt.Fprintf(&b, "  - {kind: sold_via, from: %s, to: %s}\n", s, c)
		}
	}
	return b.String()
}

var (
	machines  = []string{"press", "weld", "pack"}
	fields    = []string{"state", "sku", "parts", "fault", "temperature", "vibration", "power"}
	benchSKUs = []string{"A-100", "B-110", "C-120", "A-200", "B-210", "C-220"}
)

const benchHub = `hub: {id: bench}
nats: {subject_prefix: gemba}
ingest:
  production: [{signal: "*.pack.parts", feature: units}]
commerce: {channels: [web, retail, wholesale]}
features:
  - {name: availability, signal: "*.pack.state", feature: availability, key: line, max_age: 1m}
  - {name: units, signal: "*.pack.parts", feature: units, key: sku, max_age: 1m}
  - {name: temperature, signal: "*.*.temperature", feature: mean, key: machine, max_age: 1m}
graph: {file: graph.yaml}
decide: {bucket: 10m, timer: 15s}
guard: {max_discount: 20, cooldown: 1h, daily: {max_promotions: 100, max_budget: 1000}, approval: {above_discount: 12, ttl: 1h}}
`

const benchRules = `name: bench
hit_policy: first
rules:
  - name: hold-stopped-supply
    priority: 10
    when: lines.size() > 0 && !lines.exists(l, l.state == "running" && !l.stale) && inventory.days_of_cover < 7.0
    hold: {channels: ["*"], reason: no line that makes it is running}
  - name: clear-deep-overstock
    when: inventory.days_of_cover > 60.0 && lines.exists(l, l.state == "running" && !l.stale) && has(features.units) && !features.units.stale && features.units.value > 0.0
    promote: {channels: ["*"], discount: 15, duration: 48h}
  - name: promote-overstock
    when: inventory.days_of_cover > 30.0 && lines.exists(l, l.state == "running" && !l.stale) && has(features.units) && !features.units.stale && features.units.value > 0.0
    promote: {channels: ["*"], discount: 10, duration: 24h}
`

// publishPlantDay publishes a day of the plant from start: per line one agent sending a message a
// minute of 10 s windows, each window 3 features of each of the line's 21 signals (availability
// of the state, mean, p95; units of the SKU being made on the pack's parts), the line stopping an
// hour at a time; sales all day and a week before, and an ERP count every 4 hours.
func publishPlantDay(b *testing.B, js jetstream.JetStream, cfg *hub.Config, start time.Time) int {
	b.Helper()
	ctx := context.Background()
	pub, err := commerce.NewPublisher(js, cfg.Commerce)
	if err != nil {
		b.Fatal(err)
	}
	var evs []commerce.Event
	order := 0
	sale := func(sku string, t time.Time, q float64) {
		order++
		evs = append(evs, commerce.Sale{OrderID: fmt.Sprintf("o%d", order), Line: 1, SKU: sku, Site: "p1", Channel: "web",
			Quantity: q, UnitPrice: 3, Currency: "EUR", Time: t})
	}
	for d := 7; d >= 1; d-- {
		for i, s := range benchSKUs {
			sale(s, start.AddDate(0, 0, -d).Add(time.Duration(i)*time.Minute), float64(50+20*i))
		}
	}
	mustPublish(b, pub.Publish(ctx, evs))
	agents := []*agent{{js: js, id: "agent-line1"}, {js: js, id: "agent-line2"}}
	records := 0
	for end := start.Add(10 * time.Second); !end.After(start.Add(24 * time.Hour)); end = end.Add(10 * time.Second) {
		k := int(end.Sub(start) / (10 * time.Second))
		for li, ag := range agents {
			line := fmt.Sprintf("line%d", li+1)
			hour := int(end.Sub(start).Hours())
			down := (hour+li*3)%7 == 0
			sku := benchSKUs[li*3+(hour/4)%3]
			for _, m := range machines {
				for _, f := range fields {
					sig := line + "." + m + "." + f
					v := float64(k%97) + float64(li)
					switch {
					case f == "state":
						avail := 0.95
						if down {
							avail = 0
						}
						ag.add(sig, "availability", end, avail)
					case f == "parts" && m == "pack":
						units := 4.0
						if down {
							units = 0
						}
						ag.add(sig, "units", end, units, signal.Label{Key: "sku", Value: sku})
					default:
						ag.add(sig, "mean", end, v)
					}
					ag.add(sig, "p95", end, v*1.1)
					ag.add(sig, "delta", end, 1)
					records += 3
				}
			}
			if end.Second() == 0 {
				ag.flush(b)
			}
		}
		evs = evs[:0]
		if k%60 == 0 {
			sale(benchSKUs[(k/60)%6], end, 5)
		}
		if k%1440 == 0 {
			for i, s := range benchSKUs {
				evs = append(evs, commerce.Snapshot{SnapshotID: fmt.Sprintf("erp-%d", k), SKU: s, Site: "p1",
					OnHand: float64(300 * (i + 1) * (1 + k/1440)), Time: end})
			}
		}
		if len(evs) > 0 {
			mustPublish(b, pub.Publish(ctx, evs))
		}
	}
	for _, ag := range agents {
		ag.flush(b)
	}
	return records
}

// BenchmarkBacktestPlantDay replays a day of a 2-line plant (42 signals, ~1.1 M feature records)
// and reports how many times faster than real time it ran (target: ≥ 100×).
func BenchmarkBacktestPlantDay(b *testing.B) {
	dir := b.TempDir()
	for name, data := range map[string]string{"graph.yaml": plantGraph(), "hub.yaml": benchHub} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			b.Fatal(err)
		}
	}
	cfg, err := hub.Load(filepath.Join(dir, "hub.yaml"), func(string) (string, bool) { return "", false })
	if err != nil {
		b.Fatal(err)
	}
	set, err := rules.Load([]byte(benchRules), rules.KnownFeatures("availability", "units", "temperature"))
	if err != nil {
		b.Fatal(err)
	}
	js := hubNATS(b, cfg)
	start := time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)
	records := publishPlantDay(b, js, cfg, start)
	b.ResetTimer()
	var sum Summary
	for b.Loop() {
		sum, err = Run(context.Background(), Options{JS: js, Config: cfg, Rules: set, From: start, To: start.Add(24 * time.Hour),
			TempDir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
	}
	if sum.Features < records*9/10 || sum.Decisions == 0 {
		b.Fatalf("replayed %d of %d feature records, %d decisions", sum.Features, records, sum.Decisions)
	}
	b.ReportMetric(sum.Speed, "x_realtime")
	b.ReportMetric(float64(sum.Features)/sum.Wall.Seconds(), "records/s")
	b.Logf("%d feature records, %d sales, %d counts, %d evaluations, %d decisions %v in %s: %.0f× real time",
		sum.Features, sum.Sales, sum.Snapshots, sum.Evaluations, sum.Decisions, sum.ByOutcome, sum.Wall.Round(time.Millisecond), sum.Speed)
}
