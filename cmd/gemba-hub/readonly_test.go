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
	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/decide/guard"
	"github.com/gemba-io/gemba/hub/decide/rules"
	"github.com/gemba-io/gemba/hub/decide/versions"
	"github.com/gemba-io/gemba/hub/ingest/commerce"
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
	dir := t.TempDir()
	cfg := writeFile(t, filepath.Join(dir, "hub.yaml"), fmt.Sprintf("hub: {id: t1, data_dir: %s/data}\nnats: {servers: [%q]}\n"+
		"commerce: {channels: [web]}\nguard: {max_discount: 20}\n", dir, n.URL()))
	a := writeFile(t, filepath.Join(dir, "a.yaml"), ruleA)
	sa, _ := rules.Load([]byte(ruleA))
	hubMade(t, js, cfg)
	if _, e, err := runCobra(t, rulesCmd(), "activate", a, "-c", cfg, "--by", "alice", "--why", "first"); err != nil {
		t.Fatalf("activate: %v %s", err, e)
	}
	before := newerRelease(t, js)
	for _, r := range readOnlyRuns(cfg, a, sa.Version()[:8]) {
		_, e, err := runCobra(t, r.cmd(), r.args...)
		if code := exitCode(err); code != 0 && strings.Contains(e, "not run") {
			t.Errorf("%v: exit %d: %s", r.args, code, e)
		}
		sameConfigs(t, js, before, r.args)
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
	for name := range ejs.StreamNames(context.Background()).Name() {
		t.Errorf("a read-only command created %s on empty servers", name)
	}
}

// hubMade opens, as a running hub does, every stream and bucket the CLI's commands use: the
// decision log and the rules bucket, the outbox and the actions stream, the guard, the model
// registry and the COMMERCE stream.
func hubMade(t *testing.T, js jetstream.JetStream, cfgFile string) *hub.Config {
	t.Helper()
	ctx := context.Background()
	cfg, err := hub.Load(cfgFile, func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	log, err := audit.Open(ctx, js, cfg.Audit, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := versions.Open(ctx, js, cfg.Rules, log, nil); err != nil {
		t.Fatal(err)
	}
	if cfg.Act != nil {
		if _, err := act.Open(ctx, js, *cfg.Act, nil); err != nil {
			t.Fatal(err)
		}
		g, err := guard.New(ctx, js, *cfg.Guard, "t", nil)
		if err != nil {
			t.Fatal(err)
		}
		_ = g.Close()
	}
	if _, err := hub.OpenModels(ctx, js, cfg, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := commerce.EnsureStream(ctx, js, cfg.Commerce); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// hubStreams are the streams behind what hubMade opens.
var hubStreams = []string{"GEMBA_DECISIONS", "ACTIONS", "KV_GEMBA_RULES", "KV_GEMBA_ACT_OUTBOX", "OBJ_GEMBA_MODELS",
	"KV_GEMBA_MODELS_STATE", "KV_GEMBA_MODELS_LOCK", "KV_GEMBA_GUARD", "COMMERCE"}

// newerRelease gives every stream of hubStreams settings of a newer release (a description, a
// duplicate window; a longer refit lock TTL and commerce retention) and returns them.
func newerRelease(t *testing.T, js jetstream.JetStream) map[string]jetstream.StreamConfig {
	t.Helper()
	ctx := context.Background()
	before := map[string]jetstream.StreamConfig{}
	for _, name := range hubStreams {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		c := s.CachedInfo().Config
		c.Description, c.Duplicates = "configured by a newer release", 90*time.Second
		switch name {
		case "KV_GEMBA_MODELS_LOCK":
			c.MaxAge = 3 * time.Minute
		case "COMMERCE":
			c.MaxAge = 45 * 24 * time.Hour
		}
		st, err := js.UpdateStream(ctx, c)
		if err != nil {
			t.Fatalf("update %s: %v", name, err)
		}
		before[name] = st.CachedInfo().Config
	}
	return before
}

// sameConfigs fails the test for every stream whose config is no longer before's, naming what ran.
func sameConfigs(t *testing.T, js jetstream.JetStream, before map[string]jetstream.StreamConfig, ran []string) {
	t.Helper()
	for _, name := range hubStreams {
		s, err := js.Stream(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.CachedInfo().Config; !reflect.DeepEqual(got, before[name]) {
			t.Errorf("%v changed %s's config: description %q, duplicate window %s, max age %s; was %q, %s, %s", ran, name,
				got.Description, got.Duplicates, got.MaxAge, before[name].Description, before[name].Duplicates, before[name].MaxAge)
			before[name] = got
		}
	}
}
