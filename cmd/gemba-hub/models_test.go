package main

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub/ingest/commerce"
	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

// The models commands against a real server: refit fits the stream's sales and promotes the first
// set, a second refit shadows, list and show report them, promote and rollback change the pointers
// with who and why, history lists every change, and bad input (an unknown version, a SKU the set
// does not hold, a missing --why) is refused naming it.
func TestModelsCommands(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	dir := t.TempDir()
	cfgFile := writeFile(t, filepath.Join(dir, "hub.yaml"), fmt.Sprintf(`hub: {id: t1, data_dir: %s/data}
nats: {servers: [%q]}
learn: {enabled: true, horizon_days: 7}
`, dir, n.URL()))
	today := time.Now().UTC().Truncate(24 * time.Hour)
	var evs []commerce.Event
	for d := 1; d <= 90; d++ {
		for i, sku := range []string{"A-100", "B-210", "C-320"} {
			q := float64(5 + (d*7+i*3)%6)
			if sku == "C-320" && d%4 != 0 {
				continue // intermittent
			}
			evs = append(evs, commerce.Sale{OrderID: fmt.Sprintf("o%d-%d", d, i), Line: 1, SKU: sku, Site: "plant1", Channel: "web",
				Quantity: q, UnitPrice: 3, Currency: "EUR", Time: today.AddDate(0, 0, -d).Add(9 * time.Hour)})
		}
	}
	publishSales(t, js, []string{"web", "retail", "wholesale"}, evs)
	hubMade(t, js, cfgFile) // the commands bind what the hub made

	out, errOut, code := runHub(t, dir, nil, "models", "refit", "-c", cfgFile, "--by", "ops", "--why", "first fit", "--promote", "shadow")
	m := regexp.MustCompile(`stored model set ([0-9a-f]{16}) .*: 3 series \(0 failed\)`).FindStringSubmatch(out)
	if code != 0 || m == nil || !strings.Contains(out, "change #1: promote (none) → "+m[1][:12]) {
		t.Fatalf("first refit: code %d\n%s%s", code, out, errOut)
	}
	v1 := m[1]
	out, errOut, code = runHub(t, dir, nil, "models", "refit", "-c", cfgFile, "--by", "ops", "--why", "second fit", "--promote", "shadow")
	m = regexp.MustCompile(`stored model set ([0-9a-f]{16}) `).FindStringSubmatch(out)
	if code != 0 || m == nil || !strings.Contains(out, "change #2: shadow (none) → "+m[1][:12]) || m[1] == v1 {
		t.Fatalf("second refit: code %d\n%s%s", code, out, errOut)
	}
	v2 := m[1]
	out, _, code = runHub(t, dir, nil, "models", "list", "-c", cfgFile)
	if code != 0 || !regexp.MustCompile(v1+`\s+active`).MatchString(out) || !regexp.MustCompile(v2+`\s+shadow`).MatchString(out) {
		t.Fatalf("list: code %d\n%s", code, out)
	}
	out, _, code = runHub(t, dir, nil, "models", "show", "active", "-c", cfgFile)
	if code != 0 || !strings.Contains(out, "model set "+v1) || !strings.Contains(out, "series: 3 fitted, 0 failed") ||
		!strings.Contains(out, "sales: 202 counted") {
		t.Fatalf("show active: code %d\n%s", code, out)
	}
	out, _, code = runHub(t, dir, nil, "models", "show", v2[:8], "--sku", "A-100", "-c", cfgFile)
	if code != 0 || !strings.Contains(out, "A-100 @ plant1: ") || !strings.Contains(out, "backtest over 6 origins: MASE ") ||
		!strings.Contains(out, today.Format("2006-01-02")) {
		t.Fatalf("show --sku: code %d\n%s", code, out)
	}
	out, _, code = runHub(t, dir, nil, "models", "promote", v2[:8], "-c", cfgFile, "--by", "alice", "--why", "shadow looked better")
	if code != 0 || !strings.Contains(out, "change #3: promote "+v1[:12]+" → "+v2[:12]+" by alice: \"shadow looked better\"") {
		t.Fatalf("promote: code %d\n%s", code, out)
	}
	out, _, code = runHub(t, dir, nil, "models", "rollback", "-c", cfgFile, "--by", "bob", "--why", "worse")
	if code != 0 || !strings.Contains(out, "change #4: rollback "+v2[:12]+" → "+v1[:12]+" by bob") {
		t.Fatalf("rollback: code %d\n%s", code, out)
	}
	// No-ops are refused and recorded nowhere (history below): promoting the active set (exit 0, as
	// the rules' activate of the active version) and clearing a shadow that is not set (exit 1).
	out, errOut, code = runHub(t, dir, nil, "models", "promote", v1[:8], "-c", cfgFile, "--by", "alice", "--why", "again")
	if code != 0 || !strings.Contains(out, "model set "+v1[:12]+" is already active (change #4): nothing recorded") {
		t.Errorf("promote the active set: code %d\n%s%s", code, out, errOut)
	}
	if _, errOut, code = runHub(t, dir, nil, "models", "shadow", "--clear", "-c", cfgFile, "--by", "x", "--why", "y"); code != 1 ||
		!strings.Contains(errOut, "nothing to clear: no shadow model set is set") {
		t.Errorf("clear a shadow not set: code %d, %s", code, errOut)
	}
	out, _, code = runHub(t, dir, nil, "models", "history", "-c", cfgFile)
	if code != 0 || strings.Count(out, "\n") != 4 || !strings.Contains(out, "#2 ") || !strings.Contains(out, "\"second fit") {
		t.Fatalf("history: code %d\n%s", code, out)
	}

	if _, errOut, code = runHub(t, dir, nil, "models", "promote", "abcdef12", "-c", cfgFile, "--by", "x", "--why", "y"); code != 1 ||
		!strings.Contains(errOut, `model set "abcdef12": unknown model set version`) {
		t.Errorf("promote an unknown version: code %d, %s", code, errOut)
	}
	if _, errOut, code = runHub(t, dir, nil, "models", "show", v1, "--sku", "NOPE", "-c", cfgFile); code != 1 || !strings.Contains(errOut, `no series for SKU "NOPE"`) {
		t.Errorf("show an unknown SKU: code %d, %s", code, errOut)
	}
	if _, errOut, code = runHub(t, dir, nil, "models", "promote", v1, "-c", cfgFile, "--by", "x"); code != 2 || !strings.Contains(errOut, "--why is required") {
		t.Errorf("promote without --why: code %d, %s", code, errOut)
	}
	if _, errOut, code = runHub(t, dir, nil, "models", "refit", "-c", cfgFile, "--by", "x", "--why", "y", "--promote", "maybe"); code != 1 ||
		!strings.Contains(errOut, `promote "maybe"`) {
		t.Errorf("refit with a bad --promote: code %d, %s", code, errOut)
	}
}

// Two hub replicas with learn enabled: exactly one refits on schedule (the lock, then the freshness
// check under it), and both follow the set it stores.
func TestReplicasRefitOnceAndFollow(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	today := time.Now().UTC().Truncate(24 * time.Hour)
	var evs []commerce.Event
	for d := 1; d <= 60; d++ {
		for i, sku := range []string{"A-100", "B-210"} {
			evs = append(evs, commerce.Sale{OrderID: fmt.Sprintf("o%d-%d", d, i), Line: 1, SKU: sku, Site: "plant1", Channel: "retail",
				Quantity: float64(3 + (d+i)%4), UnitPrice: 3, Currency: "EUR", Time: today.AddDate(0, 0, -d).Add(15 * time.Hour)})
		}
	}
	publishSales(t, js, []string{"web", "retail", "wholesale"}, evs)
	dir := t.TempDir()
	var reps []*replica
	for _, name := range []string{"m1", "m2"} {
		port := testutil.FreePort(t)
		file := writeFile(t, filepath.Join(dir, name+".yaml"), fmt.Sprintf(`hub: {id: %s, data_dir: %s/%s, log: {level: warn, format: text}}
http: {listen: "127.0.0.1:%d"}
nats: {servers: ["%s"]}
learn: {enabled: true, refit_every: 1h, horizon_days: 14}
`, name, dir, name, port, n.URL()))
		r := runReplica(t, name, "", file)
		r.base = fmt.Sprintf("http://127.0.0.1:%d", port)
		reps = append(reps, r)
	}
	for _, r := range reps {
		testutil.WaitFor(t, 60*time.Second, r.name+" follows a model set of two series", func() bool {
			return r.metric(t, "gemba_hub_models_active_series") == 2
		})
	}
	var ok float64
	for _, r := range reps {
		testutil.WaitFor(t, 30*time.Second, r.name+" has made its first check", func() bool {
			return r.metric(t, "gemba_hub_models_refit_checks_total") >= 1
		})
		ok += r.metric(t, "gemba_hub_models_refits_total", "outcome", "ok")
	}
	if ok != 1 {
		for _, r := range reps {
			t.Logf("%s stderr:\n%s", r.name, r.stderr.String())
		}
		t.Fatalf("%v scheduled refits succeeded over two replicas, want exactly 1", ok)
	}
}
