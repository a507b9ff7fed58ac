package act

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gemba-io/gemba/config"
	"github.com/gemba-io/gemba/internal/natstest"
)

// A config as written by hand: the secret from the environment and from a file, defaults filled,
// the secret kept out of the effective config.
func TestConfigDecodes(t *testing.T) {
	file := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(file, []byte(testSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	doc := `
prefix: gemba
lease: 20s
channels:
  web:
    webhook:
      url: https://shop.example/hooks/gemba
      secret: ${SHOP_SECRET}
  marketplace:
    webhook:
      url: https://market.example/in
      secret: {file: ` + file + `}
      timeout: 5s
  store: {}
retry:
  max_attempts: 5
`
	env := map[string]string{"SHOP_SECRET": testSecret}
	var cfg Config
	err := config.NewDecoder(config.WithEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok })).Unmarshal([]byte(doc), &cfg)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Channels["web"].Webhook.Secret.Value() != testSecret || cfg.Channels["marketplace"].Webhook.Secret.Value() != testSecret {
		t.Error("secrets not read")
	}
	cfg.Defaults()
	if cfg.Channels["web"].Webhook.Timeout != 10*time.Second || cfg.Retry.MaxAttempts != 5 || cfg.Stream != "ACTIONS" || cfg.DuplicateWindow <= cfg.Lease {
		t.Errorf("defaults: %+v", cfg)
	}
	out, _ := json.Marshal(cfg)
	if strings.Contains(string(out), "MfKQ9r8") {
		t.Errorf("effective config shows the secret: %s", out)
	}
}

// Every problem is reported with its field path and line.
func TestConfigProblems(t *testing.T) {
	doc := `
lease: 10s
duplicate_window: 5s
channels:
  samples: {}
  "a.b": {}
  web:
    webhook:
      url: ftp://x
      secret: not-whsec
      timeout: 8s
  web2:
    webhook:
      url: https://x.example
      secret: whsec_%%%
retry:
  initial: 2m
  max: 1m
`
	var cfg Config
	err := config.NewDecoder(config.WithoutEnv()).Unmarshal([]byte(doc), &cfg)
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	for _, want := range []string{
		"duplicate_window", "must exceed lease",
		"channels.samples", "overlap",
		"is not one subject token",
		"channels.web.webhook.url", "not an http(s) URL",
		"channels.web.webhook.secret", "whsec_",
		"channels.web2.webhook.secret", "not base64",
		"channels.web.webhook.timeout", "half the lease",
		"retry", "initial",
		"line 3: duplicate_window", "line 17: retry",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("problems lack %q:\n%s", want, msg)
		}
	}
}

// Open refuses a bad config, naming it, before touching the server.
func TestOpenRefusesBadConfig(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := connect(t, n)
	cfg := testConfig("http://127.0.0.1:1")
	cfg.Channels["web"].Webhook.Secret = config.NewSecret("plain")
	_, err := Open(context.Background(), js, cfg, nil)
	if err == nil || !strings.Contains(err.Error(), "act config: channels.web.webhook.secret") {
		t.Fatalf("err %v", err)
	}
	cfg = testConfig("")
	cfg.Channels = nil
	if _, err := Open(context.Background(), js, cfg, nil); err == nil || !strings.Contains(err.Error(), "channels") {
		t.Fatalf("no channels: %v", err)
	}
}

// A redirect is a failed call, not followed (it would turn the POST into a GET elsewhere).
func TestWebhookRedirectNotFollowed(t *testing.T) {
	n := natstest.JetStream(t)
	other := newReceiver(t, nil)
	rcv := newReceiver(t, func(call int, _ string) (int, http.Header, time.Duration) {
		if call == 1 {
			return http.StatusFound, http.Header{"Location": {other.srv.URL}}, 0
		}
		return http.StatusOK, nil, 0
	})
	_, js := connect(t, n)
	o := open(t, js, testConfig(rcv.srv.URL))
	run(t, o)
	a := hold("rs3:hold:sku-1:web:h24", "web")
	if _, err := o.Enqueue(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	rec := waitState(t, o, a.DecisionID, Done, EventStart)
	if other.totalCalls() != 0 || rec.Attempts != 1 || rcv.count(a.DecisionID) != 1 {
		t.Errorf("redirect target got %d calls; record %+v", other.totalCalls(), rec)
	}
}

// An action whose channel left the config is dead-lettered with the reason, not retried forever.
func TestRemovedChannelDeadLettered(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := connect(t, n)
	cfg := testConfig("")
	cfg.Channels["radio"] = Channel{}
	o := open(t, js, cfg)
	a := hold("rs3:hold:sku-1:radio:h25", "radio")
	if _, err := o.Enqueue(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	delete(cfg.Channels, "radio")
	o2 := open(t, js, cfg)
	run(t, o2)
	rec := waitState(t, o2, a.DecisionID, Dead, EventStart)
	if !strings.Contains(rec.LastError, `channel "radio" is no longer configured`) {
		t.Errorf("record %+v", rec)
	}
}
