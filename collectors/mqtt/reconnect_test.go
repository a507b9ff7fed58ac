package mqtt

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gemba-io/gemba/collectors"
	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
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

// TestSubscribeRetriedWhenPacketIDInUse: a broker may answer a SUBSCRIBE whose packet id equals
// the id of one of its own unacknowledged PUBLISHes to us with 0x91 "packet identifier in use"
// (mochi does, even to an MQTT 3.1.1 client; the ids of the two directions are independent). Our
// first SUBSCRIBE after a restart has id 1, as has the broker's oldest message left unacknowledged
// by the previous process. The collector took 0x91 for a granted QoS: a filter added to the config
// was never subscribed while the state said running, and the retained messages were not sent.
func TestSubscribeRetriedWhenPacketIDInUse(t *testing.T) {
	b := startMochi(t)
	const id = "idclash"
	// The previous process: subscribed to plant/+/temp, got message 1 and died before its PUBACK.
	got := make(chan struct{}, 1)
	o := paho.NewClientOptions().AddBroker(b.url()).SetClientID(id).SetCleanSession(false).SetAutoAckDisabled(true)
	o.SetDefaultPublishHandler(func(paho.Client, paho.Message) { got <- struct{}{} })
	prev := paho.NewClient(o)
	if tok := prev.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	if tok := prev.Subscribe("plant/+/temp", 1, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	pub := newPublisher(t, b.url(), "pub")
	publish(t, pub, "plant/a/temp", 1, []byte("1"))
	<-got
	prev.Disconnect(0)

	// The agent restarts with a filter added. Its buffer holds the redelivered message 1 until the
	// subscriptions are settled, so the PUBACK that frees id 1 at the broker comes after them.
	cfg := testConfig(b.url(), Subscription{Topic: "plant/+/temp", Format: FormatValue}, Subscription{Topic: "line/+/count", Format: FormatValue})
	cfg.ClientID = id
	em := &blockingEmitter{entered: make(chan struct{}, 1), release: make(chan struct{})}
	c := runCollector(t, cfg, collectors.Deps{Agent: "a", DataDir: t.TempDir()}, em)
	testutil.WaitFor(t, 10*time.Second, "subscriptions settled", func() bool {
		st, _ := c.State()
		return st == "running" || st == "degraded"
	})
	close(em.release)
	if st, info := c.State(); st != "running" {
		t.Errorf("state %s %v, want running", st, info)
	}
	publish(t, pub, "line/a/count", 1, []byte("7"))
	testutil.WaitForState(t, 10*time.Second, "the message on the added filter", func() (bool, string) {
		ss := em.all()
		return slices.ContainsFunc(ss, func(s signal.Sample) bool { return s.Value.Text() == "7" }), fmt.Sprintf("%d samples, broker subscriptions %v", len(ss), b.subscriptions(id))
	})
}

// idInUseHook makes mochi answer every SUBSCRIBE of client id with "packet identifier in use", as
// if a PUBLISH of that id to the client were never acknowledged.
type idInUseHook struct {
	auth.AllowHook
	id string
}

func (h *idInUseHook) ID() string { return "id-in-use" }

func (h *idInUseHook) Provides(b byte) bool { return b == mochi.OnSubscribe || h.AllowHook.Provides(b) }

func (h *idInUseHook) OnSubscribe(cl *mochi.Client, pk packets.Packet) packets.Packet {
	if cl.ID == h.id {
		cl.State.Inflight.Set(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: pk.PacketID})
	}
	return pk
}

// TestSubscribePacketIDInUseGivesUp: a broker that keeps answering "packet identifier in use" is
// asked again up to connect_timeout; then the filter counts as refused (state degraded, and asked
// again on the next connection), not as subscribed.
func TestSubscribePacketIDInUseGivesUp(t *testing.T) {
	b := startMochi(t)
	b.stop()
	b.startWith(&idInUseHook{id: "busy"}, nil)
	cfg := testConfig(b.url(), Subscription{Topic: "a/#", Format: FormatValue})
	cfg.ClientID = "busy"
	cfg.ConnectTimeout = 300 * time.Millisecond
	reg := prometheus.NewRegistry()
	c := runCollector(t, cfg, collectors.Deps{Agent: "a", Metrics: reg}, &memEmitter{})
	testutil.WaitFor(t, 10*time.Second, "subscriptions settled", func() bool {
		st, _ := c.State()
		return st == "running" || st == "degraded"
	})
	if st, info := c.State(); st != "degraded" || info["failed_subscriptions"] != "a/#" {
		t.Errorf("state %s %v, want degraded with failed_subscriptions a/#", st, info)
	}
	if n := counterValue(t, reg, "gemba_mqtt_subscribe_failures_total", nil); n != 1 {
		t.Errorf("subscribe failures = %v, want 1", n)
	}
}

// subHolder allows everyone and holds every SUBSCRIBE until release; once refuse is set it holds
// new connections too.
type subHolder struct {
	mochi.HookBase
	entered chan struct{}
	release chan struct{}
	refuse  atomic.Bool
}

func (h *subHolder) ID() string { return "sub-holder" }

func (h *subHolder) Provides(b byte) bool {
	return b == mochi.OnConnectAuthenticate || b == mochi.OnACLCheck || b == mochi.OnSubscribe
}

func (h *subHolder) OnConnectAuthenticate(*mochi.Client, packets.Packet) bool {
	if h.refuse.Load() {
		<-h.release
	}
	return true
}

func (h *subHolder) OnACLCheck(*mochi.Client, string, bool) bool { return true }

func (h *subHolder) OnSubscribe(_ *mochi.Client, pk packets.Packet) packets.Packet {
	select {
	case h.entered <- struct{}{}:
	default:
	}
	<-h.release
	return pk
}

// TestConnectionLostWhileSubscribingReportsReconnecting: the connection drops while the collector
// waits for its SUBACK and the broker does not let it back in. paho fails the subscribe; the
// collector took that for a finished subscribe and reported running (after the connection-lost
// handler had said reconnecting): /readyz ready while nothing is received.
func TestConnectionLostWhileSubscribingReportsReconnecting(t *testing.T) {
	b := startMochi(t)
	b.stop()
	h := &subHolder{entered: make(chan struct{}, 1), release: make(chan struct{})}
	b.startWith(h, nil)
	cfg := testConfig(b.url(), Subscription{Topic: "a/#", Format: FormatValue})
	cfg.ClientID = "lost-subscribing"
	reg := prometheus.NewRegistry()
	c := runCollector(t, cfg, collectors.Deps{Agent: "a", DataDir: t.TempDir(), Metrics: reg}, &memEmitter{})
	t.Cleanup(func() { close(h.release) }) // before the collector and the broker stop (cleanups run last first)
	<-h.entered
	h.refuse.Store(true)
	// OnConnect saves the subscription state before subscribing and again after, right before it
	// reports the state.
	path := filepath.Join(c.stateDir, stateFile)
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	cl, ok := b.srv.Clients.Get(cfg.ClientID)
	if !ok {
		t.Fatal("collector not at the broker")
	}
	cl.Stop(errors.New("test: connection dropped"))
	testutil.WaitFor(t, 10*time.Second, "the loss seen", func() bool { return counterValue(t, reg, "gemba_mqtt_connection_lost_total", nil) == 1 })
	testutil.WaitFor(t, 10*time.Second, "the subscribe given up", func() bool {
		after, err := os.Stat(path)
		return err == nil && !os.SameFile(before, after)
	})
	testutil.WaitForState(t, 10*time.Second, "state reconnecting", func() (bool, string) {
		st, info := c.State()
		return st == "reconnecting", fmt.Sprintf("%s %v", st, info)
	})
}
