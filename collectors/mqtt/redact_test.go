package mqtt

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/hooks/auth"

	"github.com/gemba-io/gemba/collectors"
	"github.com/gemba-io/gemba/internal/testutil"
)

// TestBrokerURLCredentialsNotLeaked: paho takes the credentials of a broker URL
// (tcp://user:password@host); the password must not reach the log, the collector's state (the
// agent's health) or the error the agent reports to the hub.
func TestBrokerURLCredentialsNotLeaked(t *testing.T) {
	b := startMochi(t)
	b.stop()
	b.startWith(new(auth.Hook), &auth.Options{Ledger: &auth.Ledger{Auth: auth.AuthRules{{Username: "u", Password: "right", Allow: true}}}})
	url := strings.Replace(b.url(), "tcp://", "tcp://u:hunter2@", 1)
	down := "tcp://u:hunter2@127.0.0.1:1" // nothing listens: tried first, fails, logged
	cfg := testConfig("", Subscription{Topic: "x", Format: FormatValue})
	cfg.Brokers = []string{down, url}
	var logs testutil.Buffer
	c, err := New("test", cfg, collectors.Deps{Agent: "a", Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(context.Background(), &memEmitter{}) }()
	var runErr error
	testutil.WaitFor(t, 20*time.Second, "the permanent error", func() bool {
		_, info := c.State()
		if strings.Contains(info["broker"], "hunter2") {
			t.Errorf("state broker = %q: leaks the password", info["broker"])
		}
		select {
		case runErr = <-done:
			return true
		default:
			return false
		}
	})
	if !collectors.IsPermanent(runErr) {
		t.Fatalf("Run = %v, want a permanent error", runErr)
	}
	_, info := c.State()
	for k, v := range info {
		if strings.Contains(v, "hunter2") {
			t.Errorf("state %s = %q: leaks the password", k, v)
		}
	}
	if strings.Contains(runErr.Error(), "hunter2") {
		t.Errorf("error leaks the password: %v", runErr)
	}
	if strings.Contains(logs.String(), "hunter2") {
		t.Errorf("log leaks the password:\n%s", logs.String())
	}
}

// TestConfigErrorsHideBrokerCredentials: validate prints the broker URL without its password.
func TestConfigErrorsHideBrokerCredentials(t *testing.T) {
	for _, b := range []string{"'tcp://u:hunter2%zz@host:1'", "'tcp://u:hunter2@'"} {
		_, err := decodeConfig(t, "broker: "+b+"\nsubscriptions: [{topic: a, format: json}]")
		if err == nil || !strings.Contains(err.Error(), "broker: ") || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("broker %s: error %v: want one naming broker, without the password", b, err)
		}
	}
}
