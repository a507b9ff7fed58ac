package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

// TestRunRefusesMissingGuardBucket: gemba-hub run after the guard's bucket was deleted (the others
// holding data) created it again empty and started, the day's caps and decided ids forgotten. It
// exits 1 naming the bucket and --recreate; with --recreate GEMBA_GUARD it starts, with a WARN.
func TestRunRefusesMissingGuardBucket(t *testing.T) {
	ns := natstest.JetStream(t)
	createAgentStream(t, ns.URL(), 1)
	dir := t.TempDir()
	port := testutil.FreePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	file := writeFile(t, filepath.Join(dir, "hub.yaml"), fmt.Sprintf(`hub: {id: stores, data_dir: %s, shutdown_timeout: 10s, log: {level: warn, format: text}}
http: {listen: "127.0.0.1:%d"}
nats: {servers: ["%s"]}
commerce: {channels: [web]}
features:
  - {name: units, signal: "*.pack.parts", feature: units, key: sku, max_age: 1h}
guard: {max_discount: 20}
`, dir, port, ns.URL()))
	ready := func() bool { _, code := readyz(base); return code == 200 }

	first := runReplica(t, "first", "", file)
	testutil.WaitFor(t, 60*time.Second, "the first start ready", ready)
	if err := first.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-first.exited
	_, js := natstest.Connect(t, ns.URL())
	ctx := context.Background()
	out, err := js.KeyValue(ctx, "GEMBA_ACT_OUTBOX")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := out.Put(ctx, "a.in-flight", []byte("{}")); err != nil { // a delivery the outbox holds
		t.Fatal(err)
	}
	if err := js.DeleteKeyValue(ctx, "GEMBA_GUARD"); err != nil {
		t.Fatal(err)
	}

	second := runReplica(t, "second", "", file)
	deadline := time.Now().Add(60 * time.Second)
	for exited := false; !exited; {
		select {
		case <-second.exited:
			exited = true
		case <-time.After(50 * time.Millisecond):
		}
		if !exited && (ready() || time.Now().After(deadline)) {
			t.Fatalf("started (or still running) without the guard's bucket:\n%s", tail(second.stderr.String()))
		}
	}
	stderr := second.stderr.String()
	if code := second.cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(stderr, "GEMBA_GUARD") ||
		!strings.Contains(stderr, "--recreate GEMBA_GUARD") {
		t.Fatalf("exit %d; want 1 and an error naming GEMBA_GUARD and --recreate:\n%s", code, tail(stderr))
	}
	if _, err := js.KeyValue(ctx, "GEMBA_GUARD"); err == nil {
		t.Fatal("the refused start created GEMBA_GUARD")
	}

	third := runReplica(t, "third", "", file, "--recreate", "GEMBA_GUARD")
	testutil.WaitFor(t, 60*time.Second, "ready with --recreate GEMBA_GUARD", ready)
	if s := third.stderr.String(); !strings.Contains(s, "level=WARN") || !strings.Contains(s, "bucket=GEMBA_GUARD") ||
		!strings.Contains(s, "cooldown") {
		t.Errorf("no WARN naming GEMBA_GUARD and what it lost:\n%s", tail(s))
	}
}
