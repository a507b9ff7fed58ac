package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/decide/rules"
	"github.com/gemba-io/gemba/internal/natstest"
)

const ruleA = `name: promo
hit_policy: first
rules:
  - name: overstock
    when: inventory.days_of_cover > 30.0
    promote: {channels: [web], discount: 10, duration: 24h}
  - name: supply-risk
    when: inventory.days_of_cover < 2.0
    hold: {channels: [web], reason: supply at risk}
`

// ruleB: overstock's threshold and discount changed, supply-risk removed, bulk added, collect.
const ruleB = `name: promo
hit_policy: collect
rules:
  - name: overstock
    when: inventory.days_of_cover > 45.0
    promote: {channels: [web], discount: 15, duration: 24h}
  - name: bulk
    when: inventory.on_hand > 500.0
    promote: {channels: [wholesale], discount: 5, duration: 72h, audience: b2b}
`

func runCobra(t *testing.T, c *cobra.Command, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var o, e bytes.Buffer
	c.SetArgs(args)
	c.SetOut(&o)
	c.SetErr(&e)
	c.SilenceUsage, c.SilenceErrors = true, true
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err = c.ExecuteContext(ctx)
	return o.String(), e.String(), err
}

func exitCode(err error) int {
	var ee exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	if err != nil {
		return -1
	}
	return 0
}

func TestRulesValidateFiles(t *testing.T) {
	dir := t.TempDir()
	good := writeFile(t, filepath.Join(dir, "good.yaml"), ruleA)
	bad := writeFile(t, filepath.Join(dir, "bad.yaml"), "name: x\nhit_policy: first\nrules:\n  - name: r\n    when: inventory.days_of_cover > \"a\"\n    hold: {channels: [web], reason: r}\n")
	warn := writeFile(t, filepath.Join(dir, "warn.yaml"), "name: w\nhit_policy: first\nrules:\n  - name: always\n    when: 'true'\n    hold: {channels: [web], reason: r}\n  - name: later\n    when: inventory.on_hand > 1.0\n    hold: {channels: [web], reason: r}\n")

	out, errOut, err := runCobra(t, rulesCmd(), "validate", good, warn)
	if exitCode(err) != 0 || !strings.Contains(out, good+": valid (promo, version ") || !strings.Contains(errOut, warn+":7: rules[1]: warning: unreachable") {
		t.Fatalf("validate good+warn: code %d\nout %s\nerr %s", exitCode(err), out, errOut)
	}
	ex := filepath.Join("..", "..", "configs", "rules.example.yaml")
	if out, errOut, err := runCobra(t, rulesCmd(), "validate", "--strict", ex); exitCode(err) != 0 || errOut != "" || !strings.Contains(out, "infos)") {
		t.Fatalf("validate the example: code %d\nout %s\nerr %s", exitCode(err), out, errOut)
	}
	if _, errOut, err := runCobra(t, rulesCmd(), "validate", "--info", ex); exitCode(err) != 0 || !strings.Contains(errOut, ": info: overlap: ") {
		t.Fatalf("validate --info: code %d\nerr %s", exitCode(err), errOut)
	}
	_, errOut, err = runCobra(t, rulesCmd(), "validate", "--strict", warn)
	if exitCode(err) != 1 || !strings.Contains(errOut, "not valid (0 errors, 1 warnings, --strict)") {
		t.Fatalf("validate --strict: code %d, %s", exitCode(err), errOut)
	}
	_, errOut, err = runCobra(t, rulesCmd(), "validate", good, bad)
	if exitCode(err) != 1 || !regexp.MustCompile(regexp.QuoteMeta(bad)+`:5:\d+: rules\[0\]\.when: `).MatchString(errOut) {
		t.Fatalf("validate bad: code %d, %s", exitCode(err), errOut)
	}
	_, errOut, err = runCobra(t, rulesCmd(), "validate", filepath.Join(dir, "missing.yaml"))
	if exitCode(err) != 1 || !strings.Contains(errOut, "missing.yaml") {
		t.Fatalf("validate missing: code %d, %s", exitCode(err), errOut)
	}
}

func TestRulesValidateKnownFeatures(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFile(t, filepath.Join(dir, "hub.yaml"), fmt.Sprintf(`hub: {id: t1, data_dir: %s/data}
nats: {servers: ["nats://127.0.0.1:1"]}
features:
  - {name: units, signal: "*.pack.parts", feature: units, key: sku, max_age: 1h}
`, dir))
	f := writeFile(t, filepath.Join(dir, "r.yaml"), "name: x\nhit_policy: first\nrules:\n  - name: r\n    when: has(features.temp) && features.temp.value > 1.0\n    hold: {channels: [web], reason: r}\n")
	if _, errOut, err := runCobra(t, rulesCmd(), "validate", f); exitCode(err) != 0 {
		t.Fatalf("without -c any feature name is accepted: %s", errOut)
	}
	_, errOut, err := runCobra(t, rulesCmd(), "validate", "-c", cfg, f)
	if exitCode(err) != 1 || !strings.Contains(errOut, f+":5:") || !strings.Contains(errOut, "temp") {
		t.Fatalf("with -c an unknown feature: code %d, %s", exitCode(err), errOut)
	}
}

func TestDiffSets(t *testing.T) {
	a, err := rules.Load([]byte(ruleA))
	if err != nil {
		t.Fatal(err)
	}
	b, err := rules.Load([]byte(ruleB))
	if err != nil {
		t.Fatal(err)
	}
	var w bytes.Buffer
	diffSets(&w, "a.yaml", a, "b.yaml", b)
	out := w.String()
	for _, want := range []string{
		"--- a.yaml (promo, version " + a.Version()[:12] + ")",
		"hit policy: first → collect",
		`- rule "supply-risk" (removed): when inventory.days_of_cover < 2.0 → hold on web: supply at risk`,
		`+ rule "bulk" (added, position 1, priority 0): when inventory.on_hand > 500.0 → promote on wholesale: 5% off for 72h0m0s to b2b`,
		`~ rule "overstock":`,
		"when: inventory.days_of_cover > 30.0 → inventory.days_of_cover > 45.0",
		"discount: 10 → 15",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("diff lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "duration:") || strings.Contains(out, "channels:") {
		t.Errorf("diff lists unchanged fields:\n%s", out)
	}
	w.Reset()
	diffSets(&w, "a", a, "a2", a)
	if !strings.Contains(w.String(), "same version") {
		t.Errorf("diff of a version with itself: %s", w.String())
	}
}

func TestPrintHistory(t *testing.T) {
	var w bytes.Buffer
	printHistory(&w, nil)
	if !strings.Contains(w.String(), "no rules change yet") {
		t.Fatal(w.String())
	}
	w.Reset()
	at := time.Date(2026, 12, 4, 21, 0, 0, 0, time.UTC)
	printHistory(&w, []audit.Change{
		{Seq: 3, Op: audit.OpActivate, From: "", To: strings.Repeat("a", 64), By: "alice", Why: "first", At: at},
		{Seq: 9, Op: audit.OpCanary, From: "", To: strings.Repeat("b", 64), Canary: &audit.CanarySpec{Version: strings.Repeat("b", 64), Share: 0.1, By: "sku"}, By: "bob", At: at},
	})
	want := "#3      2026-12-04T21:00:00Z  activate (none) → aaaaaaaaaaaa by alice: \"first\"\n" +
		"#9      2026-12-04T21:00:00Z  canary (none) → bbbbbbbbbbbb by bob (0.1 of skus)\n"
	if w.String() != want {
		t.Fatalf("history:\n%s\nwant:\n%s", w.String(), want)
	}
}

// The commands end to end against a real JetStream server.
func TestRulesCommandsEndToEnd(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	dir := t.TempDir()
	cfg := writeFile(t, filepath.Join(dir, "hub.yaml"), fmt.Sprintf("hub: {id: t1, data_dir: %s/data}\nnats: {servers: [%q]}\n", dir, n.URL()))
	hubMade(t, js, cfg) // the commands bind what the hub made
	a := writeFile(t, filepath.Join(dir, "a.yaml"), ruleA)
	b := writeFile(t, filepath.Join(dir, "b.yaml"), ruleB)
	sa, _ := rules.Load([]byte(ruleA))
	sb, _ := rules.Load([]byte(ruleB))

	must := func(args ...string) string {
		t.Helper()
		out, errOut, err := runCobra(t, rulesCmd(), args...)
		if err != nil {
			t.Fatalf("rules %v: %v\n%s%s", args, err, out, errOut)
		}
		return out
	}
	if _, errOut, err := runCobra(t, rulesCmd(), "activate", a, "-c", cfg, "--by", "alice"); exitCode(err) != 2 || !strings.Contains(errOut, "--why is required") {
		t.Fatalf("activate without --why: %v %s", err, errOut)
	}
	out := must("activate", a, "-c", cfg, "--by", "alice", "--why", "first rules")
	if !strings.Contains(out, "activate (none) → "+sa.Version()[:12]+" by alice") {
		t.Fatalf("activate a: %s", out)
	}
	must("activate", b, "-c", cfg, "--by", "bob", "--why", "stricter")
	// Deploying the active rules again is a no-op: exit 0, nothing recorded (history below).
	if out = must("activate", b, "-c", cfg, "--by", "bob", "--why", "redeploy"); !strings.Contains(out, sb.Version()[:12]+" is already active") {
		t.Fatalf("activate the active version: %s", out)
	}
	out = must("rollback", "-c", cfg, "--by", "carol", "--why", "b over-promotes")
	if !strings.Contains(out, "rollback "+sb.Version()[:12]+" → "+sa.Version()[:12]) || !strings.Contains(out, "rules now: active "+sa.Version()[:12]) {
		t.Fatalf("rollback: %s", out)
	}
	// Stored versions by prefix: shadow, canary, diff.
	out = must("shadow", sb.Version()[:10], "-c", cfg, "--by", "dan", "--why", "compare")
	if !strings.Contains(out, "shadow "+sb.Version()[:12]) {
		t.Fatalf("shadow: %s", out)
	}
	out = must("canary", b, "--share", "0.2", "--unit", "site", "-c", cfg, "--by", "erin", "--why", "try on a fifth of sites")
	if !strings.Contains(out, "canary "+sb.Version()[:12]+" for 0.2 of sites") {
		t.Fatalf("canary: %s", out)
	}
	if _, errOut, err := runCobra(t, rulesCmd(), "canary", b, "--share", "2", "-c", cfg, "--by", "x", "--why", "y"); exitCode(err) != 2 {
		t.Fatalf("canary share 2: %v %s", err, errOut)
	}
	must("canary", "--clear", "-c", cfg, "--by", "erin", "--why", "enough")
	must("shadow", "--clear", "-c", cfg, "--by", "dan", "--why", "done")
	out = must("diff", sa.Version()[:8], b, "-c", cfg)
	if !strings.Contains(out, `~ rule "overstock":`) {
		t.Fatalf("diff stored vs file: %s", out)
	}
	if _, errOut, err := runCobra(t, rulesCmd(), "diff", sa.Version()[:8], b); exitCode(err) != 1 || !strings.Contains(errOut, "give -c") {
		t.Fatalf("diff of a version without -c: %v %s", err, errOut)
	}
	out = must("history", "-c", cfg)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	ops := []string{"activate", "activate", "rollback", "shadow", "canary", "clear-canary", "clear-shadow"}
	if len(lines) != len(ops) {
		t.Fatalf("history has %d lines, want %d:\n%s", len(lines), len(ops), out)
	}
	for i, op := range ops {
		if !strings.Contains(lines[i], "  "+op+" ") {
			t.Errorf("history line %d %q, want op %s", i, lines[i], op)
		}
	}
	if !strings.Contains(lines[2], `by carol: "b over-promotes"`) {
		t.Errorf("rollback line: %s", lines[2])
	}
	// A rollback with nothing left to return to fails cleanly.
	if _, errOut, err := runCobra(t, rulesCmd(), "rollback", "-c", cfg, "--by", "carol", "--why", "again"); exitCode(err) != 1 || !strings.Contains(errOut, "no previous version") {
		t.Fatalf("rollback past the first version: %v %s", err, errOut)
	}
}
