package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gemba-io/gemba/internal/testutil"
)

// TestCommandsSayNATSIsDown: a command run while the hub's NATS is down says it cannot connect, not
// what a request on a connection still retrying happens to fail with (an outbound buffer exceeded,
// headers not supported), and exits 1.
func TestCommandsSayNATSIsDown(t *testing.T) {
	dir := t.TempDir()
	file := writeFile(t, filepath.Join(dir, "hub.yaml"), fmt.Sprintf(`hub: {id: hub-1, data_dir: %s}
nats: {embedded: {listen: "127.0.0.1:%d"}}
commerce: {channels: [web]}
guard: {max_discount: 30}
`, dir, testutil.FreePort(t)))
	csv := writeFile(t, filepath.Join(dir, "inv.csv"), "sku,site,on_hand,time\nA,s1,5,2026-12-05T10:00:00Z\n")
	for _, args := range [][]string{
		{"why", "-c", file, "d-1"},
		{"import", "inventory", "-c", file, csv},
		{"rules", "history", "-c", file},
		{"actions", "dead", "-c", file},
	} {
		_, stderr, code := runHub(t, "", nil, args...)
		if code != 1 || !strings.Contains(stderr, "no servers available") ||
			strings.Contains(stderr, "outbound buffer") || strings.Contains(stderr, "headers not supported") {
			t.Errorf("%s: exit %d, want 1 and that NATS is not reachable; stderr:\n%s", strings.Join(args[:2], " "), code, stderr)
		}
	}
}

// TestUsageErrorsExit2: a mistyped subcommand, an unknown or malformed flag and a wrong number of
// arguments exit 2 with the problem on stderr. A mistyped subcommand of a group (models, actions,
// rules, import) printed the group's help and exited 0: `gemba-hub actions replai ID` replayed
// nothing and reported success.
func TestUsageErrorsExit2(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"actions", "replai", "d-1"}, `unknown command "replai"`},
		{[]string{"models", "promot", "abcdef"}, `unknown command "promot"`},
		{[]string{"rules", "activat", "x.yaml"}, `unknown command "activat"`},
		{[]string{"import", "inventry", "x.csv"}, `unknown command "inventry"`},
		{[]string{"bogus"}, `unknown command "bogus"`},
		{[]string{"backtest", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"backtest", "--from", "-1h", "--rules", "x", "--warmup", "soon"}, `invalid argument "soon"`},
		{[]string{"why"}, "accepts 1 arg(s), received 0"},
	} {
		stdout, stderr, code := runHub(t, "", nil, tc.args...)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%s: exit %d, want 2 and %q on stderr; stderr:\n%s\nstdout:\n%s", strings.Join(tc.args, " "), code, tc.want, stderr, stdout)
		}
	}
	// A group alone shows its help.
	if stdout, _, code := runHub(t, "", nil, "rules"); code != 0 || !strings.Contains(stdout, "activate") {
		t.Errorf("rules: exit %d, want 0 and its help:\n%s", code, stdout)
	}
}

// TestValidateReportsGraphAndRulesTogether: a config whose graph and rule file both have a problem
// gets both reported in one run (the rule file's problem was only shown once the graph was fixed).
func TestValidateReportsGraphAndRulesTogether(t *testing.T) {
	dir := t.TempDir()
	g := writeFile(t, filepath.Join(dir, "graph.yaml"), "version: t1\nsites:\n  - {id: s1}\nlines:\n  - {id: l1, site: s1}\n  - {id: l2, site: nowhere}\n")
	r := writeFile(t, filepath.Join(dir, "rules.yaml"), "name: x\nhit_policy: first\nrules:\n  - name: r\n    when: inventory.days_of_cover > \"a\"\n    hold: {channels: [web], reason: r}\n")
	file := writeFile(t, filepath.Join(dir, "hub.yaml"), fmt.Sprintf("hub: {id: hub-1, data_dir: %s}\ncommerce: {channels: [web]}\ngraph: {file: %s}\nguard: {max_discount: 30}\ndecide: {rules: %s}\n", dir, g, r))
	_, stderr, code := runHub(t, "", nil, "validate", "-c", file)
	if code != 1 || !strings.Contains(stderr, g+":6:") || !strings.Contains(stderr, r+":5:") {
		t.Errorf("exit %d, want 1 with the graph's line 6 and the rules' line 5; stderr:\n%s", code, stderr)
	}
}
