package rules

import (
	"fmt"
	"strings"
	"testing"
)

func lintOf(t *testing.T, policy, rules string) []Finding {
	t.Helper()
	return mustLoad(t, "name: l\nhit_policy: "+policy+"\nrules:\n"+rules).Lint()
}

func codes(fs []Finding) []string {
	var out []string
	for _, f := range fs {
		out = append(out, fmt.Sprintf("%s/%s/%s@%d", f.Code, f.Severity, f.Rule, f.Line))
	}
	return out
}

func TestLintUnreachable(t *testing.T) {
	fs := lintOf(t, "first", `
  - name: specific
    when: inventory.on_hand > 10 && sku.id == "A"
    promote: {channels: [web], discount: 5, duration: 1h}
  - name: same-condition
    when: sku.id == "A" && inventory.on_hand > 10
    promote: {channels: [retail], discount: 5, duration: 1h}
  - name: same-text-other-layout
    when: |
      inventory.on_hand   >   10 &&
      sku.id == "A"
    promote: {channels: [retail], discount: 5, duration: 1h}
  - name: catch-all
    when: 1 + 1 == 2
    promote: {channels: [web], discount: 5, duration: 1h}
  - name: after-catch-all
    when: inventory.on_hand < 3
    hold: {channels: [wholesale], reason: short}
  - name: never
    priority: -1
    when: 2 < 1 && sku.id == "B"
    hold: {channels: [wholesale], reason: short}
`)
	got := strings.Join(codes(fs), " ")
	for _, want := range []string{
		"unreachable/warning/same-text-other-layout@11", // the same condition as specific's, printed the same
		"unreachable/warning/after-catch-all@19",
		"unreachable/warning/never@22",
		"never/warning/never@22",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %s in %s", want, got)
		}
	}
	// a && b and b && a are different expressions to CEL (a may fail where b is false): not
	// reported as the same condition; the overlap check finds they match together instead.
	if strings.Contains(got, "unreachable/warning/same-condition") {
		t.Errorf("reordered condition reported as identical: %s", got)
	}
	if !strings.Contains(got, "overlap/info/same-condition@8") {
		t.Errorf("no overlap for the reordered condition: %s", got)
	}
	if err := AsErrors(fs, Warning); err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Errorf("warnings as errors: %v", err)
	}
	if err := AsErrors(fs, Error); err != nil {
		t.Errorf("only warnings, yet %v", err)
	}
}

// An overlap is reported with a witness on which both rules really match; rules that cannot
// match together are not reported.
func TestLintOverlap(t *testing.T) {
	s := mustLoad(t, `name: o
hit_policy: collect
rules:
  - name: overstock
    when: inventory.days_of_cover > 30 && features.units.value >= 12.5
    promote: {channels: [web], discount: 10, duration: 24h}
  - name: short-and-stopped
    when: inventory.days_of_cover < 45 && lines.exists(l, l.state == "down")
    hold: {channels: [retail], reason: stopped}
  - name: short
    when: inventory.days_of_cover <= 30
    hold: {channels: [web], reason: short}
  - name: same-action
    when: inventory.days_of_cover > 31
    promote: {channels: [web], discount: 10, duration: 24h}
  - name: short-web
    when: inventory.days_of_cover < 35
    hold: {channels: [web], reason: short on the web}
`)
	// Every pair that can match together, with the severity: a warning when both act on one
	// channel. overstock/short and short/same-action cannot (<= 30, > 30).
	want := map[string]Severity{
		"overstock+short-and-stopped": Info, "short-and-stopped+short": Info, "short-and-stopped+same-action": Info,
		"overstock+short-web": Warning, "short-and-stopped+short-web": Info, "short+short-web": Warning,
		"same-action+short-web": Warning,
	}
	fs := s.Lint()
	var found int
	for _, f := range fs {
		if f.Code != "overlap" {
			continue
		}
		found++
		pair := f.Other + "+" + f.Rule
		wantSev, ok := want[pair]
		if !ok {
			t.Errorf("unexpected overlap %s: %s", pair, f.Msg)
		}
		if f.Severity != wantSev || f.Witness == nil || !strings.Contains(f.Msg, "e.g. for {") {
			t.Errorf("finding %+v", f)
			continue
		}
		res := s.Evaluate(f.Witness)
		both := 0
		for _, m := range res.Matches {
			if m.Rule == f.Rule || m.Rule == f.Other {
				both++
			}
		}
		if both != 2 {
			t.Errorf("witness of %s does not match both: %+v", pair, res)
		}
	}
	if found != len(want) {
		t.Errorf("%d overlaps, want %d: %v", found, len(want), codes(fs))
	}
	// Deterministic for a version.
	if a, b := codes(s.Lint()), codes(fs); strings.Join(a, " ") != strings.Join(b, " ") {
		t.Errorf("lint differs between runs: %v %v", a, b)
	}
}

func TestLintConflict(t *testing.T) {
	fs := lintOf(t, "collect", `
  - name: promote-all
    when: inventory.on_hand > 100
    promote: {channels: ["*"], discount: 5, duration: 1h}
  - name: hold-web
    when: lines.exists(l, l.state == "down")
    hold: {channels: [web], reason: down}
  - name: hold-retail-prioritised
    priority: 5
    when: lines.exists(l, l.state == "down")
    hold: {channels: [retail], reason: down}
`)
	var conflicts []string
	for _, f := range fs {
		if f.Code == "conflict" {
			conflicts = append(conflicts, f.Rule+": "+f.Msg)
		}
	}
	if len(conflicts) != 1 || !strings.HasPrefix(conflicts[0], "hold-web: promote (rule \"promote-all\") and hold (rule \"hold-web\") of channel web at the same priority 0") {
		t.Errorf("conflicts %q", conflicts)
	}
}

func TestLintClean(t *testing.T) {
	fs := lintOf(t, "first", `
  - name: hold-down
    when: lines.exists(l, l.state == "down") && inventory.days_of_cover < 7
    priority: 1
    hold: {channels: [web], reason: down}
  - name: promote
    when: inventory.days_of_cover > 30
    promote: {channels: [web], discount: 5, duration: 1h}
`)
	if err := AsErrors(fs, Warning); err != nil {
		t.Errorf("clean set: %v", err)
	}
}
