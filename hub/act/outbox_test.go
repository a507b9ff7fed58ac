package act

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

// A second Enqueue of a decision is a no-op; the loop publishes it once, on its channel's subject,
// with Nats-Msg-Id = decision id, and marks it done.
func TestEnqueueOnceAndPublish(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := connect(t, n)
	o := open(t, js, testConfig(""))
	ctx := context.Background()
	a := hold("rs3:hold:sku-1:store:2026-12-04T20", "store")
	if fresh, err := o.Enqueue(ctx, a); err != nil || !fresh {
		t.Fatalf("first enqueue: fresh %v err %v", fresh, err)
	}
	b := a
	b.Reason = "something else"
	if fresh, err := o.Enqueue(ctx, b); err != nil || fresh {
		t.Fatalf("second enqueue: fresh %v err %v (want a no-op)", fresh, err)
	}
	run(t, o)
	waitState(t, o, a.DecisionID, Done, EventStart)
	msgs := streamMsgs(t, js, "ACTIONS")
	if len(msgs) != 1 || len(msgs[a.DecisionID]) != 1 {
		t.Fatalf("stream holds %v, want one message for %s", msgs, a.DecisionID)
	}
	m := msgs[a.DecisionID][0]
	if m.Event != EventStart || m.Reason != a.Reason || m.Kind != Hold {
		t.Errorf("message %+v: want the first enqueued hold", m)
	}
	// The subject is the hold subject of the channel.
	s, _ := js.Stream(ctx, "ACTIONS")
	raw, err := s.GetLastMsgForSubject(ctx, "gemba.actions.holds.store")
	if err != nil {
		t.Fatalf("no message on gemba.actions.holds.store: %v", err)
	}
	if raw.Header.Get(jetstream.MsgIDHeader) != a.DecisionID {
		t.Errorf("Nats-Msg-Id %q", raw.Header.Get(jetstream.MsgIDHeader))
	}
	// Enqueue after delivery is still a no-op: the record outlives the stream's duplicate window.
	if fresh, err := o.Enqueue(ctx, a); err != nil || fresh {
		t.Fatalf("enqueue after delivery: fresh %v err %v", fresh, err)
	}
}

// Bad actions and unknown channels are refused with the decision id in the error.
func TestEnqueueRefuses(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := connect(t, n)
	o := open(t, js, testConfig(""))
	ctx := context.Background()
	cases := []struct {
		name string
		a    Action
		want string
	}{
		{"unknown channel", hold("d1", "radio"), "channel \"radio\""},
		{"no id", hold("", "store"), "decision_id is empty"},
		{"reserved suffix", hold("d2:end", "store"), "reserved"},
		{"kind", func() Action { a := hold("d3", "store"); a.Kind = "discount"; return a }(), "kind \"discount\""},
		{"promotion without end", promo("d4", "store", time.Time{}), "needs an end"},
		{"end before start", promo("d5", "store", time.Now().Add(-time.Hour)), "is not after start"},
		{"discount", func() Action { a := promo("d6", "store", time.Now().Add(time.Hour)); a.Discount = 120; return a }(), "discount 120"},
	}
	for _, tc := range cases {
		_, err := o.Enqueue(ctx, tc.a)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), fmt.Sprintf("%q", tc.a.DecisionID)) {
			t.Errorf("%s: err %v, want it to name %q and contain %q", tc.name, err, tc.a.DecisionID, tc.want)
		}
	}
	if _, err := o.Enqueue(ctx, hold("d7", "radio")); !errors.Is(err, ErrUnknownChannel) {
		t.Errorf("unknown channel: %v", err)
	}
}

// The actions stream lives beside the agents' GEMBA stream: its subjects do not overlap
// <prefix>.*.*.samples|features|status.
func TestStreamBesideAgents(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := connect(t, n)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "GEMBA",
		Subjects: []string{"gemba.*.*.samples", "gemba.*.*.features", "gemba.*.*.status"}}); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig("")
	cfg.Channels["web-shop"] = Channel{}
	open(t, js, cfg)
	// A channel named like an agents' subject would overlap: refused by the config, not by the server.
	cfg.Channels["samples"] = Channel{}
	_, err := Open(ctx, js, cfg, nil)
	if err == nil || !strings.Contains(err.Error(), "channels.samples") || !strings.Contains(err.Error(), "overlap") {
		t.Fatalf("channel samples: %v", err)
	}
}

// Two loops (two replicas, own connections) on one outbox: every action is published once and
// every webhook received once.
func TestTwoLoopsDeliverEachOnce(t *testing.T) {
	n := natstest.JetStream(t)
	rcv := newReceiver(t, nil)
	var loops []*Outbox
	for i := range 2 {
		_, js := connect(t, n)
		cfg := testConfig(rcv.srv.URL)
		cfg.Owner = fmt.Sprintf("replica-%d", i)
		loops = append(loops, open(t, js, cfg))
	}
	for _, o := range loops {
		run(t, o)
	}
	ctx := context.Background()
	const N = 60
	var ids []string
	for i := range N {
		var a Action
		id := fmt.Sprintf("rs3:rule:sku-%d:web:2026-12-04T20", i)
		if i%2 == 0 {
			a = hold(id, "web")
		} else {
			a = promo(id, "web", time.Now().Add(time.Hour))
		}
		ids = append(ids, id)
		// Both replicas enqueue every decision, as two deciders racing for it would.
		for _, o := range loops {
			if _, err := o.Enqueue(ctx, a); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i, id := range ids {
		if i%2 == 0 {
			waitState(t, loops[0], id, Done, EventStart)
		} else {
			waitState(t, loops[0], id, Pending, EventEnd) // started, waiting for its end in an hour
		}
	}
	_, js := connect(t, n)
	msgs := streamMsgs(t, js, "ACTIONS")
	if len(msgs) != N {
		t.Errorf("stream holds %d distinct ids, want %d", len(msgs), N)
	}
	for _, id := range ids {
		if len(msgs[id]) != 1 {
			t.Errorf("%s: %d messages on the stream", id, len(msgs[id]))
		}
		if c := rcv.count(id); c != 1 {
			t.Errorf("%s: %d webhook receipts", id, c)
		}
	}
	if c := rcv.totalCalls(); c != N {
		t.Errorf("%d webhook calls, want %d (no call repeated)", c, N)
	}
	rcv.checkSigned()
}

// A loop that dies after its publish and before marking it: the other loop takes the record over
// once the lease has passed; the retry's publish is dropped by Nats-Msg-Id, the webhook goes once.
func TestKilledLoopTakenOver(t *testing.T) {
	n := natstest.JetStream(t)
	rcv := newReceiver(t, nil)
	ncA, jsA := connect(t, n)
	cfg := testConfig(rcv.srv.URL)
	cfg.Lease, cfg.Owner = time.Second, "A"
	a := open(t, jsA, cfg)
	killed := make(chan struct{})
	a.afterPublish = func(string) error {
		ncA.Close() // the replica is gone: no mark, no webhook
		close(killed)
		return errors.New("killed")
	}
	ctx := context.Background()
	act := hold("rs3:hold:sku-9:web:2026-12-04T20", "web")
	if _, err := a.Enqueue(ctx, act); err != nil {
		t.Fatal(err)
	}
	stopA := run(t, a)
	<-killed
	_ = stopA() // nil or "watch closed": whichever A saw first

	_, jsB := connect(t, n)
	cfg.Owner = "B"
	b := open(t, jsB, cfg)
	rec, err := b.Get(ctx, act.DecisionID)
	if err != nil || rec.Owner != "A" || rec.Published {
		t.Fatalf("after the kill: %+v, %v (want owned by A, publish not marked)", rec, err)
	}
	if c := streamCount(t, jsB, "ACTIONS"); c != 1 {
		t.Fatalf("A's publish: stream holds %d", c)
	}
	run(t, b)
	rec = waitState(t, b, act.DecisionID, Done, EventStart)
	if rec.Owner != "" {
		t.Errorf("lease not released: %+v", rec)
	}
	if c := streamCount(t, jsB, "ACTIONS"); c != 1 {
		t.Errorf("stream holds %d messages after the takeover, want 1 (Nats-Msg-Id)", c)
	}
	if c := rcv.count(act.DecisionID); c != 1 {
		t.Errorf("%d webhook receipts", c)
	}
	rcv.checkSigned()
}

// A promotion is ended with its own message (id + ":end") once its end has passed, on NATS and
// on the webhook.
func TestPromotionEnded(t *testing.T) {
	n := natstest.JetStream(t)
	rcv := newReceiver(t, nil)
	_, js := connect(t, n)
	o := open(t, js, testConfig(rcv.srv.URL))
	run(t, o)
	end := time.Now().Add(300 * time.Millisecond)
	a := promo("rs3:overstock:sku-2:web:2026-12-04T20", "web", end)
	if _, err := o.Enqueue(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	waitState(t, o, a.DecisionID, Done, EventEnd)
	msgs := streamMsgs(t, js, "ACTIONS")
	st, en := msgs[a.DecisionID], msgs[a.DecisionID+":end"]
	if len(st) != 1 || len(en) != 1 || len(msgs) != 2 {
		t.Fatalf("stream: %v", msgs)
	}
	if st[0].Event != EventStart || en[0].Event != EventEnd || !en[0].End.Equal(end) || en[0].DecisionID != a.DecisionID {
		t.Errorf("start %+v end %+v", st[0], en[0])
	}
	if rcv.count(a.DecisionID) != 1 || rcv.count(a.DecisionID+":end") != 1 {
		t.Errorf("webhook receipts: %v", rcv.got)
	}
	rcv.mu.Lock()
	if m := rcv.last[a.DecisionID+":end"]; m.Event != EventEnd {
		t.Errorf("webhook end body %+v", m)
	}
	rcv.mu.Unlock()
	rcv.checkSigned()
	testutil.WaitFor(t, time.Second, "nothing pending", func() bool { ids, _ := o.DeadLetters(context.Background()); return len(ids) == 0 })
}

// The end of a promotion becomes due when its start has been delivered, not before: a start whose
// NATS message went out before the promotion's end and whose webhook answered only after it (retried
// for longer than the promotion lasted) leaves its end the full max_age of retries, rather than one
// attempt and a dead letter because the end time itself lies more than max_age ago. (A start none of
// which went out by its end is not started at all: TestStartAfterItsEndNotDelivered.)
func TestPromotionEndDeliveredLateKeepsItsRetries(t *testing.T) {
	n := natstest.JetStream(t)
	a := promo("rs3:overstock:sku-3:web:2026-12-05T10", "web", time.Now().Add(time.Hour))
	var late atomic.Int64 // how far the loop's clock is ahead
	rcv := newReceiver(t, func(_ int, id string) (int, http.Header, time.Duration) {
		if id == a.DecisionID+":end" || late.Load() == 0 {
			return http.StatusServiceUnavailable, nil, 0
		}
		return http.StatusOK, nil, 0
	})
	_, js := connect(t, n)
	cfg := testConfig(rcv.srv.URL) // max_age 1h
	cfg.Now = func() time.Time { return time.Now().Add(time.Duration(late.Load())) }
	o := open(t, js, cfg)
	run(t, o)
	if _, err := o.Enqueue(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the NATS start out, its webhook failing", func() bool {
		rec, _ := o.Get(context.Background(), a.DecisionID)
		return rec.Phase == EventStart && rec.Published && rec.Attempts >= 1
	})
	late.Store(int64(2 * time.Hour)) // its webhook answers once the promotion's end is an hour past
	var rec Record
	testutil.WaitFor(t, 10*time.Second, "a failed attempt of the end", func() bool {
		rec, _ = o.Get(context.Background(), a.DecisionID)
		return rec.Phase == EventEnd && rec.Attempts >= 1 && rec.Owner == ""
	})
	if rec.State != Pending {
		t.Errorf("end after one failed attempt: %+v; want pending, retried (its phase became due just now)", rec)
	}
	if rcv.count(a.DecisionID) != 1 {
		t.Errorf("webhook receipts %v, want the start once", rcv.got)
	}
}

// Opening the outbox with fewer channels (a replica not yet given the new config, or the CLI run
// with an older file) must not take the other channels' subjects off the stream: their actions
// could no longer be published, and would be retried for ever without a dead letter.
func TestOpenKeepsOtherChannelsSubjects(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := connect(t, n)
	withWeb := testConfig("")
	withWeb.Channels["web"] = Channel{}
	o := open(t, js, withWeb)
	open(t, js, testConfig("")) // "store" only
	run(t, o)
	a := hold("rs3:hold:sku-1:web:2026-12-05T14", "web")
	if _, err := o.Enqueue(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	var rec Record
	testutil.WaitFor(t, 10*time.Second, "an attempt", func() bool {
		rec, _ = o.Get(context.Background(), a.DecisionID)
		return rec.State == Done || rec.LastError != ""
	})
	if rec.State != Done {
		t.Fatalf("record %+v: want delivered on gemba.actions.holds.web", rec)
	}
}
