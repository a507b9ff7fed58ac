package backtest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub"
	"github.com/gemba-io/gemba/hub/decide/rules"
	"github.com/gemba-io/gemba/hub/ingest/commerce"
	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/signal"
)

// A plant of two lines at one site: l1 makes A (sold on web and retail), l2 makes B (web).
const testGraph = `version: bt1
sites: [{id: s1}]
lines: [{id: l1, site: s1}, {id: l2, site: s1}]
machines: [{id: l1.pack, line: l1}, {id: l2.pack, line: l2}]
signals:
  - {id: l1.pack.state, machine: l1.pack}
  - {id: l1.pack.parts, machine: l1.pack}
  - {id: l2.pack.state, machine: l2.pack}
  - {id: l2.pack.parts, machine: l2.pack}
skus: [{id: A}, {id: B}]
channels: [{id: web}, {id: retail}]
edges:
  - {kind: produces, from: l1, to: A}
  - {kind: produces, from: l2, to: B}
  - {kind: sold_via, from: A, to: web}
  - {kind: sold_via, from: A, to: retail}
  - {kind: sold_via, from: B, to: web}
`

const testHub = `hub: {id: bt}
nats: {subject_prefix: gemba}
ingest:
  production: [{signal: "*.pack.parts", feature: units}]
commerce: {channels: [web, retail]}
features:
  - {name: availability, signal: "*.pack.state", feature: availability, key: line, max_age: 1m}
  - {name: units, signal: "*.pack.parts", feature: units, key: sku, max_age: 1m}
graph: {file: graph.yaml}
decide: {bucket: 1h, timer: 5m}
guard: {max_discount: 20, cooldown: 6h, approval: {above_discount: 12}}
`

// Hold what a stopped line makes when short; promote what is over-stocked and being made.
const testRules = `name: bt
hit_policy: first
rules:
  - name: hold-short
    priority: 10
    when: lines.size() > 0 && !lines.exists(l, l.state == "running" && !l.stale) && inventory.days_of_cover < 7.0
    hold: {channels: ["*"], reason: line down and short}
  - name: promote-over
    when: inventory.days_of_cover > 30.0 && lines.exists(l, l.state == "running" && !l.stale) && has(features.units) && !features.units.stale && features.units.value > 0.0
    promote: {channels: ["*"], discount: 10, duration: 24h}
`

// day is the scripted day: line l1 is down from 10:00 to 12:00.
var day = time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)

func at(h, m int) time.Time {
	return day.Add(time.Duration(h)*time.Hour + time.Duration(m)*time.Minute)
}

// testConfig writes the graph and hub config into a directory and loads them as the command does.
func testConfig(t testing.TB) (*hub.Config, string) {
	t.Helper()
	return testConfigGraph(t, testGraph)
}

// testConfigGraph is testConfig with another graph.
func testConfigGraph(t testing.TB, graphYAML string) (*hub.Config, string) {
	t.Helper()
	dir := t.TempDir()
	for name, data := range map[string]string{"graph.yaml": graphYAML, "hub.yaml": testHub, "rules.yaml": testRules} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := hub.Load(filepath.Join(dir, "hub.yaml"), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	return cfg, dir
}

func testSet(t testing.TB) *rules.Set {
	t.Helper()
	s, err := rules.Load([]byte(testRules), rules.KnownFeatures("availability", "units"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// hubNATS starts the hub's NATS with the agents' stream (as the agents create it) and COMMERCE.
func hubNATS(t testing.TB, cfg *hub.Config) jetstream.JetStream {
	t.Helper()
	node := natstest.JetStream(t)
	_, js := natstest.Connect(t, node.URL())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: cfg.Ingest.Stream,
		Subjects:  []string{"gemba.*.*.samples", "gemba.*.*.features", "gemba.*.*.status"},
		Retention: jetstream.LimitsPolicy, MaxBytes: -1, Duplicates: 20 * time.Minute, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := commerce.EnsureStream(ctx, js, cfg.Commerce); err != nil {
		t.Fatal(err)
	}
	return js
}

// agent publishes feature windows as an agent does: one envelope per batch of windows.
type agent struct {
	js      jetstream.JetStream
	id      string
	seq     uint64
	pending []signal.Feature
}

func (a *agent) add(sig, name string, end time.Time, v float64, labels ...signal.Label) {
	a.pending = append(a.pending, signal.Feature{Signal: sig, Name: name, WindowStart: end.Add(-10 * time.Second),
		WindowEnd: end, Value: v, Count: 10, Labels: labels})
}

func (a *agent) flush(t testing.TB) {
	t.Helper()
	if len(a.pending) == 0 {
		return
	}
	b := signal.Batch{Header: signal.Header{Schema: signal.SchemaVersion, Agent: a.id, Site: "s1", Stream: signal.StreamFeatures,
		ConfigVersion: "cfg1", Incarnation: "inc1", FirstSeq: a.seq + 1, LastSeq: a.seq + uint64(len(a.pending)), Count: len(a.pending),
		Oldest: a.pending[0].WindowEnd, Newest: a.pending[len(a.pending)-1].WindowEnd, Sent: a.pending[len(a.pending)-1].WindowEnd},
		Features: a.pending}
	a.seq += uint64(len(a.pending))
	data := signal.AppendBatch(nil, &b)
	if _, err := a.js.Publish(context.Background(), signal.Subject("gemba", "s1", a.id, signal.StreamFeatures), data,
		jetstream.WithMsgID(b.MsgID())); err != nil {
		t.Fatal(err)
	}
	a.pending = a.pending[:0]
}

// publishHistory publishes the scripted day from 08:50: a week of sales of A (100 a day), an ERP count of
// 300 at 09:59 (3 days of cover), l1 down from 10:00 to 12:00 (nothing made), a count of 4000 at
// 12:30 (40 days), and l2 running all along (B has no stock record: no rule reads it as known).
func publishHistory(t testing.TB, js jetstream.JetStream, cfg *hub.Config) {
	t.Helper()
	ctx := context.Background()
	pub, err := commerce.NewPublisher(js, cfg.Commerce)
	if err != nil {
		t.Fatal(err)
	}
	var evs []commerce.Event
	for d := 7; d >= 1; d-- {
		evs = append(evs, commerce.Sale{OrderID: fmt.Sprintf("o%d", d), Line: 1, SKU: "A", Site: "s1", Channel: "web",
			Quantity: 100, UnitPrice: 2, Currency: "EUR", Time: at(12, 0).AddDate(0, 0, -d)})
	}
	evs = append(evs, commerce.Snapshot{SnapshotID: "erp-1", SKU: "A", Site: "s1", OnHand: 300, Time: at(9, 59)})
	mustPublish(t, pub.Publish(ctx, evs))
	ag := &agent{js: js, id: "agent-1"}
	later := false
	for end := at(8, 50).Add(10 * time.Second); !end.After(at(14, 0)); end = end.Add(10 * time.Second) {
		start := end.Add(-10 * time.Second)
		down := !start.Before(at(10, 0)) && start.Before(at(12, 0))
		avail, units := 0.9, 1.0
		if down {
			avail, units = 0, 0
		}
		ag.add("l1.pack.state", "availability", end, avail)
		ag.add("l1.pack.parts", "units", end, units, signal.Label{Key: "sku", Value: "A"})
		ag.add("l2.pack.state", "availability", end, 0.9)
		if end.Second() == 0 {
			ag.flush(t) // a message a minute
		}
		if !later && !end.Before(at(12, 30)) {
			later = true
			ag.flush(t)
			mustPublish(t, pub.Publish(ctx, []commerce.Event{
				commerce.Snapshot{SnapshotID: "erp-2", SKU: "A", Site: "s1", OnHand: 4000, Time: at(12, 30)}}))
		}
	}
	ag.flush(t)
}

func mustPublish(t testing.TB, rs []commerce.Result) {
	t.Helper()
	for _, r := range rs {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
}
