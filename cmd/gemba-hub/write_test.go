package main

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/gemba-io/gemba/hub/decide/rules"
	"github.com/gemba-io/gemba/hub/ingest/commerce"
	"github.com/gemba-io/gemba/internal/natstest"
)

// writeRun is a command that changes the hub's state, with the stream or bucket it needs first.
type writeRun struct {
	cmd   func() *cobra.Command
	args  []string
	first string
}

// writeRuns are the commands that change the rules, the models, the inventory or the outbox.
func writeRuns(cfg, a, b, csv string) []writeRun {
	change := func(c func() *cobra.Command, first string, args ...string) writeRun {
		return writeRun{c, append(args, "-c", cfg, "--by", "ops", "--why", "test"), first}
	}
	sb, _ := rules.Load([]byte(ruleB))
	return []writeRun{
		change(rulesCmd, "GEMBA_DECISIONS", "activate", a),
		change(rulesCmd, "GEMBA_DECISIONS", "activate", b),
		change(rulesCmd, "GEMBA_DECISIONS", "shadow", a),
		change(rulesCmd, "GEMBA_DECISIONS", "shadow", "--clear"),
		change(rulesCmd, "GEMBA_DECISIONS", "canary", sb.Version()[:8], "--share", "0.5"),
		change(rulesCmd, "GEMBA_DECISIONS", "canary", "--clear"),
		change(rulesCmd, "GEMBA_DECISIONS", "rollback"),
		change(modelsCmd, "GEMBA_MODELS", "refit", "--promote", "activate"),
		change(modelsCmd, "GEMBA_MODELS", "refit", "--promote", "shadow"),
		change(modelsCmd, "GEMBA_MODELS", "shadow", "--clear"),
		change(modelsCmd, "GEMBA_MODELS", "promote", "$STORED"), // the last set refit stored
		change(modelsCmd, "GEMBA_MODELS", "rollback"),
		{importCmd, []string{"inventory", "-c", cfg, csv}, "COMMERCE"},
		{actionsCmd, []string{"replay", "-c", cfg, fmt.Sprintf("%032x", 7)}, "GEMBA_ACT_OUTBOX"},
	}
}

// TestWriteCommandsChangeNothing: the commands that change the rules (activate, shadow, canary,
// rollback), the models (refit, promote, shadow, rollback), the inventory (import) or the outbox
// (replay), run by an older binary against a deployment a newer release configured, leave every
// stream's and bucket's configuration as it is: they rewrote the decision log's, the rules
// bucket's, the model buckets' (the refit lock's TTL) with their own. Against servers the hub never
// ran on, they say which stream or bucket is missing and that the hub has not run there, and create
// nothing: only the hub creates.
func TestWriteCommandsChangeNothing(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	dir := t.TempDir()
	conf := "hub: {id: t1, data_dir: %s/data}\nnats: {servers: [%q]}\ncommerce: {channels: [web]}\nguard: {max_discount: 20}\n" +
		"learn: {enabled: true, horizon_days: 7}\n"
	cfg := writeFile(t, filepath.Join(dir, "hub.yaml"), fmt.Sprintf(conf, dir, n.URL()))
	a := writeFile(t, filepath.Join(dir, "a.yaml"), ruleA)
	b := writeFile(t, filepath.Join(dir, "b.yaml"), ruleB)
	now := time.Now().UTC()
	csv := writeFile(t, filepath.Join(dir, "count.csv"), "sku,site,on_hand,time\nA-100,plant1,50,"+now.Add(-time.Hour).Format(time.RFC3339)+"\n")
	hubMade(t, js, cfg)
	today := now.Truncate(24 * time.Hour)
	var evs []commerce.Event
	for d := 1; d <= 60; d++ {
		evs = append(evs, commerce.Sale{OrderID: fmt.Sprintf("o%d", d), Line: 1, SKU: "A-100", Site: "plant1", Channel: "web",
			Quantity: float64(3 + d%4), UnitPrice: 3, Currency: "EUR", Time: today.AddDate(0, 0, -d).Add(9 * time.Hour)})
	}
	publishSales(t, js, []string{"web"}, evs)

	before := newerRelease(t, js)
	stored := regexp.MustCompile(`stored model set ([0-9a-f]{16}) `)
	last := ""
	for _, r := range writeRuns(cfg, a, b, csv) {
		for i := range r.args {
			if r.args[i] == "$STORED" {
				r.args[i] = last
			}
		}
		o, e, err := runCobra(t, r.cmd(), r.args...)
		if m := stored.FindStringSubmatch(o); m != nil {
			last = m[1]
		}
		if code := exitCode(err); code != 0 && r.args[0] != "replay" {
			t.Errorf("%v: exit %d: %s%s", r.args, code, o, e)
		}
		sameConfigs(t, js, before, r.args)
	}

	// Servers the hub never ran on.
	empty := natstest.JetStream(t)
	_, ejs := natstest.Connect(t, empty.URL())
	ecfg := writeFile(t, filepath.Join(dir, "empty.yaml"), fmt.Sprintf(conf, dir, empty.URL()))
	for _, r := range writeRuns(ecfg, a, b, csv) {
		_, e, err := runCobra(t, r.cmd(), r.args...)
		if exitCode(err) != 1 || !regexp.MustCompile(`\b`+r.first+`\b`).MatchString(e) || !strings.Contains(e, "not run") {
			t.Errorf("%v on empty servers: exit %d, %q; want 1 and an error naming %s and saying the hub has not run there",
				r.args, exitCode(err), e, r.first)
		}
	}
	for name := range ejs.StreamNames(context.Background()).Name() {
		t.Errorf("a command created %s on empty servers", name)
	}
}

// TestImportInventoryToAStreamThatDoesNotTakeIt: the COMMERCE stream the hub made does not take the
// subject this binary publishes inventory counts to (another release's subjects, or a commerce.prefix
// that is not the hub's). The import says so, naming the subject and the stream's subjects, instead
// of failing every row with "no response from stream" and "run the import again", which never helps.
func TestImportInventoryToAStreamThatDoesNotTakeIt(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	dir := t.TempDir()
	conf := "hub: {id: t1, data_dir: %s/data}\nnats: {servers: [%q]}\ncommerce: {prefix: %s, channels: [web]}\n"
	hubMade(t, js, writeFile(t, filepath.Join(dir, "hub.yaml"), fmt.Sprintf(conf, dir, n.URL(), "gemba")))
	cfg := writeFile(t, filepath.Join(dir, "cli.yaml"), fmt.Sprintf(conf, dir, n.URL(), "shop"))
	csv := writeFile(t, filepath.Join(dir, "count.csv"), "sku,site,on_hand,time\nA-100,plant1,50,"+
		time.Now().UTC().Add(-time.Hour).Format(time.RFC3339)+"\n")
	_, e, err := runCobra(t, importCmd(), "inventory", "-c", cfg, csv)
	if exitCode(err) != 1 || !strings.Contains(e, "COMMERCE does not take shop.commerce.inventory") ||
		!strings.Contains(e, "gemba.commerce.inventory") || strings.Contains(e, "run the import again") {
		t.Errorf("import to a stream that does not take the subject: exit %d, %q; want 1 and the subject the stream does not take",
			exitCode(err), e)
	}
}
