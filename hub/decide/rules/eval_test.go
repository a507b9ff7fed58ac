package rules

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

const policySet = `name: policies
hit_policy: %s
rules:
  - name: promote-overstock
    when: inventory.days_of_cover > 30 && lines.exists(l, l.state == "running")
    promote: {channels: ["*"], discount: 10, duration: 24h, audience: b2c}
  - name: hold-down
    priority: 10
    when: lines.size() > 0 && lines.all(l, l.state == "down") && inventory.days_of_cover < 60
    hold: {channels: [web], reason: every line that makes it is down}
  - name: promote-web
    when: inventory.on_hand > 100
    promote: {channels: [web], discount: 5, duration: 12h}
`

func TestHitPolicies(t *testing.T) {
	running := []Line{{ID: "line1", State: "running"}}
	down := []Line{{ID: "line1", State: "down"}}
	chans := Neighbours{Channels: []string{"retail", "web"}}
	for _, tc := range []struct {
		policy  HitPolicy
		in      Input
		matches []string // rule names
		trace   []string // rule:matched
		perChan []string // channel=kind/rule
	}{
		{First, Input{Inventory: Inventory{DaysOfCover: 40, OnHand: 500}, Lines: running, Neighbours: chans},
			[]string{"promote-overstock"},
			// priority 10 first, then file order; evaluation stops at the match
			[]string{"hold-down:false", "promote-overstock:true"},
			[]string{"retail=promote/promote-overstock", "web=promote/promote-overstock"}},
		{Collect, Input{Inventory: Inventory{DaysOfCover: 40, OnHand: 500}, Lines: running, Neighbours: chans},
			[]string{"promote-overstock", "promote-web"},
			[]string{"hold-down:false", "promote-overstock:true", "promote-web:true"},
			[]string{"retail=promote/promote-overstock", "web=promote/promote-overstock"}},
		{First, Input{Inventory: Inventory{DaysOfCover: 40, OnHand: 500}, Lines: down, Neighbours: chans},
			[]string{"hold-down"},
			[]string{"hold-down:true"},
			[]string{"web=hold/hold-down"}},
		{Collect, Input{Inventory: Inventory{DaysOfCover: 40, OnHand: 500}, Lines: down, Neighbours: chans},
			[]string{"hold-down", "promote-web"},
			[]string{"hold-down:true", "promote-overstock:false", "promote-web:true"},
			// the hold's higher priority wins the web channel
			[]string{"web=hold/hold-down"}},
		{Collect, Input{Inventory: Inventory{DaysOfCover: math.Inf(1)}, Lines: running, Neighbours: chans},
			[]string{"promote-overstock"},
			[]string{"hold-down:false", "promote-overstock:true", "promote-web:false"},
			[]string{"retail=promote/promote-overstock", "web=promote/promote-overstock"}},
		{First, Input{}, nil, []string{"hold-down:false", "promote-overstock:false", "promote-web:false"}, nil},
	} {
		t.Run(fmt.Sprintf("%s %v", tc.policy, tc.trace), func(t *testing.T) {
			s := mustLoad(t, fmt.Sprintf(policySet, tc.policy))
			res := s.Evaluate(&tc.in)
			var matches, trace, per []string
			for _, m := range res.Matches {
				matches = append(matches, m.Rule)
			}
			for _, st := range res.Trace {
				trace = append(trace, fmt.Sprintf("%s:%v", st.Rule, st.Matched))
				if st.Err != "" {
					t.Errorf("rule %s: %s", st.Rule, st.Err)
				}
			}
			for _, d := range res.PerChannel() {
				per = append(per, fmt.Sprintf("%s=%s/%s", d.Channel, d.Action.Kind, d.Rule))
			}
			if !slices.Equal(matches, tc.matches) || !slices.Equal(trace, tc.trace) || !slices.Equal(per, tc.perChan) {
				t.Errorf("matches %v trace %v per channel %v\nwant %v %v %v", matches, trace, per, tc.matches, tc.trace, tc.perChan)
			}
			if res.Version != s.Version() || res.Policy != tc.policy {
				t.Errorf("result version %s policy %s", res.Version, res.Policy)
			}
		})
	}
}

// A missing or stale feature never reads as a number: the condition fails with the reason in the
// trace, and a rule can test for both.
func TestFeaturesMissingAndStale(t *testing.T) {
	s := mustLoad(t, `name: f
hit_policy: collect
rules:
  - name: unguarded
    when: features.units.value > 5
    hold: {channels: [web], reason: r}
  - name: guarded
    when: has(features.units) && !features.units.stale && features.units.value > 5
    hold: {channels: [retail], reason: r}
  - name: stale-flag
    when: has(features.units) && features.units.stale
    hold: {channels: [wholesale], reason: stale}
  - name: optional
    when: 'features[?"units"].orValue(rules.Feature{value: 0.0}).value > 5'
    hold: {channels: [b2b], reason: r}
  - name: fresh-below-too
    when: '!(features.units.value > 5)'
    hold: {channels: [x], reason: r}
`)
	for _, tc := range []struct {
		name     string
		features map[string]Feature
		matched  []string
		errs     map[string]string // rule -> error substring
	}{
		{"fresh", map[string]Feature{"units": {Value: 9}}, []string{"unguarded", "guarded", "optional"}, nil},
		{"missing", nil, nil, map[string]string{"unguarded": "no such key: units", "fresh-below-too": "no such key"}},
		{"stale", map[string]Feature{"units": {Value: 9, Stale: true, AgeS: 120}}, []string{"stale-flag"},
			map[string]string{"unguarded": "feature is stale (age 120s)", "optional": "stale", "fresh-below-too": "stale"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := s.Evaluate(&Input{Features: tc.features})
			var matched []string
			for _, m := range res.Matches {
				matched = append(matched, m.Rule)
			}
			if !slices.Equal(matched, tc.matched) {
				t.Errorf("matched %v, want %v", matched, tc.matched)
			}
			if res.Errors != len(tc.errs) {
				t.Errorf("%d errors, want %d: %+v", res.Errors, len(tc.errs), res.Trace)
			}
			for _, st := range res.Trace {
				want, ok := tc.errs[st.Rule]
				if ok != (st.Err != "") || !strings.Contains(st.Err, want) {
					t.Errorf("rule %s: error %q, want %q", st.Rule, st.Err, want)
				}
			}
		})
	}
	if !errors.Is(fmt.Errorf("x: %w", ErrStaleFeature), ErrStaleFeature) {
		t.Fatal("sentinel")
	}
}

// Under first, a rule that errored before the match is named on the match: it might have decided.
func TestErroredBefore(t *testing.T) {
	s := mustLoad(t, `name: e
hit_policy: first
rules:
  - name: needs-feature
    when: features.units.value > 5
    hold: {channels: [web], reason: r}
  - name: fallback
    when: "true"
    promote: {channels: [web], discount: 5, duration: 1h}
`)
	res := s.Evaluate(&Input{})
	if len(res.Matches) != 1 || !slices.Equal(res.Matches[0].ErroredBefore, []string{"needs-feature"}) || res.Errors != 1 {
		t.Errorf("%+v", res)
	}
	if res := s.Evaluate(nil); res.Errors != 1 || len(res.Matches) != 0 || !strings.Contains(res.Trace[0].Err, "no input") {
		t.Errorf("nil input: %+v", res)
	}
}

// A condition whose cost grows with the input stops at the cost limit with an error, in bounded
// time, and the other rules still run.
func TestCostLimit(t *testing.T) {
	s := mustLoad(t, `name: c
hit_policy: collect
rules:
  - name: quadratic
    when: neighbours.substitutes.all(a, neighbours.substitutes.exists(b, b == a + "x"))
    hold: {channels: [web], reason: r}
  - name: cheap
    when: sku.id == "A"
    hold: {channels: [retail], reason: r}
`, CostLimit(50_000))
	subs := make([]string, 100_000) // a million million comparisons without the limit
	for i := range subs {
		subs[i] = fmt.Sprint(i)
	}
	res := s.Evaluate(&Input{SKU: SKU{ID: "A"}, Neighbours: Neighbours{Substitutes: subs}})
	if res.Errors != 1 || !strings.Contains(res.Trace[0].Err, "cost limit exceeded") {
		t.Errorf("trace %+v", res.Trace)
	}
	if len(res.Matches) != 1 || res.Matches[0].Rule != "cheap" {
		t.Errorf("matches %+v", res.Matches)
	}
	// The default limit is far above what the examples need.
	small := s.Evaluate(&Input{SKU: SKU{ID: "A"}, Neighbours: Neighbours{Substitutes: []string{"1", "1x"}}})
	if small.Errors != 0 {
		t.Errorf("small input: %+v", small.Trace)
	}
}

func TestNowAndSite(t *testing.T) {
	s := mustLoad(t, `name: t
hit_policy: first
rules:
  - name: weekend
    when: now.getDayOfWeek("UTC") in [0, 6] && site == "demo-plant" && sku.name.startsWith("Bracket")
    promote: {channels: [web], discount: 5, duration: 48h}
`)
	sat := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	if res := s.Evaluate(&Input{Now: sat, Site: "demo-plant", SKU: SKU{Name: "Bracket A"}}); len(res.Matches) != 1 {
		t.Errorf("saturday: %+v", res)
	}
	if res := s.Evaluate(&Input{Now: sat.AddDate(0, 0, 2), Site: "demo-plant", SKU: SKU{Name: "Bracket A"}}); len(res.Matches) != 0 {
		t.Errorf("monday: %+v", res)
	}
}

// EvaluateAll gives, in input order, what Evaluate gives for each input (run with -race).
func TestEvaluateAll(t *testing.T) {
	s := benchSet(t)
	ins := benchInputs(500)
	all := EvaluateAll(s, ins, 4)
	if len(all) != len(ins) {
		t.Fatalf("%d results for %d inputs", len(all), len(ins))
	}
	matched := 0
	for i, in := range ins {
		want := s.Evaluate(in)
		if fmt.Sprint(all[i]) != fmt.Sprint(want) {
			t.Fatalf("input %d: %+v, want %+v", i, all[i], want)
		}
		matched += len(want.Matches)
	}
	if matched == 0 {
		t.Error("no input matched any rule: the comparison proves nothing")
	}
	if len(EvaluateAll(s, nil, 0)) != 0 {
		t.Error("results without inputs")
	}
}

func TestReads(t *testing.T) {
	s, err := Load([]byte(`name: r
hit_policy: collect
rules:
  - name: named
    when: has(features.units) && !features.units.stale && features["temp"].value > 1.0
    hold: {channels: [web], reason: x}
  - name: lines-and-stock
    when: lines.exists(l, l.state == "running") && inventory.days_of_cover > 3.0
    hold: {channels: [web], reason: y}
  - name: any-feature
    when: features.exists(k, features[k].stale)
    hold: {channels: [web], reason: z}
`))
	if err != nil {
		t.Fatal(err)
	}
	rs := s.Rules()
	if got := rs[0].Reads; !slices.Equal(got.Features, []string{"temp", "units"}) || got.AllFeatures || got.Lines || got.Inventory {
		t.Errorf("named: %+v", got)
	}
	if got := rs[1].Reads; len(got.Features) != 0 || got.AllFeatures || !got.Lines || !got.Inventory {
		t.Errorf("lines-and-stock: %+v", got)
	}
	if got := rs[2].Reads; !got.AllFeatures || got.Lines {
		t.Errorf("any-feature: %+v", got)
	}
}
