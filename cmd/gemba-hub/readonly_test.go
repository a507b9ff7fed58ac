package main

import (
	"context"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/gemba-io/gemba/hub"
	"github.com/gemba-io/gemba/hub/act"
	"github.com/gemba-io/gemba/hub/decide/guard"
	"github.com/gemba-io/gemba/hub/decide/rules"
	"github.com/gemba-io/gemba/internal/natstest"
)

// readOnlyRuns are the commands that only read the hub's state, each with the stream or bucket it
// reads first.
func readOnlyRuns(cfg, a, version string) []struct {
	cmd   func() *cobra.Command
	args  []string
	first string
} {
	id := fmt.Sprintf("%032x", 7)
	return []struct {
		cmd   func() *cobra.Command
		args  []string
		first string
	}{
		{whyCmd, []string{id, "-c", cfg}, "GEMBA_DECISIONS"},
		{rulesCmd, []string{"history", "-c", cfg}, "GEMBA_DECISIONS"},
		{rulesCmd, []string{"diff", version, a, "-c", cfg}, "GEMBA_DECISIONS"},
		{actionsCmd, []string{"dead", "-c", cfg}, "GEMBA_ACT_OUTBOX"},
		{modelsCmd, []string{"list", "-c", cfg}, "GEMBA_MODELS"},
		{modelsCmd, []string{"show", "active", "-c", cfg}, "GEMBA_MODELS"},
		{modelsCmd, []string{"history", "-c", cfg}, "GEMBA_MODELS"},
	}
}

// TestReadOnlyCommandsChangeNothing: why, rules history, rules diff (of a stored version), actions
// dead and models list, show and history only read. Run by an older binary against a deployment whose streams and buckets a
// newer release configured differently, they leave every configuration as it is (they rewrote
// them with their own: the decision log's duplicate window, the outbox's settings). Against
// servers the hub never ran on, they say which stream or bucket is missing, and create nothing.
func TestReadOnlyCommandsChangeNothing(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	ctx := context.Background()
	dir := t.TempDir()
	cfg := writeFile(t, filepath.Join(dir, "hub.yaml"), fmt.Sprintf("hub: {id: t1, data_dir: %s/data}\nnats: {servers: [%q]}\n"+
		"commerce: {channels: [web]}\nguard: {max_discount: 20}\n", dir, n.URL()))
	a := writeFile(t, filepath.Join(dir, "a.yaml"), ruleA)
	sa, _ := rules.Load([]byte(ruleA))
	// What the hub made: the decision log and the rules bucket, the outbox and the actions stream.
	if _, e, err := runCobra(t, rulesCmd(), "activate", a, "-c", cfg, "--by", "alice", "--why", "first"); err != nil {
		t.Fatalf("activate: %v %s", err, e)
	}
	hcfg, err := hub.Load(cfg, func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := act.Open(ctx, js, *hcfg.Act, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := hub.OpenModels(ctx, js, hcfg, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := guard.New(ctx, js, *hcfg.Guard, "t", nil); err != nil {
		t.Fatal(err)
	}
	// A newer release's settings.
	streams := []string{"GEMBA_DECISIONS", "ACTIONS", "KV_GEMBA_RULES", "KV_GEMBA_ACT_OUTBOX", "OBJ_GEMBA_MODELS",
		"KV_GEMBA_MODELS_STATE", "KV_GEMBA_MODELS_LOCK", "KV_GEMBA_GUARD"}
	before := map[string]jetstream.StreamConfig{}
	for _, name := range streams {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		c := s.CachedInfo().Config
		c.Description, c.Duplicates = "configured by a newer release", 90*time.Second
		st, err := js.UpdateStream(ctx, c)
		if err != nil {
			t.Fatalf("update %s: %v", name, err)
		}
		before[name] = st.CachedInfo().Config
	}

	for _, r := range readOnlyRuns(cfg, a, sa.Version()[:8]) {
		_, e, err := runCobra(t, r.cmd(), r.args...)
		if code := exitCode(err); code != 0 && strings.Contains(e, "not run") {
			t.Errorf("%v: exit %d: %s", r.args, code, e)
		}
		for _, name := range streams {
			s, err := js.Stream(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			if got := s.CachedInfo().Config; !reflect.DeepEqual(got, before[name]) {
				t.Errorf("%v changed %s's config: description %q, duplicate window %s; was %q, %s", r.args, name,
					got.Description, got.Duplicates, before[name].Description, before[name].Duplicates)
				before[name] = got
			}
		}
	}

	// Servers the hub never ran on.
	empty := natstest.JetStream(t)
	_, ejs := natstest.Connect(t, empty.URL())
	ecfg := writeFile(t, filepath.Join(dir, "empty.yaml"), fmt.Sprintf("hub: {id: t1, data_dir: %s/data}\nnats: {servers: [%q]}\n"+
		"commerce: {channels: [web]}\nguard: {max_discount: 20}\n", dir, empty.URL()))
	for _, r := range readOnlyRuns(ecfg, a, sa.Version()[:8]) {
		_, e, err := runCobra(t, r.cmd(), r.args...)
		if exitCode(err) != 1 || !strings.Contains(e, r.first) || !strings.Contains(e, "not run") {
			t.Errorf("%v on empty servers: exit %d, %q; want 1 and an error naming %s and saying the hub has not run there",
				r.args, exitCode(err), e, r.first)
		}
	}
	for name := range ejs.StreamNames(ctx).Name() {
		t.Errorf("a read-only command created %s on empty servers", name)
	}
}
