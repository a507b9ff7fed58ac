package mqtt

import (
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gemba-io/gemba/collectors"
	"github.com/gemba-io/gemba/internal/testutil"
)

// TestRedeliveryWhileInFlightStoredOnce: the connection drops while a QoS 1 message is being made
// durable. paho reconnects by itself and the broker resends the message (DUP) before the first
// copy's Emit returned: it must be acknowledged, not stored a second time.
func TestRedeliveryWhileInFlightStoredOnce(t *testing.T) {
	b := startMochi(t)
	cfg := testConfig(b.url(), Subscription{Topic: "d/#", Format: FormatValue})
	cfg.ClientID = "inflight-redeliver"
	em := &blockingEmitter{entered: make(chan struct{}, 1), release: make(chan struct{})}
	reg := prometheus.NewRegistry()
	c := runCollector(t, cfg, collectors.Deps{Agent: "a", Metrics: reg}, em)
	testutil.WaitFor(t, 10*time.Second, "connected", connectedState(c))
	pub := newPublisher(t, b.url(), "pub")
	publish(t, pub, "d/x", 1, []byte("5"))
	<-em.entered // the first copy is in Emit

	cl, ok := b.srv.Clients.Get(cfg.ClientID)
	if !ok {
		t.Fatal("collector not at the broker")
	}
	cl.Stop(errors.New("test: connection dropped"))
	testutil.WaitFor(t, 10*time.Second, "the redelivery received", func() bool {
		return counterValue(t, reg, "gemba_mqtt_messages_total", nil)+counterValue(t, reg, "gemba_mqtt_redelivered_duplicates_total", nil) == 2
	})
	close(em.release)
	testutil.WaitFor(t, 10*time.Second, "acknowledged", func() bool {
		cl, ok := b.srv.Clients.Get(cfg.ClientID)
		return ok && !cl.Closed() && cl.State.Inflight.Len() == 0
	})
	if n := em.count(); n != 1 {
		t.Fatalf("%d samples stored, want 1: the redelivery of a message in flight was stored again", n)
	}
}
