package main

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

// TestReplicaNameAcrossProcesses: gemba-hub processes sharing one NATS under one replica name
// (hub.id). A second one started beside a running one refuses to start (exit 1, naming the name and
// hub.id); once the first is SIGKILLed (its presence stays, no longer refreshed), a process of that
// name starts again (within a lease).
func TestReplicaNameAcrossProcesses(t *testing.T) {
	ns := natstest.JetStream(t)
	createAgentStream(t, ns.URL(), 1)
	a := startReplica(t, t.TempDir(), "twin", ns.URL())
	testutil.WaitFor(t, 60*time.Second, "the first replica ready", a.ready)

	b := startReplica(t, t.TempDir(), "twin", ns.URL())
	select {
	case <-b.exited:
	case <-time.After(60 * time.Second):
		t.Fatalf("a second process named twin runs beside the first one:\n%s", tail(b.stderr.String()))
	}
	if code := b.cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(b.stderr.String(), "twin") ||
		!strings.Contains(b.stderr.String(), "hub.id") {
		t.Errorf("second process: exit %d; want 1 and an error naming twin and hub.id:\n%s", code, tail(b.stderr.String()))
	}
	if !a.ready() {
		t.Error("the first replica is not ready any more")
	}

	if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-a.exited
	c := startReplica(t, t.TempDir(), "twin", ns.URL())
	testutil.WaitFor(t, 60*time.Second, "the replica restarted after the kill ready", c.ready)
}
