package hub

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub/act"
	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

// TestBadDataDirSaysSo: an embedded server whose store cannot be created (data_dir is a file) stops
// the hub with an error that names the store, not a guess about the port after 30 s.
func TestBadDataDirSaysSo(t *testing.T) {
	file := filepath.Join(t.TempDir(), "not-a-dir")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, `
hub: {id: t5, data_dir: "`+file+`", log: {level: error}}
http: {listen: "127.0.0.1:${HTTP_PORT}"}
nats: {embedded: {listen: "127.0.0.1:${NATS_PORT}"}}
commerce: {channels: [web]}
`)
	h, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	err = h.Run(context.Background())
	if err == nil {
		t.Fatal("Run: no error with a data_dir that is a file")
	}
	if !strings.Contains(err.Error(), "JetStream") || strings.Contains(err.Error(), "port in use") || !strings.Contains(err.Error(), "not-a-dir") {
		t.Errorf("Run: %v; want the store's error (JetStream, the path), not a port guess", err)
	}
}

// TestServerCredentialsNeverShown: a server URL written without its scheme (nats.go adds nats://)
// keeps its credentials out of the effective config and the start-up log.
func TestServerCredentialsNeverShown(t *testing.T) {
	n := natstest.JetStream(t)
	hostport := strings.TrimPrefix(n.URL(), "nats://")
	cfg := testConfig(t, `
hub: {id: t6, data_dir: "${DIR}"}
http: {listen: "127.0.0.1:${HTTP_PORT}"}
nats: {servers: ["gemba:hunter2@`+hostport+`"]}
commerce: {channels: [web]}
`)
	out, err := cfg.Effective()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "hunter2") {
		t.Errorf("effective config shows the password:\n%s", out)
	}
	var logs testutil.Buffer
	ready := make(chan string, 1)
	h, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil)), Ready: ready})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("hub not started")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logs.String(), "hunter2") {
		t.Errorf("log shows the password:\n%s", logs.String())
	}
}

// TestUnparsableServerURL: a password with a stray % makes the URL unparsable: validate refuses it
// by its path, and neither that error nor a connection attempt prints the password.
func TestUnparsableServerURL(t *testing.T) {
	doc := `
hub: {id: t7, data_dir: /tmp}
nats: {servers: ["nats://gemba:s3cr%zzet@127.0.0.1:4222"]}
commerce: {channels: [web]}
`
	cfg, err := Parse([]byte(doc), func(string) (string, bool) { return "", false })
	if err == nil || !strings.Contains(err.Error(), "servers[0]") || strings.Contains(err.Error(), "s3cr") {
		t.Errorf("Parse: %v; want an error naming nats.servers[0] without the password", err)
	}
	if cfg == nil {
		cfg = &Config{NATS: NATSConfig{Servers: []string{"nats://gemba:s3cr%zzet@127.0.0.1:4222"}}}
	}
	nc, err := connect(cfg, strings.Join(cfg.NATS.Servers, ","), slog.New(slog.DiscardHandler), false)
	if nc != nil {
		nc.Close()
	}
	if err == nil || strings.Contains(err.Error(), "s3cr") {
		t.Errorf("connect: %v; want an error without the password", err)
	}
}

// TestNotReadyWithoutCommerceConsumer: /readyz says 200 only while every consumer is bound: with the
// commerce consumer gone (deleted, as an operator or a stream restore would), no sale reaches the
// inventory, and the hub must say so.
func TestNotReadyWithoutCommerceConsumer(t *testing.T) {
	cfg := testConfig(t, `
hub: {id: t8, data_dir: "${DIR}", log: {level: error}}
http: {listen: "127.0.0.1:${HTTP_PORT}"}
nats: {embedded: {listen: "127.0.0.1:${NATS_PORT}"}}
commerce: {channels: [web]}
`)
	r := start(t, cfg)
	base := "http://" + r.h.Addr()
	var rd Readiness
	testutil.WaitFor(t, 10*time.Second, "waiting for the agents' stream", func() bool {
		get(t, base+"/readyz", &rd)
		return strings.Contains(strings.Join(rd.Reasons, ";"), "waiting for stream GEMBA")
	})
	_, js := natstest.Connect(t, "nats://"+cfg.NATS.Embedded.Listen)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "GEMBA", Subjects: []string{"gemba.*.*.features", "gemba.*.*.status", "gemba.*.*.samples"}}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "ready", func() bool { return get(t, base+"/readyz", &rd) == 200 })
	testutil.WaitFor(t, 10*time.Second, "commerce consumer bound", func() bool {
		_, err := js.Consumer(ctx, cfg.Commerce.Stream, cfg.Commerce.Consumer)
		return err == nil
	})
	if err := js.DeleteConsumer(ctx, cfg.Commerce.Stream, cfg.Commerce.Consumer); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 15*time.Second, "not ready, naming the commerce consumer", func() bool {
		return get(t, base+"/readyz", &rd) == 503 && strings.Contains(strings.Join(rd.Reasons, ";"), cfg.Commerce.Consumer)
	})
}

// TestEmbeddedServerRequiresTheCredentials: with nats.user and nats.password the embedded server
// (which gateways reach once it listens beyond loopback) refuses a client without them: it holds the
// kill switch, the rules and the guard, which anyone connected could otherwise change.
func TestEmbeddedServerRequiresTheCredentials(t *testing.T) {
	cfg := testConfig(t, `
hub: {id: t9, data_dir: "${DIR}", log: {level: error}}
http: {listen: "127.0.0.1:${HTTP_PORT}"}
nats: {user: gemba, password: hunter2, embedded: {listen: "127.0.0.1:${NATS_PORT}"}}
commerce: {channels: [web]}
`)
	r := start(t, cfg)
	var rd Readiness
	testutil.WaitFor(t, 10*time.Second, "waiting for the agents' stream", func() bool {
		get(t, "http://"+r.h.Addr()+"/readyz", &rd)
		return strings.Contains(strings.Join(rd.Reasons, ";"), "waiting for stream GEMBA")
	})
	url := "nats://" + cfg.NATS.Embedded.Listen
	if nc, err := nats.Connect(url); err == nil {
		nc.Close()
		t.Error("the embedded server accepted a client without credentials")
	}
	nc, err := nats.Connect(url, nats.UserInfo("gemba", "hunter2"))
	if err != nil {
		t.Fatalf("with the credentials: %v", err)
	}
	nc.Close()
}

// TestActionDeliveryOutlivesAFailedStart: the delivery loop cannot watch the outbox at first (its
// bucket is gone, as a JetStream not answering would make it): the replica is not ready and says
// why, and the loop starts once the bucket is back — it stopped for the life of the process, with
// /readyz at 200 and no action delivered.
func TestActionDeliveryOutlivesAFailedStart(t *testing.T) {
	n := natstest.JetStream(t)
	cfg := testConfig(t, `
hub: {id: t10, data_dir: "${DIR}", log: {level: error}}
http: {enabled: false}
nats: {servers: ["`+n.URL()+`"]}
commerce: {channels: [web]}
guard: {max_discount: 20}
monitor: {enabled: false}
`)
	h, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	nc, js := natstest.Connect(t, n.URL())
	h.mu.Lock()
	h.nc, h.why = nc, ""
	h.mu.Unlock()
	ctx := context.Background()
	if _, err := h.openState(ctx, js); err != nil {
		t.Fatal(err)
	}
	defer h.closeState()
	if err := js.DeleteKeyValue(ctx, cfg.Act.Bucket); err != nil {
		t.Fatal(err)
	}
	stop := h.runDecisions(h.dec.Load(), slog.New(slog.DiscardHandler))
	defer stop()
	testutil.WaitFor(t, 10*time.Second, "not ready, naming the action delivery", func() bool {
		rd := h.Readiness()
		return !rd.Ready && strings.Contains(strings.Join(rd.Reasons, ";"), "action delivery")
	})
	if _, err := act.Open(ctx, js, *cfg.Act, nil); err != nil { // the bucket back
		t.Fatal(err)
	}
	testutil.WaitFor(t, 30*time.Second, "ready once the outbox can be watched", func() bool { return h.Readiness().Ready })
}

// TestEmbeddedNeedsADataDir: an empty hub.data_dir put the embedded server's store (the rules, the
// guard's claims and kill switch) under the working directory: a start from another directory began
// with an empty state. validate refuses it.
func TestEmbeddedNeedsADataDir(t *testing.T) {
	none := func(string) (string, bool) { return "", false }
	_, err := Parse([]byte("hub: {id: a, data_dir: \"\"}\ncommerce: {channels: [web]}\n"), none)
	if err == nil || !strings.Contains(err.Error(), "hub.data_dir") {
		t.Errorf("Parse: %v; want a problem at hub.data_dir", err)
	}
	// With servers, the hub keeps nothing on disk: no data_dir needed.
	if _, err := Parse([]byte("hub: {id: a, data_dir: \"\"}\nnats: {servers: [\"nats://h:4222\"]}\ncommerce: {channels: [web]}\n"), none); err != nil {
		t.Errorf("Parse with servers: %v", err)
	}
}
