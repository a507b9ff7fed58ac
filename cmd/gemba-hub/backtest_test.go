package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/decide/backtest"
	"github.com/gemba-io/gemba/hub/ingest/commerce"
	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/signal"
)

const btGraph = `version: bt
sites: [{id: s1}]
lines: [{id: l1, site: s1}, {id: l2, site: s1}]
machines: [{id: l1.pack, line: l1}, {id: l2.pack, line: l2}]
signals:
  - {id: l1.pack.state, machine: l1.pack}
  - {id: l2.pack.state, machine: l2.pack}
  - {id: l2.pack.parts, machine: l2.pack}
skus: [{id: A}, {id: B}]
channels: [{id: web}]
edges:
  - {kind: produces, from: l1, to: A}
  - {kind: produces, from: l2, to: B}
  - {kind: sold_via, from: A, to: web}
  - {kind: sold_via, from: B, to: web}
`

const btRules = `name: bt
hit_policy: first
rules:
  - name: hold-short
    priority: 10
    when: lines.size() > 0 && !lines.exists(l, l.state == "running" && !l.stale) && inventory.days_of_cover < 7.0
    hold: {channels: ["*"], reason: line down and short}
  - name: clear-over
    when: inventory.days_of_cover > 30.0 && lines.exists(l, l.state == "running" && !l.stale) && has(features.units) && features.units.value > 0.0
    promote: {channels: ["*"], discount: 15, duration: 48h}
`

var btDay = time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)

func btAt(h, m int) time.Time {
	return btDay.Add(time.Duration(h)*time.Hour + time.Duration(m)*time.Minute)
}

// btHistory publishes a week of sales of A and B, counts of A (3 days of cover) and B (50 days),
// l1 stopping at 10:00 and l2 running and making B, from 09:50 to 10:30.
func btHistory(t *testing.T, url string, js jetstream.JetStream) {
	t.Helper()
	createAgentStream(t, url, 1)
	ctx := context.Background()
	var evs []commerce.Event
	for d := 7; d >= 1; d-- {
		for _, sku := range []string{"A", "B"} {
			evs = append(evs, commerce.Sale{OrderID: fmt.Sprintf("o%d%s", d, sku), Line: 1, SKU: sku, Site: "s1", Channel: "web",
				Quantity: 100, UnitPrice: 1, Currency: "EUR", Time: btAt(12, 0).AddDate(0, 0, -d)})
		}
	}
	evs = append(evs, commerce.Snapshot{SnapshotID: "erp", SKU: "A", Site: "s1", OnHand: 300, Time: btAt(9, 40)},
		commerce.Snapshot{SnapshotID: "erp", SKU: "B", Site: "s1", OnHand: 5000, Time: btAt(9, 40)})
	publishSales(t, js, []string{"web"}, evs)
	var fs []signal.Feature
	seq := uint64(0)
	for end := btAt(9, 50).Add(10 * time.Second); !end.After(btAt(10, 30)); end = end.Add(10 * time.Second) {
		a1 := 0.9
		if end.After(btAt(10, 0)) {
			a1 = 0
		}
		w := func(sig, name string, v float64, ls ...signal.Label) {
			fs = append(fs, signal.Feature{Signal: sig, Name: name, WindowStart: end.Add(-10 * time.Second), WindowEnd: end, Value: v, Count: 1, Labels: ls})
		}
		w("l1.pack.state", "availability", a1)
		w("l2.pack.state", "availability", 0.9)
		w("l2.pack.parts", "units", 2, signal.Label{Key: "sku", Value: "B"})
		b := signal.Batch{Header: signal.Header{Schema: signal.SchemaVersion, Agent: "a1", Site: "s1", Stream: signal.StreamFeatures,
			ConfigVersion: "c1", Incarnation: "i1", FirstSeq: seq + 1, LastSeq: seq + uint64(len(fs)), Count: len(fs),
			Oldest: end, Newest: end, Sent: end}, Features: fs}
		seq += uint64(len(fs))
		if _, err := js.Publish(ctx, signal.Subject("gemba", "s1", "a1", signal.StreamFeatures), signal.AppendBatch(nil, &b)); err != nil {
			t.Fatal(err)
		}
		fs = fs[:0]
	}
}

func runBacktestCmd(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	c := backtestCmd()
	var o, e bytes.Buffer
	c.SetArgs(args)
	c.SetOut(&o)
	c.SetErr(&e)
	c.SilenceUsage, c.SilenceErrors = true, true
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := c.ExecuteContext(ctx)
	var ee exitError
	switch {
	case errors.As(err, &ee):
		code = ee.code
	case err != nil:
		t.Fatalf("backtest %v: %v", args, err)
	}
	return o.String(), e.String(), code
}

func TestBacktestCommand(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	btHistory(t, n.URL(), js)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "graph.yaml"), btGraph)
	rulesFile := writeFile(t, filepath.Join(dir, "rules.yaml"), btRules)
	cfg := writeFile(t, filepath.Join(dir, "hub.yaml"), fmt.Sprintf(`hub: {id: bt, data_dir: %s/data}
nats: {servers: [%q]}
commerce: {channels: [web]}
features:
  - {name: availability, signal: "*.pack.state", feature: availability, key: line, max_age: 1m}
  - {name: units, signal: "*.pack.parts", feature: units, key: sku, max_age: 1m}
graph: {file: graph.yaml}
decide: {bucket: 1h, timer: 5m}
guard: {max_discount: 20, approval: {above_discount: 12}}
`, dir, n.URL()))
	from, to := btAt(10, 0).Format(time.RFC3339), btAt(10, 30).Format(time.RFC3339)

	out, errOut, code := runBacktestCmd(t, "-c", cfg, "--rules", rulesFile, "--from", from, "--to", to)
	if code != 0 {
		t.Fatalf("exit %d: %s%s", code, out, errOut)
	}
	for _, want := range []string{
		// The decision log's outcomes (gemba-hub why, the read API's ?outcome=): a promotion that needs
		// approval awaits it, a hold allowed is held.
		"2026-11-20T10:00:00Z  B                s1           web        clear-over               promote 15% 48h0m0s awaiting_approval",
		"2026-11-20T10:00:10Z  A                s1           web        hold-short               hold               held",
		"replayed 30m0s (2026-11-20T10:00:00Z to 2026-11-20T10:30:00Z)",
		"evaluations: ",
		"decisions: 2",
		"by outcome: awaiting_approval 1, held 1",
		"by rule: clear-over 1, hold-short 1",
		"by channel: web 2",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	out, errOut, code = runBacktestCmd(t, "-c", cfg, "--rules", rulesFile, "--from", from, "--to", to, "--json")
	if code != 0 {
		t.Fatalf("--json: exit %d: %s", code, errOut)
	}
	var doc struct {
		Decisions []backtest.Decision `json:"decisions"`
		Summary   backtest.Summary    `json:"summary"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("--json output: %v\n%s", err, out)
	}
	if len(doc.Decisions) != 2 || doc.Summary.Decisions != 2 || doc.Summary.Sales != 14 || doc.Summary.Snapshots != 2 {
		t.Fatalf("--json: %+v", doc)
	}
	for _, d := range doc.Decisions {
		want := map[string]string{"A": audit.OutcomeHeld, "B": audit.OutcomeAwaitingApproval}[d.SKU]
		if d.ID == "" || d.Version == "" || string(d.Outcome) != want {
			t.Errorf("decision %+v: outcome %q, want %q (the decision log's)", d, d.Outcome, want)
		}
	}
	for k := range doc.Summary.ByOutcome {
		if !slices.Contains(audit.Outcomes, k) {
			t.Errorf("summary by_outcome key %q is no decision log outcome (%v)", k, audit.Outcomes)
		}
	}

	// Durations from now: the scripted day is long gone, the streams hold nothing of the last
	// hour: an error naming their latest input, not a replay of decisions on no data.
	out, errOut, code = runBacktestCmd(t, "-c", cfg, "--rules", rulesFile, "--from", "-1h")
	if code != 1 || !regexp.MustCompile(`no input in the span .*: the latest input the streams hold is at 2026-11-20T`).MatchString(errOut) ||
		strings.Contains(out, "hold-short") || strings.Contains(out, "clear-over") {
		t.Fatalf("--from -1h: exit %d: %s%s", code, out, errOut)
	}
}

func TestBacktestCommandRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	rulesFile := writeFile(t, filepath.Join(dir, "rules.yaml"), btRules)
	badRules := writeFile(t, filepath.Join(dir, "bad.yaml"), "name: x\nrules:\n  - name: r\n    when: inventory.nope > 1\n    hold: {channels: [web]}\n")
	noGuard := writeFile(t, filepath.Join(dir, "hub.yaml"), `hub: {id: bt}
nats: {servers: ["nats://127.0.0.1:1"]}
features:
  - {name: availability, signal: "*.pack.state", feature: availability, key: line, max_age: 1m}
  - {name: units, signal: "*.pack.parts", feature: units, key: sku, max_age: 1m}
`)
	withGuard := writeFile(t, filepath.Join(dir, "guard.yaml"), `hub: {id: bt}
nats: {servers: ["nats://127.0.0.1:1"]}
features:
  - {name: availability, signal: "*.pack.state", feature: availability, key: line, max_age: 1m}
guard: {max_discount: 20}
`)
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"-c", noGuard, "--rules", rulesFile}, 2, "--from"},
		{[]string{"-c", noGuard, "--rules", rulesFile, "--from", "yesterday"}, 2, "--from: want an RFC 3339 time"},
		{[]string{"-c", noGuard, "--rules", rulesFile, "--from", "-1h", "--to", "-2h"}, 2, "must be after --from"},
		{[]string{"-c", noGuard, "--from", "-1h"}, 2, "--rules is required"},
		// Ticks past now would decide on state gone stale for want of inputs not received yet.
		{[]string{"-c", noGuard, "--rules", rulesFile, "--from", "-1h", "--to", "1h"}, 2, "is in the future"},
		{[]string{"-c", noGuard, "--rules", rulesFile, "--from", "-1h", "--to", "2099-01-01T00:00:00+01:00"}, 2, "is in the future"},
		{[]string{"-c", withGuard, "--rules", badRules, "--from", "-1h"}, 1, "bad.yaml:4"},
		{[]string{"-c", withGuard, "--rules", rulesFile, "--from", "-1h"}, 1, `unknown feature "units"`},
		{[]string{"-c", noGuard, "--rules", rulesFile, "--from", "-1h"}, 1, "no guard section"},
	} {
		_, errOut, code := runBacktestCmd(t, c.args...)
		if code != c.code || !strings.Contains(errOut, c.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d mentioning %q", c.args, code, errOut, c.code, c.want)
		}
	}
}

// A span after the streams' latest input is refused (exit 1): the decisions the warm-up's state
// alone would have made are not printed before the error, as if they were the rules' verdict on
// that span.
func TestBacktestCommandPrintsNoDecisionOfARefusedSpan(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	btHistory(t, n.URL(), js)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "graph.yaml"), btGraph)
	rulesFile := writeFile(t, filepath.Join(dir, "rules.yaml"), `name: short
hit_policy: first
rules:
  - name: hold-short
    when: inventory.days_of_cover < 7.0
    hold: {channels: ["*"], reason: short}
`)
	cfg := writeFile(t, filepath.Join(dir, "hub.yaml"), fmt.Sprintf(`hub: {id: bt, data_dir: %s/data}
nats: {servers: [%q]}
commerce: {channels: [web]}
features:
  - {name: availability, signal: "*.pack.state", feature: availability, key: line, max_age: 1m}
  - {name: units, signal: "*.pack.parts", feature: units, key: sku, max_age: 1m}
graph: {file: graph.yaml}
decide: {bucket: 1h, timer: 5m}
guard: {max_discount: 20}
`, dir, n.URL()))
	from, to := btAt(10, 31).Format(time.RFC3339), btAt(11, 30).Format(time.RFC3339)
	out, errOut, code := runBacktestCmd(t, "-c", cfg, "--rules", rulesFile, "--from", from, "--to", to)
	if code != 1 || !strings.Contains(errOut, "no input in the span") || strings.Contains(out, "hold-short") {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s\nwant exit 1, no input in the span, and no decision printed", code, out, errOut)
	}
}
