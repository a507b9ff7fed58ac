package uplink

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/config"
	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
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

// featureChunk encodes one feature record.
func featureChunk(v float64) []byte {
	now := time.Now()
	return signal.AppendChunk(nil, &signal.Chunk{
		Stream: signal.StreamFeatures, ConfigVersion: "cv1", Count: 1, Oldest: now, Newest: now,
		Records: signal.AppendFeaturesJSON(nil, []signal.Feature{{Signal: "x", Name: "mean", WindowStart: now, WindowEnd: now, Value: v, Count: 1}}),
	})
}

// TestOversizedMessageStaysNotReady: a samples chunk over the server's max_payload can never be
// published. The samples lane is stuck on it; the features lane still publishes. A feature's
// PubAck must not make /readyz say ready while samples are stuck, and the reason must name the
// limit and the setting to change.
func TestOversizedMessageStaysNotReady(t *testing.T) {
	o := natstest.Options(t)
	o.MaxPayload = 8 << 10
	s := natstest.Start(t, o)
	src := newMemSource()
	src.Append(signal.StreamSamples, sampleChunk(0, 200, time.Now())) // ~20 KiB
	cfg := testConfig(s.URL())
	cfg.NATS.ReconnectMaxWait = time.Hour // the stuck lane's retries get rare
	r := startUplink(t, cfg, src, Options{})
	testutil.WaitFor(t, 20*time.Second, "samples refused several times", func() bool {
		return r.u.Health().Errors >= 5
	})
	src.Append(signal.StreamFeatures, featureChunk(1))
	testutil.WaitFor(t, 10*time.Second, "feature acked", func() bool { return src.Acked(signal.StreamFeatures) == 1 })
	ok, why := r.u.Health().Ready()
	if ok || !strings.Contains(why, "max_payload") || !strings.Contains(why, "max_chunk") {
		t.Fatalf("ready %v (%q) while a samples message over max_payload is stuck", ok, why)
	}
	if src.Acked(signal.StreamSamples) != 0 {
		t.Fatal("the oversized record was acked")
	}
}

// TestStreamReplacedByAnother: while the uplink runs, the hub deletes its stream and creates
// another one capturing the agent's subjects. JetStream refuses the publishes (they expect the
// configured stream); /readyz must name the stream that took the subjects, not advise freeing
// space, and nothing may be acked.
func TestStreamReplacedByAnother(t *testing.T) {
	for _, create := range []bool{true, false} {
		s := natstest.JetStream(t)
		src := newMemSource()
		src.Append(signal.StreamSamples, sampleChunk(0, 10, time.Now()))
		cfg := testConfig(s.URL())
		_, js := natstest.Connect(t, s.URL())
		ctx := context.Background()
		if !create {
			if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "GEMBA", Subjects: []string{"gemba.>"}}); err != nil {
				t.Fatal(err)
			}
			cfg.NATS.CreateStream = false
		}
		r := startUplink(t, cfg, src, Options{})
		testutil.WaitFor(t, 10*time.Second, "first record acked", func() bool { return src.Acked(signal.StreamSamples) == 1 })
		if err := js.DeleteStream(ctx, "GEMBA"); err != nil {
			t.Fatal(err)
		}
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "OTHER", Subjects: []string{"gemba.>"}}); err != nil {
			t.Fatal(err)
		}
		src.Append(signal.StreamSamples, sampleChunk(10, 10, time.Now()))
		var why string
		testutil.WaitFor(t, 15*time.Second, "readiness naming the other stream", func() bool {
			_, why = r.u.Health().Ready()
			return strings.Contains(why, "OTHER")
		})
		if strings.Contains(why, "free space") {
			t.Errorf("create_stream %v: reason %q", create, why)
		}
		if src.Acked(signal.StreamSamples) != 1 {
			t.Fatalf("create_stream %v: a record was acked into the wrong stream", create)
		}
		r.stop(t)
	}
}
