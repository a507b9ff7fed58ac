package audit

import (
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub/act"
	"github.com/gemba-io/gemba/hub/decide/guard"
	"github.com/gemba-io/gemba/hub/decide/rules"
	"github.com/gemba-io/gemba/hub/state/features"
)

func fullRecord() Record {
	t0 := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	r := record(7, EventDecided, OutcomeAwaitingApproval)
	r.Site, r.Replica = "demo-plant", "hub-1"
	r.RuleSet = RuleSetRef{Name: "promo", Version: "3f2a9c1b2d4e5f60718293a4b5c6d7e8f9", Label: "spring", ChangeSeq: 12}
	r.Rule = RuleRef{Name: "low-cover", When: "inventory.days_of_cover > 30", Index: 2, Priority: 10}
	r.Inputs = []Input{{Name: "mean", Key: "line1.press.f0", Value: 71.25, WindowStart: t0.Add(-time.Minute), EventTime: t0, AgeS: 3.5, Stale: true,
		Lineage: features.Lineage{Agent: "gw1", Site: "demo-plant", ConfigVersion: "cv9", Signal: "line1.press.f0", FirstSeq: 77, StreamSeq: 42}}}
	r.Inventory = &InventoryInput{Inventory: rules.Inventory{OnHand: 120, DaysOfCover: math.Inf(1)}, Updated: t0}
	r.Paths = []string{"B-110 ←produces— line1 @ demo-plant"}
	r.Trace = []rules.Step{{Rule: "urgent", Err: "no such key: oee"}, {Rule: "low-cover", Matched: true}}
	r.Verdict = &guard.Verdict{DecisionID: r.DecisionID, Outcome: guard.NeedsApproval, Guardrail: guard.GApproval, Reason: "discount 10 above 5",
		Assessments: []guard.Assessment{{Guardrail: guard.GMaxDiscount, Passed: true, Value: 10, Limit: 30}, {Guardrail: guard.GApproval, Value: 10, Limit: 5}}}
	r.Canary = &CanaryRef{Version: "abcdef0123456789", Share: 0.1, By: "sku", Unit: "B-1", In: true}
	return r
}

func TestExplain(t *testing.T) {
	first := fullRecord()
	second := first
	second.Event, second.Outcome, second.Time = EventApproved, OutcomeFired, first.Time.Add(5*time.Minute)
	v := *first.Verdict
	v.Outcome, v.Approval = guard.Allow, &guard.Approval{By: "alice", Reason: "ok for spring", Approved: true, At: second.Time}
	second.Verdict = &v
	var b strings.Builder
	Explain(&b, []Record{first, second}, &act.Record{State: act.Done, Phase: act.EventStart, Published: true, Hooked: true})
	out := b.String()
	for _, want := range []string{
		"decision " + id(7) + ": fired",
		"rule set promo version 3f2a9c1b2d4e (spring), live since rules change #12",
		`rule "low-cover" (rule 2, priority 10): when inventory.days_of_cover > 30`,
		"promote on web: 10% off for 1h0m0s",
		"decided  → awaiting_approval (replica hub-1)",
		"approved → fired",
		"mean[line1.press.f0] = 71.25 at 2026-12-04T10:00:00Z (window from 2026-12-04T09:59:00Z, age 3.5s) [stale]",
		"from agent gw1 at site demo-plant, signal line1.press.f0, agent config cv9, stream seq 42 (buffer seq 77)",
		"days of cover +Inf",
		"B-110 ←produces— line1 @ demo-plant",
		"urgent: error: no such key: oee",
		"pass max_discount: 10 (limit 30)",
		"FAIL approval: 10 (limit 5)",
		`approval: approved by alice at 2026-12-04T10:05:07Z: "ok for spring"`,
		"canary: version abcdef012345 acts for 10.0% of skus; sku B-1 is in the canary",
		"delivery: done, phase start, published yes, webhook yes",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("explanation lacks %q:\n%s", want, out)
		}
	}

	b.Reset()
	sh := fullRecord()
	sh.Mode, sh.Outcome, sh.Canary = ModeShadow, OutcomeShadow, nil
	sh.Disagreement = &Disagreement{ActiveVersion: "0123456789abcdef", ActiveRule: "hold-all", ActiveAction: &rules.Action{Kind: rules.Hold, Channels: []string{"web"}, Reason: "line down"}}
	Explain(&b, []Record{sh}, nil)
	for _, want := range []string{`shadow: never acted; the active version 0123456789ab decided hold on web: line down (rule "hold-all")`, "delivery: not known here"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("shadow explanation lacks %q:\n%s", want, b.String())
		}
	}
	// A promotion the kill switch ended early (end_live) says who threw it and why.
	b.Reset()
	Explain(&b, []Record{first, second}, &act.Record{State: act.Done, Phase: act.EventEnd, Published: true, Hooked: true,
		EndedEarly: "ended early: kill switch thrown by ops@plant-a at 2026-12-04T11:00:00Z: wrong price list"})
	if want := "ended early: kill switch thrown by ops@plant-a at 2026-12-04T11:00:00Z: wrong price list"; !strings.Contains(b.String(), want) {
		t.Errorf("explanation lacks %q:\n%s", want, b.String())
	}
	b.Reset()
	Explain(&b, nil, nil)
	if !strings.Contains(b.String(), "no audit record") {
		t.Errorf("empty explanation: %q", b.String())
	}
}

// A record round-trips through JSON, non-finite numbers included.
func TestRecordJSON(t *testing.T) {
	r := fullRecord()
	r.Inputs[0].Value = math.NaN()
	r.Inputs = append(r.Inputs, Input{Name: "rate", Value: math.Inf(-1), AgeS: 1})
	data, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var back Record
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if !math.IsNaN(back.Inputs[0].Value) || !math.IsInf(back.Inputs[1].Value, -1) || !math.IsInf(back.Inventory.Inventory.DaysOfCover, 1) {
		t.Fatalf("non-finite values lost: %+v", back.Inputs)
	}
	back.Inputs[0].Value, r.Inputs[0].Value = 0, 0
	if !reflect.DeepEqual(back, r) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", back, r)
	}
}

func TestConfigValidate(t *testing.T) {
	good := Config{Prefix: "gemba"}
	if err := good.err(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []Config{
		{Prefix: "a.b"}, {Prefix: "gemba", Stream: "A.B"}, {Prefix: "gemba", Replicas: 2},
		{Prefix: "gemba", Retention: time.Millisecond}, {Prefix: "gemba", Retention: time.Hour, DuplicateWindow: 2 * time.Hour},
		{Prefix: "gemba", DuplicateWindow: -time.Second},
	} {
		if c.err() == nil {
			t.Errorf("config %+v accepted", c)
		}
	}
}
