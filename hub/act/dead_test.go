package act

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub/decide/guard"
	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

// A promotion whose start webhook is dead-lettered (410) after its NATS start went out still ends
// on NATS at its end: subscribers of the stream never see a promotion that does not end. A replay
// then gives the webhook its start and end, and NATS nothing more.
func TestGoneStartStillEndsOnNATS(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := connect(t, n)
	ctx := context.Background()
	var gone atomic.Bool
	gone.Store(true)
	recv := newReceiver(t, func(int, string) (int, http.Header, time.Duration) {
		if gone.Load() {
			return http.StatusGone, nil, 0
		}
		return http.StatusOK, nil, 0
	})
	o := open(t, js, testConfig(recv.srv.URL))
	run(t, o)
	a := promo("dec-gone-end", "web", time.Now().Add(2*time.Second))
	if _, err := o.Enqueue(ctx, a); err != nil {
		t.Fatal(err)
	}
	waitState(t, o, a.DecisionID, Dead, EventStart)
	testutil.WaitFor(t, 15*time.Second, "the NATS end of the dead-lettered promotion", func() bool {
		return len(streamMsgs(t, js, "ACTIONS")[a.DecisionID+":end"]) == 1
	})
	rec, err := o.Get(ctx, a.DecisionID)
	if err != nil || rec.State != Dead || rec.Phase != EventStart || !strings.Contains(rec.LastError, "410") {
		t.Fatalf("after the NATS end: %v %+v, want still dead in its start (410)", err, rec)
	}
	gone.Store(false)
	if err := o.Replay(ctx, a.DecisionID); err != nil {
		t.Fatal(err)
	}
	waitState(t, o, a.DecisionID, Done, EventEnd)
	msgs := streamMsgs(t, js, "ACTIONS")
	if len(msgs) != 2 || len(msgs[a.DecisionID]) != 1 || len(msgs[a.DecisionID+":end"]) != 1 {
		t.Errorf("stream: %v, want the start and the end once each", msgs)
	}
	if recv.count(a.DecisionID) != 1 || recv.count(a.DecisionID+":end") != 1 {
		t.Errorf("webhook receipts %v, want the start and the end once each after the replay", recv.got)
	}
	recv.checkSigned()
}

// Publishes that can never succeed are dead-lettered at the first attempt, with an error naming
// the decision and the cause: a message larger than the stream takes, and a subject the stream
// no longer takes. Before, they were retried forever.
func TestPermanentPublishErrorsDeadLettered(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := connect(t, n)
	ctx := context.Background()
	o := open(t, js, testConfig(""))
	run(t, o)
	update := func(change func(*jetstream.StreamConfig)) {
		t.Helper()
		s, err := js.Stream(ctx, "ACTIONS")
		if err != nil {
			t.Fatal(err)
		}
		c := s.CachedInfo().Config
		change(&c)
		if _, err := js.UpdateStream(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	update(func(c *jetstream.StreamConfig) { c.MaxMsgSize = 64 })
	big := hold("dec-too-big", "store")
	if _, err := o.Enqueue(ctx, big); err != nil {
		t.Fatal(err)
	}
	rec := waitState(t, o, big.DecisionID, Dead, EventStart)
	if rec.Attempts != 1 || rec.Published || !strings.Contains(rec.LastError, big.DecisionID) || !strings.Contains(rec.LastError, "exceeds maximum") {
		t.Errorf("too big: %+v", rec)
	}
	update(func(c *jetstream.StreamConfig) {
		c.MaxMsgSize = -1
		c.Subjects = []string{"gemba.actions.promotions.store"} // holds on store are no longer taken
	})
	lost := hold("dec-no-subject", "store")
	if _, err := o.Enqueue(ctx, lost); err != nil {
		t.Fatal(err)
	}
	rec = waitState(t, o, lost.DecisionID, Dead, EventStart)
	if rec.Attempts != 1 || rec.Published || !strings.Contains(rec.LastError, lost.DecisionID) ||
		!strings.Contains(rec.LastError, "does not take gemba.actions.holds.store") {
		t.Errorf("no subject: %+v", rec)
	}
	if c := streamCount(t, js, "ACTIONS"); c != 0 {
		t.Errorf("%d messages on the stream", c)
	}
}

// A promotion whose channel leaves the config while it runs (its start delivered on NATS and to
// the webhook) is dead-lettered when its end is due — nowhere to call — but its NATS end still
// goes out: subscribers of the stream saw it start.
func TestChannelGoneBeforeEndStillEndsOnNATS(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := connect(t, n)
	ctx := context.Background()
	recv := newReceiver(t, func(int, string) (int, http.Header, time.Duration) { return http.StatusOK, nil, 0 })
	o := open(t, js, testConfig(recv.srv.URL))
	stop := run(t, o)
	a := promo("dec-channel-gone", "web", time.Now().Add(2*time.Second))
	if _, err := o.Enqueue(ctx, a); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 15*time.Second, "the start delivered", func() bool {
		rec, err := o.Get(ctx, a.DecisionID)
		return err == nil && rec.Phase == EventEnd && recv.count(a.DecisionID) == 1
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	o2 := open(t, js, testConfig("")) // the web channel is gone from the config
	run(t, o2)
	waitState(t, o2, a.DecisionID, Dead, EventEnd)
	testutil.WaitFor(t, 15*time.Second, "the NATS end of the promotion whose channel went away", func() bool {
		return len(streamMsgs(t, js, "ACTIONS")[a.DecisionID+":end"]) == 1
	})
}

// What a promotion dead-lettered in its start reserved in the guard: given back (once) when none of
// it went out — here its channel left the config before its start — and kept when its NATS start
// went out (a 410 from the webhook after it): it ran, on one channel at least.
func TestDeadLetterGivesBackOnlyWhenNothingWentOut(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := connect(t, n)
	ctx := context.Background()
	kg, allow := guarded(t, js)
	recv := newReceiver(t, func(int, string) (int, http.Header, time.Duration) { return http.StatusGone, nil, 0 })
	o := open(t, js, testConfig(recv.srv.URL))
	o.SetGuard(kg)
	stop := run(t, o)
	ran := allow("ran", "sku-1", "web", Promote)
	if _, err := o.Enqueue(ctx, ran); err != nil {
		t.Fatal(err)
	}
	rec := waitState(t, o, ran.DecisionID, Dead, EventStart)
	if !rec.Published || rec.GiveBack || !rec.GivenBack.IsZero() {
		t.Errorf("dead after its NATS start: %+v, want its reservations kept", rec)
	}

	// Enqueued by a replica that has the web channel, delivered by one that no longer has it.
	o2 := open(t, js, testConfig(""))
	o2.SetGuard(kg)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	never := allow("never", "sku-2", "web", Promote)
	if _, err := o.Enqueue(ctx, never); err != nil {
		t.Fatal(err)
	}
	run(t, o2)
	testutil.WaitFor(t, 15*time.Second, "the reservations of the promotion that never ran given back", func() bool {
		r, err := o2.Get(ctx, never.DecisionID)
		return err == nil && r.State == Dead && !r.GivenBack.IsZero() && !r.GiveBack
	})
	for _, a := range []Action{ran, never} {
		v, err := kg.g.Check(ctx, guard.Proposal{ID: a.DecisionID, RuleVersion: "v3", Rule: a.Rule, SKU: a.SKU, Site: a.Site,
			Channel: a.Channel, Kind: guard.Promote, Discount: 15, Duration: guard.Duration(time.Hour), Time: a.Start})
		want := guard.Allow
		if a.DecisionID == never.DecisionID {
			want = guard.Released
		}
		if err != nil || v.Outcome != want {
			t.Errorf("%s: decision %s %v, want %s", a.Rule, v.Outcome, err, want)
		}
	}
}
