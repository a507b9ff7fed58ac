package uplink

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/gemba-io/gemba/config"
	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/signal"
)

// notReadyWith runs an uplink over a source holding one chunk until its readiness reason
// contains want, and fails naming the reason it did show.
func notReadyWith(t *testing.T, cfg Config, want string, notWant ...string) {
	t.Helper()
	src := newMemSource()
	src.Append(signal.StreamSamples, sampleChunk(0, 10, time.Now()))
	r := startUplink(t, cfg, src, Options{})
	var why string
	deadline := time.Now().Add(15 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for _, why = r.u.Health().Ready(); !strings.Contains(why, want); _, why = r.u.Health().Ready() {
		if time.Now().After(deadline) {
			t.Fatalf("readiness reason %q, want it to say %q", why, want)
		}
		<-tick.C
	}
	for _, w := range notWant {
		if strings.Contains(why, w) {
			t.Fatalf("readiness reason %q still says %q", why, w)
		}
	}
	if src.Acked(signal.StreamSamples) != 0 {
		t.Fatal("a record was acked although nothing could be stored")
	}
}

// TestPublishPermissionDenied: a user allowed to use the JetStream API but not to publish on the
// data subjects. The server says "Permissions Violation"; /readyz must say that, not "no PubAck
// within publish_timeout".
func TestPublishPermissionDenied(t *testing.T) {
	o := natstest.Options(t)
	o.Users = []*server.User{{Username: "agent", Password: "pw", Permissions: &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: []string{"$JS.API.>", "_INBOX.>"}},
		Subscribe: &server.SubjectPermission{Allow: []string{">"}},
	}}}
	s := natstest.Start(t, o)
	cfg := testConfig(s.URL())
	cfg.NATS.User, cfg.NATS.Password = "agent", config.NewSecret("pw")
	notReadyWith(t, cfg, "not permitted to publish", "PubAck")
}

// TestJetStreamDisabled: a server without JetStream answers nothing on $JS.API: /readyz must
// say JetStream is not enabled, not "no responders".
func TestJetStreamDisabled(t *testing.T) {
	for _, create := range []bool{true, false} {
		o := natstest.Options(t)
		o.JetStream = false
		s := natstest.Start(t, o)
		cfg := testConfig(s.URL())
		cfg.NATS.CreateStream = create
		notReadyWith(t, cfg, "JetStream is not enabled", "no responders")
	}
}
