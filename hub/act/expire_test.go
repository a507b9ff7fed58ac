package act

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

// A promotion whose NATS start is refused for a while (the stream full: a temporary refusal,
// retried) until its end has passed is never started, on NATS or at the webhook: its record is
// cancelled as expired and its reservations are given back. One whose NATS start went out before
// its end keeps its end (see TestGoneStartStillEndsOnNATS).
func TestStartAfterItsEndNotDelivered(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := connect(t, n)
	ctx := context.Background()
	kg, allow := guarded(t, js)
	recv := newReceiver(t, nil)
	var late atomic.Int64 // how far the loop's clock is ahead
	cfg := testConfig(recv.srv.URL)
	cfg.Now = func() time.Time { return time.Now().Add(time.Duration(late.Load())) }
	o := open(t, js, cfg)
	o.SetGuard(kg)
	full := func(on bool) {
		t.Helper()
		s, err := js.Stream(ctx, "ACTIONS")
		if err != nil {
			t.Fatal(err)
		}
		c := s.CachedInfo().Config
		c.MaxMsgs, c.Discard = -1, jetstream.DiscardOld
		if on {
			if _, err := js.Publish(ctx, "gemba.actions.holds.store", []byte(`{}`)); err != nil {
				t.Fatal(err)
			}
			c.MaxMsgs, c.Discard = 1, jetstream.DiscardNew
		}
		if _, err := js.UpdateStream(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	full(true)
	run(t, o)
	a := allow("overstock", "sku-2", "web", Promote)
	if _, err := o.Enqueue(ctx, a); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 15*time.Second, "the start refused by NATS", func() bool {
		r, err := o.Get(ctx, a.DecisionID)
		return err == nil && r.State == Pending && strings.Contains(r.LastError, "maximum messages")
	})
	late.Store(int64(a.End.Sub(a.Start) + time.Minute))
	full(false)
	var rec Record
	testutil.WaitFor(t, 15*time.Second, "the record final", func() bool {
		r, err := o.Get(ctx, a.DecisionID)
		rec = r
		return err == nil && (r.State == Done || r.State == Cancelled && !r.GiveBack)
	})
	if rec.State != Cancelled || rec.Published || rec.GivenBack.IsZero() || !strings.HasPrefix(rec.LastError, "expired: ") ||
		!strings.Contains(rec.LastError, "maximum messages") {
		t.Errorf("record %+v: want cancelled as expired (with the last publish error), given back", rec)
	}
	if msgs := streamMsgs(t, js, "ACTIONS"); len(msgs[a.DecisionID]) != 0 || len(msgs[a.DecisionID+":end"]) != 0 {
		t.Errorf("stream %v: want nothing of the expired promotion", msgs)
	}
	if c := recv.totalCalls(); c != 0 {
		t.Errorf("%d webhook calls, want none", c)
	}
	if ids := allowedIDs(t, kg.g); len(ids) != 0 {
		t.Errorf("still allowed in the guard: %v, want released", ids)
	}
	if err := o.Replay(ctx, a.DecisionID); err == nil {
		t.Errorf("replay of the expired promotion: no error")
	}
}

// A promotion whose start may have gone out on NATS unmarked (its loop stopped after the publish,
// before the mark) and whose end passed before another loop took it over is not cancelled in
// silence: its start may be on the stream, so its NATS end goes out (the webhook, which never got
// the start, gets nothing), and it keeps what it reserved.
func TestMaybeStartedPastItsEndEndedOnNATS(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := connect(t, n)
	ctx := context.Background()
	kg, allow := guarded(t, js)
	recv := newReceiver(t, nil)
	o1 := open(t, js, named(testConfig(recv.srv.URL), "loop-1"))
	o1.SetGuard(kg)
	crashed := make(chan struct{})
	o1.afterPublish = func(string) error {
		close(crashed)
		return errors.New("crashed after the start's publish")
	}
	stop1 := run(t, o1)
	a := allow("overstock", "sku-2", "web", Promote)
	if _, err := o1.Enqueue(ctx, a); err != nil {
		t.Fatal(err)
	}
	<-crashed
	if err := stop1(); err != nil {
		t.Fatal(err)
	}
	cfg := named(testConfig(recv.srv.URL), "loop-2")
	cfg.Now = func() time.Time { return time.Now().Add(a.End.Sub(a.Start) + time.Minute) } // back after its end
	o2 := open(t, js, cfg)
	o2.SetGuard(kg)
	run(t, o2)
	var rec Record
	testutil.WaitFor(t, 15*time.Second, "the record final", func() bool {
		r, err := o2.Get(ctx, a.DecisionID)
		rec = r
		return err == nil && (r.State == Done || r.State == Cancelled && !r.GiveBack)
	})
	msgs := streamMsgs(t, js, "ACTIONS")
	if len(msgs[a.DecisionID]) != 1 || len(msgs[a.DecisionID+":end"]) != 1 {
		t.Errorf("stream: %d starts, %d ends; want the start (sent before the stop) ended once", len(msgs[a.DecisionID]), len(msgs[a.DecisionID+":end"]))
	}
	if rec.State != Done || !strings.Contains(rec.LastError, "expired") {
		t.Errorf("record %+v: want done, saying it expired", rec)
	}
	if c := recv.totalCalls(); c != 0 {
		t.Errorf("%d webhook calls, want none (the webhook never got the start)", c)
	}
	if ids := allowedIDs(t, kg.g); len(ids) != 1 {
		t.Errorf("allowed in the guard: %v, want it (it may have acted: its reservations kept)", ids)
	}
}
