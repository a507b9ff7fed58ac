package act

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub/decide/guard"
	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

// throwKill sets the kill switch from a guard of its own, on a connection of its own that is closed
// at once: as an operator's request to one replica, which may go away right after it.
func throwKill(t *testing.T, n *natstest.Node, k guard.KillSwitch) {
	t.Helper()
	nc, js := connect(t, n)
	defer nc.Close()
	cfg := guard.DefaultConfig()
	cfg.MaxDiscount, cfg.Cooldown = 30, time.Hour
	g, err := guard.New(context.Background(), js, cfg, "api", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = g.Close() }()
	if err := g.SetKillSwitch(context.Background(), k); err != nil {
		t.Fatal(err)
	}
}

// secondGuard is the guard of another replica, on its own connection.
func secondGuard(t *testing.T, n *natstest.Node) *killGuard {
	t.Helper()
	_, js := connect(t, n)
	cfg := guard.DefaultConfig()
	cfg.MaxDiscount, cfg.Cooldown = 30, time.Hour
	g, err := guard.New(context.Background(), js, cfg, "r2", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Close() })
	return &killGuard{g: g}
}

func named(cfg Config, owner string) Config {
	cfg.Owner = owner
	return cfg
}

// The kill switch thrown with end_live ends every promotion running at once, through its normal
// end (NATS end message, end webhook), once, though two replicas' loops both see the switch; the
// record says who threw it and why. What the promotions reserved stays reserved: they acted.
func TestKillEndLiveEndsRunningPromotions(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := connect(t, n)
	_, js2 := connect(t, n)
	ctx := context.Background()
	kg, allow := guarded(t, js)
	recv := newReceiver(t, nil)
	o1 := open(t, js, named(testConfig(recv.srv.URL), "loop-1"))
	o1.SetGuard(kg)
	o2 := open(t, js2, named(testConfig(recv.srv.URL), "loop-2"))
	o2.SetGuard(secondGuard(t, n))
	run(t, o1)
	run(t, o2)
	a := allow("overstock", "sku-2", "web", Promote)   // webhook and NATS
	b := allow("overstock", "sku-3", "store", Promote) // NATS only
	for _, x := range []Action{a, b} {
		if _, err := o1.Enqueue(ctx, x); err != nil {
			t.Fatal(err)
		}
	}
	for _, x := range []Action{a, b} {
		waitState(t, o1, x.DecisionID, Pending, EventEnd) // running, its end an hour away
	}
	throwKill(t, n, guard.KillSwitch{On: true, EndLive: true, By: "ops@plant-a", Reason: "wrong price list"})
	for _, x := range []Action{a, b} {
		rec := waitState(t, o1, x.DecisionID, Done, EventEnd)
		if !strings.Contains(rec.EndedEarly, "kill switch thrown by ops@plant-a") || !strings.Contains(rec.EndedEarly, "wrong price list") {
			t.Errorf("%s ended, record %+v: want who threw the switch and why", x.DecisionID, rec)
		}
	}
	msgs := streamMsgs(t, js, "ACTIONS")
	for _, id := range []string{a.DecisionID, a.DecisionID + ":end", b.DecisionID, b.DecisionID + ":end"} {
		if len(msgs[id]) != 1 {
			t.Errorf("%s on the stream %d times, want once", id, len(msgs[id]))
		}
	}
	if m := msgs[a.DecisionID+":end"]; len(m) == 1 && m[0].Event != EventEnd {
		t.Errorf("end message %+v", m[0])
	}
	if recv.count(a.DecisionID) != 1 || recv.count(a.DecisionID+":end") != 1 || recv.totalCalls() != 2 {
		t.Errorf("webhook receipts %v in %d calls: want the start and the end once each", recv.got, recv.totalCalls())
	}
	if ids := allowedIDs(t, kg.g); !slices.Contains(ids, a.DecisionID) || !slices.Contains(ids, b.DecisionID) || kg.cancelled.Load() != 0 {
		t.Errorf("allowed %v, %d cancelled: promotions that ran keep their reservations", ids, kg.cancelled.Load())
	}
	recv.checkSigned()
}

// Without end_live the kill switch leaves promotions already running alone: they end at their
// own end time.
func TestKillWithoutEndLiveLeavesRunningPromotions(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := connect(t, n)
	ctx := context.Background()
	kg, allow := guarded(t, js)
	recv := newReceiver(t, nil)
	o := open(t, js, testConfig(recv.srv.URL))
	o.SetGuard(kg)
	run(t, o)
	a := allow("overstock", "sku-2", "web", Promote)
	if _, err := o.Enqueue(ctx, a); err != nil {
		t.Fatal(err)
	}
	waitState(t, o, a.DecisionID, Pending, EventEnd)
	throwKill(t, n, guard.KillSwitch{On: true, By: "ops@plant-a", Reason: "audit"})
	// The loop has read the switch twice since it was thrown.
	seen := o.endChecks.Load()
	testutil.WaitFor(t, 15*time.Second, "two readings of the switch", func() bool { return o.endChecks.Load() >= seen+2 })
	rec, err := o.Get(ctx, a.DecisionID)
	if err != nil || rec.State != Pending || rec.Phase != EventEnd || rec.EndedEarly != "" || !rec.NextAt.Equal(a.End) {
		t.Errorf("record %+v (%v): want still running until %s", rec, err, a.End)
	}
	if msgs := streamMsgs(t, js, "ACTIONS"); len(msgs[a.DecisionID+":end"]) != 0 || recv.count(a.DecisionID+":end") != 0 {
		t.Errorf("ended without end_live: stream %v, webhook %v", msgs, recv.got)
	}
}

// A loop that stops after publishing an end the switch asked for (before marking it) leaves the
// rest to another loop: the end once on NATS, once at the webhook.
func TestKillEndLiveSurvivesLoopCrash(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := connect(t, n)
	_, js2 := connect(t, n)
	ctx := context.Background()
	kg, allow := guarded(t, js)
	recv := newReceiver(t, nil)
	o1 := open(t, js, named(testConfig(recv.srv.URL), "loop-1"))
	o1.SetGuard(kg)
	crashed := make(chan struct{})
	o1.afterPublish = func(id string) error {
		if strings.HasSuffix(id, ":end") {
			close(crashed)
			return errors.New("crashed after the end's publish")
		}
		return nil
	}
	stop1 := run(t, o1)
	a := allow("overstock", "sku-2", "web", Promote)
	if _, err := o1.Enqueue(ctx, a); err != nil {
		t.Fatal(err)
	}
	waitState(t, o1, a.DecisionID, Pending, EventEnd)
	throwKill(t, n, guard.KillSwitch{On: true, EndLive: true, By: "ops@plant-a", Reason: "recall"})
	select {
	case <-crashed:
	case <-time.After(15 * time.Second):
		t.Fatal("the end was not published")
	}
	if err := stop1(); err != nil {
		t.Fatal(err)
	}
	o2 := open(t, js2, named(testConfig(recv.srv.URL), "loop-2"))
	o2.SetGuard(secondGuard(t, n))
	run(t, o2)
	waitState(t, o2, a.DecisionID, Done, EventEnd)
	msgs := streamMsgs(t, js, "ACTIONS")
	if len(msgs[a.DecisionID+":end"]) != 1 || recv.count(a.DecisionID+":end") != 1 {
		t.Errorf("end on the stream %d times, at the webhook %d times: want once each", len(msgs[a.DecisionID+":end"]), recv.count(a.DecisionID+":end"))
	}
}

// A promotion whose NATS start went out while its webhook asked to wait (Retry-After half an hour) runs
// on NATS meanwhile: end_live ends it there at once rather than at its next attempt.
func TestKillEndLiveEndsPartStartedPromotionAtOnce(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := connect(t, n)
	ctx := context.Background()
	kg, allow := guarded(t, js)
	recv := newReceiver(t, func(int, string) (int, http.Header, time.Duration) {
		return http.StatusServiceUnavailable, http.Header{"Retry-After": {"1800"}}, 0
	})
	o := open(t, js, testConfig(recv.srv.URL))
	o.SetGuard(kg)
	run(t, o)
	a := allow("overstock", "sku-2", "web", Promote)
	if _, err := o.Enqueue(ctx, a); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 15*time.Second, "the NATS start out, the webhook half an hour away", func() bool {
		r, err := o.Get(ctx, a.DecisionID)
		return err == nil && r.Published && r.Attempts == 1 && r.NextAt.After(time.Now().Add(time.Minute))
	})
	throwKill(t, n, guard.KillSwitch{On: true, EndLive: true, By: "ops@plant-a", Reason: "recall"})
	waitState(t, o, a.DecisionID, Done, EventEnd)
	msgs := streamMsgs(t, js, "ACTIONS")
	if len(msgs[a.DecisionID]) != 1 || len(msgs[a.DecisionID+":end"]) != 1 || recv.count(a.DecisionID) != 0 || recv.count(a.DecisionID+":end") != 0 {
		t.Errorf("stream %v, webhook %v: want the start and the end on NATS once, nothing at the webhook", msgs, recv.got)
	}
}

// A promotion dead-lettered in its start after its NATS start went out (410) waits for its NATS
// end at its end time: end_live publishes that end now; the record stays dead.
func TestKillEndLiveEndsDeadLetteredPromotionOnNATS(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := connect(t, n)
	ctx := context.Background()
	kg, allow := guarded(t, js)
	recv := newReceiver(t, func(int, string) (int, http.Header, time.Duration) { return http.StatusGone, nil, 0 })
	o := open(t, js, testConfig(recv.srv.URL))
	o.SetGuard(kg)
	run(t, o)
	a := allow("overstock", "sku-2", "web", Promote)
	if _, err := o.Enqueue(ctx, a); err != nil {
		t.Fatal(err)
	}
	if rec := waitState(t, o, a.DecisionID, Dead, EventStart); !rec.EndDue || !rec.Published {
		t.Fatalf("dead record %+v: want its NATS end due", rec)
	}
	throwKill(t, n, guard.KillSwitch{On: true, EndLive: true, By: "ops@plant-a", Reason: "recall"})
	testutil.WaitFor(t, 15*time.Second, "the NATS end published", func() bool {
		r, err := o.Get(ctx, a.DecisionID)
		return err == nil && r.EndPublished && r.State == Dead && strings.Contains(r.EndedEarly, "ops@plant-a")
	})
	if msgs := streamMsgs(t, js, "ACTIONS"); len(msgs[a.DecisionID+":end"]) != 1 {
		t.Errorf("end on the stream %d times", len(msgs[a.DecisionID+":end"]))
	}
}

// The kill switch thrown with end_live and reset at once, before any loop read it, still ends the
// promotions that were running when it was thrown: the throw leaves a mark that the reset keeps.
// The loops here start only after the reset, so none saw the switch thrown. Two replicas read the
// mark; each promotion is ended once. A promotion started after the mark runs on.
func TestKillEndLiveResetAtOnceStillEnds(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := connect(t, n)
	_, js2 := connect(t, n)
	ctx := context.Background()
	kg, allow := guarded(t, js)
	recv := newReceiver(t, nil)
	o0 := open(t, js, named(testConfig(recv.srv.URL), "loop-0"))
	o0.SetGuard(kg)
	stop0 := run(t, o0)
	a := allow("overstock", "sku-2", "web", Promote)
	if _, err := o0.Enqueue(ctx, a); err != nil {
		t.Fatal(err)
	}
	waitState(t, o0, a.DecisionID, Pending, EventEnd) // running, its end an hour away
	if err := stop0(); err != nil {
		t.Fatal(err)
	}
	throwKill(t, n, guard.KillSwitch{On: true, EndLive: true, By: "ops@plant-a", Reason: "wrong price list"})
	throwKill(t, n, guard.KillSwitch{On: false, By: "ops@plant-a", Reason: "good decisions may go on"})

	o1 := open(t, js, named(testConfig(recv.srv.URL), "loop-1"))
	o1.SetGuard(kg)
	o2 := open(t, js2, named(testConfig(recv.srv.URL), "loop-2"))
	o2.SetGuard(secondGuard(t, n))
	run(t, o1)
	run(t, o2)
	b := allow("overstock", "sku-3", "web", Promote) // after the reset: allowed, started after the mark
	if _, err := o1.Enqueue(ctx, b); err != nil {
		t.Fatal(err)
	}
	waitState(t, o1, b.DecisionID, Pending, EventEnd)
	// Both loops have read the switch twice since b started.
	seen1, seen2 := o1.endChecks.Load(), o2.endChecks.Load()
	testutil.WaitFor(t, 15*time.Second, "two readings of the switch by each loop", func() bool {
		return o1.endChecks.Load() >= seen1+2 && o2.endChecks.Load() >= seen2+2
	})
	rec, err := o1.Get(ctx, a.DecisionID)
	if err != nil || rec.EndedEarly == "" {
		t.Fatalf("record %+v (%v): the promotion running when the switch was thrown with end_live is not ended after a quick reset", rec, err)
	}
	rec = waitState(t, o1, a.DecisionID, Done, EventEnd)
	if !strings.Contains(rec.EndedEarly, "kill switch thrown by ops@plant-a") || !strings.Contains(rec.EndedEarly, "wrong price list") {
		t.Errorf("ended, record %+v: want who threw the switch and why", rec)
	}
	msgs := streamMsgs(t, js, "ACTIONS")
	if len(msgs[a.DecisionID+":end"]) != 1 || recv.count(a.DecisionID+":end") != 1 {
		t.Errorf("end on the stream %d times, at the webhook %d times: want once each", len(msgs[a.DecisionID+":end"]), recv.count(a.DecisionID+":end"))
	}
	rb, err := o1.Get(ctx, b.DecisionID)
	if err != nil || rb.State != Pending || rb.Phase != EventEnd || rb.EndedEarly != "" || !rb.NextAt.Equal(b.End) {
		t.Errorf("record %+v (%v): a promotion started after the mark must run until %s", rb, err, b.End)
	}
	if len(msgs[b.DecisionID+":end"]) != 0 || recv.count(b.DecisionID+":end") != 0 {
		t.Errorf("the promotion started after the mark was ended")
	}
	// A second throw with end_live, reset at once, replaces the mark: it ends b.
	throwKill(t, n, guard.KillSwitch{On: true, EndLive: true, By: "ops@plant-b", Reason: "second list"})
	throwKill(t, n, guard.KillSwitch{On: false, By: "ops@plant-b", Reason: "done"})
	rb = waitState(t, o1, b.DecisionID, Done, EventEnd)
	if !strings.Contains(rb.EndedEarly, "kill switch thrown by ops@plant-b") {
		t.Errorf("ended, record %+v: want the second throw's mark", rb)
	}
	msgs = streamMsgs(t, js, "ACTIONS")
	if len(msgs[a.DecisionID+":end"]) != 1 || len(msgs[b.DecisionID+":end"]) != 1 || recv.count(b.DecisionID+":end") != 1 {
		t.Errorf("ends on the stream %d and %d times, b's at the webhook %d times: want once each",
			len(msgs[a.DecisionID+":end"]), len(msgs[b.DecisionID+":end"]), recv.count(b.DecisionID+":end"))
	}
}

// A promotion whose NATS start went out while its webhook asked to wait is ended on NATS only when
// the switch is thrown with end_live, also when it is reset before any loop read it: its webhook
// never gets the start.
func TestKillEndLiveResetAtOnceEndsPartStartedOnNATS(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := connect(t, n)
	ctx := context.Background()
	kg, allow := guarded(t, js)
	recv := newReceiver(t, func(call int, _ string) (int, http.Header, time.Duration) {
		if call == 1 {
			return http.StatusServiceUnavailable, http.Header{"Retry-After": {"1800"}}, 0
		}
		return http.StatusOK, nil, 0
	})
	o := open(t, js, testConfig(recv.srv.URL))
	o.SetGuard(kg)
	stop := run(t, o)
	a := allow("overstock", "sku-2", "web", Promote)
	if _, err := o.Enqueue(ctx, a); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 15*time.Second, "the NATS start out, the webhook half an hour away", func() bool {
		r, err := o.Get(ctx, a.DecisionID)
		return err == nil && r.Published && r.Attempts == 1 && r.NextAt.After(time.Now().Add(time.Minute))
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	throwKill(t, n, guard.KillSwitch{On: true, EndLive: true, By: "ops@plant-a", Reason: "recall"})
	throwKill(t, n, guard.KillSwitch{On: false, By: "ops@plant-a", Reason: "go on"})
	o2 := open(t, js, named(testConfig(recv.srv.URL), "loop-2"))
	o2.SetGuard(kg)
	run(t, o2)
	waitState(t, o2, a.DecisionID, Done, EventEnd)
	msgs := streamMsgs(t, js, "ACTIONS")
	if len(msgs[a.DecisionID]) != 1 || len(msgs[a.DecisionID+":end"]) != 1 || recv.count(a.DecisionID) != 0 || recv.count(a.DecisionID+":end") != 0 {
		t.Errorf("stream %v, webhook %v: want the start and the end on NATS once, nothing at the webhook", msgs, recv.got)
	}
}
