package hub

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

// storesConfig is a hub with a decision room on n's server, and the agents' stream it waits for.
func storesConfig(t *testing.T, n *natstest.Node, js jetstream.JetStream) *Config {
	t.Helper()
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "GEMBA",
		Subjects: []string{"gemba.*.*.features", "gemba.*.*.status"}}); err != nil {
		t.Fatal(err)
	}
	return testConfig(t, `
hub: {id: stores, data_dir: "${DIR}", shutdown_timeout: 5s, log: {level: error}}
http: {enabled: false}
nats: {servers: ["`+n.URL()+`"]}
commerce: {channels: [web]}
guard: {max_discount: 20}
monitor: {enabled: false}
`)
}

// startOnce runs a hub with opts until it is ready (then stops it) or Run returns: Run's error
// (nil once it was ready) and what it logged.
func startOnce(t *testing.T, cfg *Config, opts Options) (error, string) {
	t.Helper()
	logs := &testutil.Buffer{}
	opts.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	h, err := New(cfg, opts)
	if err != nil {
		return err, logs.String()
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	var runErr error
	returned := false
	ready := testutil.Poll(30*time.Second, func() bool {
		select {
		case runErr = <-done:
			returned = true
			return true
		default:
			return h.Readiness().Ready
		}
	})
	switch {
	case returned:
		if runErr == nil {
			runErr = errors.New("Run returned nil before the hub was ready")
		}
		return runErr, logs.String()
	case ready:
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run after ready: %v", err)
		}
		return nil, logs.String()
	default:
		cancel()
		<-done
		t.Fatalf("neither ready nor refused within 30s: %v\n%s", h.Readiness().Reasons, logs.String())
		return nil, ""
	}
}

// fillStores writes one message into every decision store, as a hub that has decided leaves them.
func fillStores(t *testing.T, js jetstream.JetStream, cfg *Config) {
	t.Helper()
	ctx := context.Background()
	for _, kv := range []string{cfg.Guard.Bucket, cfg.Act.Bucket, cfg.Rules.Bucket} {
		b, err := js.KeyValue(ctx, kv)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Put(ctx, "test.memory", []byte("{}")); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{cfg.Audit.Stream, cfg.Act.Stream} {
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		subj := strings.NewReplacer("*", "x", ">", "x").Replace(st.CachedInfo().Config.Subjects[0])
		if _, err := js.Publish(ctx, subj, []byte("{}")); err != nil {
			t.Fatal(err)
		}
	}
}

// warned says whether a WARN line of logs has every one of words.
func warned(logs string, words ...string) bool {
	for _, l := range strings.Split(logs, "\n") {
		if !strings.Contains(l, "level=WARN") {
			continue
		}
		all := true
		for _, w := range words {
			all = all && strings.Contains(l, w)
		}
		if all {
			return true
		}
	}
	return false
}

func deleteStore(t *testing.T, js jetstream.JetStream, name string) {
	t.Helper()
	ctx := context.Background()
	err := js.DeleteKeyValue(ctx, name)
	if errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
		err = js.DeleteStream(ctx, name)
	}
	if err != nil {
		t.Fatalf("delete %s: %v", name, err)
	}
}

// TestRestartRefusesMissingDecisionStore: a restart after the guard's bucket, the outbox or the
// decision log was deleted (an operator, a partial restore) created it again empty and started:
// the day's caps, cooldowns and decided ids, the deliveries in flight, the audit trail or the rule
// versions were gone, and nothing said so. The hub refuses to start, naming the store and what its loss means; with
// --recreate NAME (Options.Recreate) it creates it again, saying so at WARN.
func TestRestartRefusesMissingDecisionStore(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	cfg := storesConfig(t, n, js)
	if err, logs := startOnce(t, cfg, Options{}); err != nil {
		t.Fatalf("first start: %v\n%s", err, logs)
	}
	fillStores(t, js, cfg)
	for _, c := range []struct{ name, means string }{
		{cfg.Guard.Bucket, "cooldown"},
		{cfg.Act.Bucket, "in flight"},
		{cfg.Audit.Stream, "audit trail"},
		{cfg.Rules.Bucket, "no longer load"},
	} {
		deleteStore(t, js, c.name)
		err, logs := startOnce(t, cfg, Options{})
		if err == nil || !strings.Contains(err.Error(), c.name) || !strings.Contains(err.Error(), c.means) ||
			!strings.Contains(err.Error(), "--recreate "+c.name) {
			t.Fatalf("restart without %s: Run = %v; want a refusal naming it, saying %q and how to proceed\n%s", c.name, err, c.means, logs)
		}
		t.Log(err)
		if _, err := js.Stream(context.Background(), c.name); err == nil {
			t.Fatalf("%s created by the refused start", c.name)
		}
		if _, err := js.KeyValue(context.Background(), c.name); err == nil {
			t.Fatalf("%s created by the refused start", c.name)
		}
		err, logs = startOnce(t, cfg, Options{Recreate: []string{c.name}})
		if err != nil {
			t.Fatalf("restart with --recreate %s: %v\n%s", c.name, err, logs)
		}
		if !warned(logs, c.name, c.means) {
			t.Fatalf("restart with --recreate %s: no WARN naming it and its consequences:\n%s", c.name, logs)
		}
		fillStores(t, js, cfg)
	}
	// Two at once: one error naming both, and the flag that takes both.
	deleteStore(t, js, cfg.Guard.Bucket)
	deleteStore(t, js, cfg.Act.Bucket)
	err, logs := startOnce(t, cfg, Options{Recreate: []string{cfg.Act.Bucket}})
	if want := "--recreate " + cfg.Guard.Bucket + "," + cfg.Act.Bucket; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("restart without the guard's and the outbox's buckets, --recreate %s: Run = %v; want a refusal saying %q\n%s",
			cfg.Act.Bucket, err, want, logs)
	}
	if _, err := js.KeyValue(context.Background(), cfg.Act.Bucket); err == nil {
		t.Errorf("%s created by a refused start", cfg.Act.Bucket)
	}
}

// TestDecisionStoresFirstStart: with no decision store at all (a fresh install, or every one
// deleted on purpose) the hub starts and creates them; with only the actions stream missing it
// creates it again, as the running hub does, with a WARN; a store missing among stores that hold
// nothing (a first start stopped part way, another replica creating them) is created.
func TestDecisionStoresFirstStart(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	cfg := storesConfig(t, n, js)
	if err, logs := startOnce(t, cfg, Options{}); err != nil {
		t.Fatalf("fresh start: %v\n%s", err, logs)
	}
	// Nothing written yet: a missing store loses nothing.
	deleteStore(t, js, cfg.Guard.Bucket)
	if err, logs := startOnce(t, cfg, Options{}); err != nil {
		t.Fatalf("guard bucket missing, the other stores empty: %v\n%s", err, logs)
	}
	fillStores(t, js, cfg)
	deleteStore(t, js, cfg.Act.Stream)
	err, logs := startOnce(t, cfg, Options{})
	if err != nil {
		t.Fatalf("actions stream missing: %v\n%s", err, logs)
	}
	if !warned(logs, cfg.Act.Stream, "published on it before are gone") {
		t.Errorf("actions stream created again without a WARN naming it:\n%s", logs)
	}
	fillStores(t, js, cfg)
	for _, s := range []string{cfg.Guard.Bucket, cfg.Act.Bucket, cfg.Audit.Stream, cfg.Act.Stream, cfg.Rules.Bucket} {
		deleteStore(t, js, s)
	}
	if err, logs := startOnce(t, cfg, Options{}); err != nil {
		t.Fatalf("every decision store deleted: %v\n%s", err, logs)
	}
	for _, s := range []string{cfg.Guard.Bucket, cfg.Act.Bucket} {
		if _, err := js.KeyValue(context.Background(), s); err != nil {
			t.Errorf("%s not created: %v", s, err)
		}
	}
}

// TestRecreateNamesADecisionStore: --recreate with a name that is not one of the config's decision
// stores (a typo), or without a decision room, is refused before anything starts, listing the names.
func TestRecreateNamesADecisionStore(t *testing.T) {
	cfg := testConfig(t, `
hub: {id: r, data_dir: "${DIR}"}
commerce: {channels: [web]}
guard: {max_discount: 20}
`)
	if _, err := New(cfg, Options{Recreate: []string{"GEMBA_GAURD"}}); err == nil ||
		!strings.Contains(err.Error(), "GEMBA_GAURD") || !strings.Contains(err.Error(), "GEMBA_GUARD") {
		t.Errorf("--recreate GEMBA_GAURD: New = %v; want an error naming it and the decision stores", err)
	}
	if _, err := New(cfg, Options{Recreate: []string{cfg.Act.Stream}}); err == nil {
		t.Errorf("--recreate %s: accepted; a start creates it again by itself", cfg.Act.Stream)
	}
	if _, err := New(cfg, Options{Recreate: []string{"GEMBA_GUARD", "GEMBA_ACT_OUTBOX"}}); err != nil {
		t.Errorf("--recreate GEMBA_GUARD,GEMBA_ACT_OUTBOX: %v", err)
	}
	none := testConfig(t, `
hub: {id: r, data_dir: "${DIR}"}
commerce: {channels: [web]}
`)
	if _, err := New(none, Options{Recreate: []string{"GEMBA_GUARD"}}); err == nil || !strings.Contains(err.Error(), "guard") {
		t.Errorf("--recreate without a decision room: New = %v; want an error saying so", err)
	}
}
