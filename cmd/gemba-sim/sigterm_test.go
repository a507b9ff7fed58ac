package main

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/gemba-io/gemba/internal/testutil"
)

// withholdAcks makes the broker stop acknowledging QoS 1 publishes once set: the publisher's
// tokens stay outstanding, as with a broker that dies between receiving and acknowledging.
type withholdAcks struct {
	mqtt.HookBase
	on       atomic.Bool
	withheld atomic.Int64
}

func (h *withholdAcks) ID() string { return "withhold-acks" }
func (h *withholdAcks) Provides(b byte) bool {
	return b == mqtt.OnPublish
}
func (h *withholdAcks) OnPublish(_ *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if h.on.Load() && pk.FixedHeader.Qos > 0 {
		h.withheld.Add(1)
		return pk, packets.ErrRejectPacket
	}
	return pk, nil
}

// Issue 18 point 10: with its broker gone and publishes unacknowledged, gemba-sim used to wait out
// every publish's 30 s acknowledgement timeout (and, with a full queue, far longer) before exiting
// on SIGTERM. It must exit within its shutdown timeout.
func TestExitsOnSIGTERMWhenBrokerIsGone(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "gemba-sim")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	hook := &withholdAcks{}
	broker := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	if err := broker.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	if err := broker.AddHook(hook, nil); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	if err := broker.AddListener(listeners.NewTCP(listeners.Config{ID: "t", Address: addr})); err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- broker.Serve() }()
	brokerClosed := false
	defer func() {
		if !brokerClosed {
			_ = broker.Close()
		}
	}()

	cmd := exec.Command(bin, "-broker", "tcp://"+addr, "-opcua", fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)),
		"-tick", "5ms", "-shutdown-timeout", "2s")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr testutil.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	started := make(chan struct{})
	var out testutil.Buffer
	go func() {
		sc := bufio.NewScanner(stdout)
		once := sync.Once{}
		for sc.Scan() {
			_, _ = out.Write([]byte(sc.Text() + "\n"))
			if strings.HasPrefix(strings.TrimSpace(sc.Text()), "MQTT") {
				once.Do(func() { close(started) })
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		exited <- cmd.Wait()
	}()
	reaped := false
	defer func() {
		if !reaped {
			_ = cmd.Process.Kill()
			<-exited
		}
	}()
	select {
	case <-started:
	case err := <-exited:
		reaped = true
		t.Fatalf("gemba-sim exited at start: %v\n%s%s", err, out.String(), stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("gemba-sim did not start\n%s%s", out.String(), stderr.String())
	}

	// The broker stops acknowledging, then goes away with publishes outstanding.
	hook.on.Store(true)
	testutil.WaitFor(t, 10*time.Second, "publishes left unacknowledged", func() bool { return hook.withheld.Load() >= 5 })
	brokerClosed = true
	if err := broker.Close(); err != nil {
		t.Fatal(err)
	}
	<-served

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// 2 s shutdown timeout; the deadline is generous for a loaded machine but well below the 30 s
	// acknowledgement timeout the sim used to wait out.
	select {
	case err := <-exited:
		reaped = true
		if err != nil {
			t.Fatalf("gemba-sim exited with %v after SIGTERM\n%s%s", err, out.String(), stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("gemba-sim still running 20 s after SIGTERM (shutdown timeout 2 s)\n%s%s", out.String(), stderr.String())
	}
	if !strings.Contains(out.String(), "stopped after") {
		t.Fatalf("no stop summary:\n%s", out.String())
	}
}
