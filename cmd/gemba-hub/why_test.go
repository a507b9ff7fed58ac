package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub/act"
	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/decide/rules"
	"github.com/gemba-io/gemba/hub/state/features"
	"github.com/gemba-io/gemba/internal/natstest"
)

func TestWhy(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	ctx := context.Background()
	log, err := audit.Open(ctx, js, audit.Config{Prefix: "gemba"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	id := fmt.Sprintf("%032x", 0xbeef)
	t0 := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	rec := audit.Record{DecisionID: id, Event: audit.EventDecided, Outcome: audit.OutcomeFired, Mode: audit.ModeActive, Time: t0,
		RuleSet: audit.RuleSetRef{Name: "promo", Version: strings.Repeat("c", 64)},
		Rule:    audit.RuleRef{Name: "overstock", When: "inventory.days_of_cover > 30.0"}, SKU: "B-110", Site: "demo-plant", Channel: "web",
		Action: rules.Action{Kind: rules.Promote, Channels: []string{"web"}, Discount: 10, Duration: 24 * time.Hour},
		Inputs: []audit.Input{{Name: "units", Key: "B-110", Value: 12, EventTime: t0, Lineage: features.Lineage{Agent: "gw1", Signal: "line1.pack.parts", StreamSeq: 99}}}}
	if _, err := log.Publish(ctx, rec, 0); err != nil {
		t.Fatal(err)
	}
	actCfg := &act.Config{Prefix: "gemba", Channels: map[string]act.Channel{"web": {}}}
	ob, err := act.Open(ctx, js, *actCfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ob.Enqueue(ctx, act.Action{DecisionID: id, Kind: act.Promote, SKU: "B-110", Channel: "web", Discount: 10, Start: t0,
		End: t0.Add(24 * time.Hour), RuleSetVersion: rec.RuleSet.Version, Rule: "overstock"}); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if err := why(ctx, &out, &errOut, js, audit.Config{Prefix: "gemba"}, actCfg, id, false); err != nil {
		t.Fatalf("why: %v %s", err, errOut.String())
	}
	for _, want := range []string{"decision " + id + ": fired", `rule "overstock"`, "when inventory.days_of_cover > 30.0",
		"from agent gw1", "stream seq 99", "delivery: pending, phase start, published no"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("why lacks %q:\n%s", want, out.String())
		}
	}

	// Through the command, with a hub config without a decision room: no delivery state.
	dir := t.TempDir()
	cfg := writeFile(t, filepath.Join(dir, "hub.yaml"), fmt.Sprintf("hub: {id: t1, data_dir: %s/data}\nnats: {servers: [%q]}\n", dir, n.URL()))
	o, e, err := runCobra(t, whyCmd(), id, "-c", cfg)
	if err != nil || !strings.Contains(o, "decision "+id) || !strings.Contains(o, "delivery: not known here") {
		t.Fatalf("why command: %v\n%s%s", err, o, e)
	}
	o, e, err = runCobra(t, whyCmd(), id, "-c", cfg, "--json")
	var recs []audit.Record
	if err != nil || json.Unmarshal([]byte(o), &recs) != nil || len(recs) != 1 || recs[0].Inputs[0].Lineage.StreamSeq != 99 {
		t.Fatalf("why --json: %v\n%s%s", err, o, e)
	}
	_, e, err = runCobra(t, whyCmd(), fmt.Sprintf("%032x", 1), "-c", cfg)
	if exitCode(err) != 1 || !strings.Contains(e, "no audit record") {
		t.Fatalf("why of an unknown decision: %v %s", err, e)
	}
	_, e, err = runCobra(t, whyCmd(), "not-an-id", "-c", cfg)
	if exitCode(err) != 1 || !strings.Contains(e, "not 32 lower-case hex") {
		t.Fatalf("why of a malformed id: %v %s", err, e)
	}
}
