package act

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub/decide/guard"
	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

// waitDuplicateWindow returns once the actions stream's duplicate window has passed for every
// message stored before the call: a probe published then is accepted again (a second copy of the
// probe, on the holds subject of the store channel).
func waitDuplicateWindow(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	ctx := context.Background()
	probe := &nats.Msg{Subject: "gemba.actions.holds.store", Data: []byte(`{"id":"probe"}`), Header: nats.Header{}}
	probe.Header.Set(jetstream.MsgIDHeader, "probe")
	if _, err := js.PublishMsg(ctx, probe); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, "the duplicate window to pass", func() bool {
		ack, err := js.PublishMsg(ctx, probe)
		return err == nil && !ack.Duplicate
	})
}

// A promotion whose NATS start went out but was left unmarked (its loop stopped after the publish:
// maybe_out) and which is taken over later than the stream's duplicate window after that publish
// is not published a second time: the stream no longer drops the copy, so the loop looks for the
// start on the stream first, finds it, and marks it published. Subscribers see one start.
func TestMaybeOutRetriedAfterDuplicateWindowNotDoubled(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := connect(t, n)
	ctx := context.Background()
	cfg := testConfig("")
	cfg.Lease, cfg.DuplicateWindow = 300*time.Millisecond, 600*time.Millisecond
	o1 := open(t, js, named(cfg, "loop-1"))
	crashed := make(chan struct{})
	o1.afterPublish = func(string) error {
		close(crashed)
		return errors.New("crashed after the start's publish")
	}
	stop1 := run(t, o1)
	a := promo("dec-maybe-out-window", "store", time.Now().Add(time.Hour))
	if _, err := o1.Enqueue(ctx, a); err != nil {
		t.Fatal(err)
	}
	<-crashed
	if err := stop1(); err != nil {
		t.Fatal(err)
	}
	waitDuplicateWindow(t, js)
	o2 := open(t, js, named(cfg, "loop-2"))
	run(t, o2)
	rec := waitState(t, o2, a.DecisionID, Pending, EventEnd)
	if n := len(streamMsgs(t, js, "ACTIONS")[a.DecisionID]); n != 1 {
		t.Errorf("%d starts of %s on the stream, want 1 (record %+v)", n, a.DecisionID, rec)
	}
}

// The same for a replay of its dead letter: a maybe-out start dead-lettered (its channel left the
// config of the loop that took it over) and replayed later than the duplicate window after its
// publish is found on the stream, not published a second time.
func TestMaybeOutReplayedAfterDuplicateWindowNotDoubled(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := connect(t, n)
	ctx := context.Background()
	cfg := testConfig("")
	cfg.Lease, cfg.DuplicateWindow = 300*time.Millisecond, 600*time.Millisecond
	withWeb := cfg
	withWeb.Channels = map[string]Channel{"store": {}, "web": {}} // web: NATS only here
	o1 := open(t, js, named(withWeb, "loop-1"))
	crashed := make(chan struct{})
	o1.afterPublish = func(string) error {
		close(crashed)
		return errors.New("crashed after the start's publish")
	}
	stop1 := run(t, o1)
	a := promo("dec-maybe-out-replayed", "web", time.Now().Add(time.Hour))
	if _, err := o1.Enqueue(ctx, a); err != nil {
		t.Fatal(err)
	}
	<-crashed
	if err := stop1(); err != nil {
		t.Fatal(err)
	}
	o2 := open(t, js, named(cfg, "loop-2")) // the web channel is gone from its config
	stop2 := run(t, o2)
	if rec := waitState(t, o2, a.DecisionID, Dead, EventStart); !rec.MaybeOut {
		t.Fatalf("dead record %+v: want maybe_out", rec)
	}
	if err := stop2(); err != nil {
		t.Fatal(err)
	}
	waitDuplicateWindow(t, js)
	o3 := open(t, js, named(withWeb, "loop-3"))
	run(t, o3)
	if err := o3.Replay(ctx, a.DecisionID); err != nil {
		t.Fatal(err)
	}
	waitState(t, o3, a.DecisionID, Pending, EventEnd)
	if n := len(streamMsgs(t, js, "ACTIONS")[a.DecisionID]); n != 1 {
		t.Errorf("%d starts of %s on the stream, want 1", n, a.DecisionID)
	}
}

// A promotion's NATS end that went out unmarked (its loop stopped after the publish) and is taken
// over later than the stream's duplicate window after it became due is not published a second
// time: the loop looks for it on the stream first, as for a maybe-out start.
func TestEndTakenOverAfterDuplicateWindowNotDoubled(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := connect(t, n)
	ctx := context.Background()
	cfg := testConfig("")
	cfg.Lease, cfg.DuplicateWindow = 300*time.Millisecond, 600*time.Millisecond
	o1 := open(t, js, named(cfg, "loop-1"))
	a := promo("dec-end-window", "store", time.Now().Add(time.Second))
	crashed := make(chan struct{})
	o1.afterPublish = func(id string) error {
		if id != a.DecisionID+":end" {
			return nil
		}
		close(crashed)
		return errors.New("crashed after the end's publish")
	}
	stop1 := run(t, o1)
	if _, err := o1.Enqueue(ctx, a); err != nil {
		t.Fatal(err)
	}
	select {
	case <-crashed:
	case <-time.After(15 * time.Second):
		rec, err := o1.Get(ctx, a.DecisionID)
		t.Fatalf("the end never published: %+v, %v", rec, err)
	}
	if err := stop1(); err != nil {
		t.Fatal(err)
	}
	waitDuplicateWindow(t, js)
	o2 := open(t, js, named(cfg, "loop-2"))
	run(t, o2)
	waitState(t, o2, a.DecisionID, Done, EventEnd)
	if msgs := streamMsgs(t, js, "ACTIONS"); len(msgs[a.DecisionID]) != 1 || len(msgs[a.DecisionID+":end"]) != 1 {
		t.Errorf("%d starts, %d ends of %s on the stream, want 1 each", len(msgs[a.DecisionID]), len(msgs[a.DecisionID+":end"]), a.DecisionID)
	}
}

// A maybe-out start whose first attempt is older than the duplicate window and that is not on the
// stream (its publish got no answer and was not stored, here: the stream was emptied) is published.
func TestMaybeOutNotOnStreamPublished(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := connect(t, n)
	ctx := context.Background()
	cfg := testConfig("")
	cfg.Lease, cfg.DuplicateWindow = 300*time.Millisecond, 600*time.Millisecond
	o1 := open(t, js, named(cfg, "loop-1"))
	crashed := make(chan struct{})
	o1.afterPublish = func(string) error {
		close(crashed)
		return errors.New("crashed after the start's publish")
	}
	stop1 := run(t, o1)
	a := promo("dec-maybe-out-gone", "store", time.Now().Add(time.Hour))
	if _, err := o1.Enqueue(ctx, a); err != nil {
		t.Fatal(err)
	}
	<-crashed
	if err := stop1(); err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, "ACTIONS")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(ctx); err != nil { // as if it had never been stored
		t.Fatal(err)
	}
	waitDuplicateWindow(t, js)
	o2 := open(t, js, named(cfg, "loop-2"))
	run(t, o2)
	waitState(t, o2, a.DecisionID, Pending, EventEnd)
	if n := len(streamMsgs(t, js, "ACTIONS")[a.DecisionID]); n != 1 {
		t.Errorf("%d starts of %s on the stream, want 1", n, a.DecisionID)
	}
}

// A promotion Enqueue created claimed by its own loop (handed over in memory) whose replica stopped
// before attempting it is not taken for maybe out by the loop taking it over: nothing of it was
// tried. Dead-lettered then (its channel left that loop's config), it gives its reservations back
// and gets no NATS end (it has no start on NATS).
func TestHandedNeverAttemptedNotMaybeOut(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := connect(t, n)
	ctx := context.Background()
	kg, allow := guarded(t, js)
	o1 := open(t, js, named(testConfig("http://127.0.0.1:1"), "loop-1"))
	o1.SetGuard(kg)
	o1.hand.open() // as a running loop would, but nothing takes the record: loop-1 stops here
	a := allow("overstock", "sku-2", "web", Promote)
	if _, err := o1.Enqueue(ctx, a); err != nil {
		t.Fatal(err)
	}
	if rec, err := o1.Get(ctx, a.DecisionID); err != nil || rec.Owner != "loop-1" {
		t.Fatalf("after enqueue: %+v, %v (want claimed by loop-1)", rec, err)
	}
	o1.hand.close()
	o2 := open(t, js, named(testConfig(""), "loop-2")) // the web channel is gone from its config
	o2.SetGuard(kg)
	run(t, o2)
	var rec Record
	testutil.WaitFor(t, 15*time.Second, "the record dead and settled", func() bool {
		r, err := o2.Get(ctx, a.DecisionID)
		rec = r
		return err == nil && r.State == Dead && !r.GiveBack
	})
	if rec.MaybeOut || rec.EndDue || rec.GivenBack.IsZero() {
		t.Errorf("record %+v: want not maybe_out, no NATS end due, its reservations given back", rec)
	}
	if ids := allowedIDs(t, kg.g); slices.Contains(ids, a.DecisionID) {
		t.Errorf("allowed in the guard: %v, want %s given back (nothing of it was tried)", ids, a.DecisionID)
	}
}

// cancelGuard is killGuard whose Reacquire, once it has reserved again, runs after (here: the
// replay's context ends, as a CLI interrupted or timing out then), and which counts give-backs.
type cancelGuard struct {
	*killGuard
	after     func()
	deadCalls atomic.Int32
}

func (c *cancelGuard) Reacquire(ctx context.Context, a Action) error {
	if err := c.killGuard.Reacquire(ctx, a); err != nil {
		return err
	}
	c.after()
	return nil
}

func (c *cancelGuard) DeadLettered(ctx context.Context, a Action, why string) error {
	c.deadCalls.Add(1)
	return c.killGuard.DeadLettered(ctx, a, why)
}

// A replay that reserved a given-back dead letter again and then failed to write the record (here
// its context ended in between) gives the reservations back again: the record stays dead and given
// back, so the guard must not hold its caps and cooldown. Before, they stayed held by a promotion
// that does not run (and a later replay found them held).
func TestReplayWriteFailedGivesBackAgain(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := connect(t, n)
	ctx := context.Background()
	kg, allow := guarded(t, js)
	cg := &cancelGuard{killGuard: kg}
	o := open(t, js, testConfig(""))
	o.SetGuard(cg)
	a := allow("overstock", "sku-2", "store", Promote)
	if err := kg.g.Release(ctx, a.DecisionID); err != nil { // as its dead letter gave it back
		t.Fatal(err)
	}
	now := time.Now()
	data, err := json.Marshal(Record{Action: a, State: Dead, Phase: EventStart, FirstAt: now, NextAt: now, GivenBack: now,
		LastError: `channel "store" is no longer configured`})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.kv.Create(ctx, key(a.DecisionID), data); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	cg.after = cancel
	if err := o.Replay(rctx, a.DecisionID); err == nil {
		t.Fatal("replay whose write failed: no error")
	}
	rec, err := o.Get(ctx, a.DecisionID)
	if err != nil || rec.State != Dead || rec.GivenBack.IsZero() {
		t.Fatalf("record %+v, %v: want still dead and given back", rec, err)
	}
	v, err := kg.g.Check(ctx, guard.Proposal{ID: a.DecisionID, RuleVersion: "v3", Rule: a.Rule, SKU: a.SKU, Site: a.Site,
		Channel: a.Channel, Kind: guard.Promote, Discount: 15, Duration: guard.Duration(time.Hour), Time: a.Start})
	if err != nil || v.Outcome != guard.Released || cg.deadCalls.Load() != 1 {
		t.Errorf("decision %s (%v), %d give-backs: want released again, once (the record is dead and given back)",
			v.Outcome, err, cg.deadCalls.Load())
	}
	// Replayed again, it reserves and is delivered.
	cg.after = func() {}
	if err := o.Replay(ctx, a.DecisionID); err != nil {
		t.Fatal(err)
	}
	run(t, o)
	waitState(t, o, a.DecisionID, Pending, EventEnd)
}
