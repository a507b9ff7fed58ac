package act

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub/decide/guard"
	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

// A promotion whose NATS start may have gone out unmarked (maybe_out) and which is then
// dead-lettered (here its channel left the config of the loop that took it over) keeps its NATS
// end, due at the promotion's end, on NATS only, as one whose start is known to have gone out:
// subscribers of the stream that have its start see it end. Its start either went out before the
// stop (stored) or not (the stopped loop had claimed it and not published yet): the stream has at
// most one start and exactly one end, and never a start after its end. A replay before its end sends
// the start again (the stream drops it as a duplicate when it was stored), the webhook its start
// and end; a replay after its end sends nothing more: its NATS end is out, and its start is past it.
func TestMaybeOutDeadLetterEndsOnNATS(t *testing.T) {
	for _, c := range []struct {
		stored, afterEnd bool
	}{{true, false}, {true, true}, {false, false}, {false, true}} {
		t.Run(fmt.Sprintf("stored=%v/replay_after_end=%v", c.stored, c.afterEnd), func(t *testing.T) {
			maybeOutDeadLetter(t, c.stored, c.afterEnd)
		})
	}
}

func maybeOutDeadLetter(t *testing.T, stored, afterEnd bool) {
	n := natstest.JetStream(t)
	_, js := connect(t, n)
	ctx := context.Background()
	var late atomic.Int64 // how far the loops' clocks are ahead
	clock := func() time.Time { return time.Now().Add(time.Duration(late.Load())) }
	a := promo("dec-maybe-out-dead", "web", time.Now().Add(time.Hour))
	o1 := open(t, js, named(testConfig("http://127.0.0.1:1"), "loop-1")) // the stream takes the web channel
	cfg := named(testConfig(""), "loop-2")                               // the web channel is gone from its config
	cfg.Now = clock
	o2 := open(t, js, cfg)
	if stored {
		crashed := make(chan struct{})
		o1.afterPublish = func(string) error {
			close(crashed)
			return errors.New("crashed after the start's publish")
		}
		stop1 := run(t, o1)
		if _, err := o1.Enqueue(ctx, a); err != nil {
			t.Fatal(err)
		}
		<-crashed
		if err := stop1(); err != nil {
			t.Fatal(err)
		}
	} else {
		// As a loop that claimed it and stopped before its publish leaves it.
		now := time.Now()
		data, err := json.Marshal(Record{Action: a, State: Pending, Phase: EventStart, FirstAt: now, NextAt: now, StartedAt: now,
			Owner: "loop-1", LeaseUntil: now.Add(-time.Millisecond)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := o2.kv.Create(ctx, key(a.DecisionID), data); err != nil {
			t.Fatal(err)
		}
	}
	stop2 := run(t, o2)
	rec := waitState(t, o2, a.DecisionID, Dead, EventStart)
	if !rec.MaybeOut || !rec.EndDue || !rec.NextAt.Equal(a.End) {
		t.Fatalf("dead record %+v: want maybe_out, its NATS end due at its end", rec)
	}
	starts := 0
	if stored {
		starts = 1
	}
	if afterEnd {
		late.Store(int64(time.Hour + time.Minute))
		testutil.WaitFor(t, 15*time.Second, "the NATS end of the dead-lettered promotion", func() bool {
			r, err := o2.Get(ctx, a.DecisionID)
			return err == nil && r.State == Dead && r.EndPublished && !r.EndDue
		})
		if msgs := streamMsgs(t, js, "ACTIONS"); len(msgs[a.DecisionID]) != starts || len(msgs[a.DecisionID+":end"]) != 1 {
			t.Fatalf("stream %v: want %d start(s) and its end", msgs, starts)
		}
	}
	if err := stop2(); err != nil {
		t.Fatal(err)
	}

	// Replayed by a loop that has the channel again.
	recv := newReceiver(t, nil)
	cfg3 := named(testConfig(recv.srv.URL), "loop-3")
	cfg3.Now = clock
	o3 := open(t, js, cfg3)
	run(t, o3)
	if err := o3.Replay(ctx, a.DecisionID); err != nil {
		t.Fatal(err)
	}
	if !afterEnd {
		testutil.WaitFor(t, 15*time.Second, "the start delivered", func() bool {
			r, err := o3.Get(ctx, a.DecisionID)
			return err == nil && r.Phase == EventEnd
		})
		late.Store(int64(time.Hour + time.Minute))
	}
	rec = waitState(t, o3, a.DecisionID, Done, EventEnd)
	msgs := streamMsgs(t, js, "ACTIONS")
	order := streamOrder(t, js)
	if afterEnd {
		if len(msgs[a.DecisionID]) != starts || len(msgs[a.DecisionID+":end"]) != 1 || recv.totalCalls() != 0 {
			t.Errorf("replayed after its end: stream %v, webhook %v: want nothing more (%d start(s), one end, no webhook call)", order, recv.got, starts)
		}
		if !strings.Contains(rec.LastError, "expired") {
			t.Errorf("record %+v: want it saying it expired", rec)
		}
		return
	}
	if len(msgs[a.DecisionID]) != 1 || len(msgs[a.DecisionID+":end"]) != 1 || order[len(order)-1] != a.DecisionID+":end" ||
		recv.count(a.DecisionID) != 1 || recv.count(a.DecisionID+":end") != 1 {
		t.Errorf("replayed before its end: stream %v, webhook %v: want the start, then the end, once each on both", order, recv.got)
	}
	recv.checkSigned()
}

// A maybe-out dead letter whose NATS end went out before its end time (the kill switch thrown with
// end_live) and which is then replayed before its end sends no NATS start after that end: the
// webhook, which got nothing, gets its start, NATS nothing more.
func TestMaybeOutEndedEarlyReplayNoStartAfterEnd(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := connect(t, n)
	ctx := context.Background()
	kg, allow := guarded(t, js)
	a := allow("overstock", "sku-2", "web", Promote)
	open(t, js, named(testConfig("http://127.0.0.1:1"), "loop-1")) // the stream takes the web channel
	o2 := open(t, js, named(testConfig(""), "loop-2"))             // the web channel is gone from its config
	o2.SetGuard(kg)
	// As a loop that claimed it and stopped before its publish leaves it.
	now := time.Now()
	data, err := json.Marshal(Record{Action: a, State: Pending, Phase: EventStart, FirstAt: now, NextAt: now, StartedAt: now,
		Owner: "loop-1", LeaseUntil: now.Add(-time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o2.kv.Create(ctx, key(a.DecisionID), data); err != nil {
		t.Fatal(err)
	}
	stop2 := run(t, o2)
	if rec := waitState(t, o2, a.DecisionID, Dead, EventStart); !rec.MaybeOut || !rec.EndDue {
		t.Fatalf("dead record %+v: want maybe_out, its NATS end due", rec)
	}
	throwKill(t, n, guard.KillSwitch{On: true, EndLive: true, By: "ops@plant-a", Reason: "recall"})
	testutil.WaitFor(t, 15*time.Second, "its NATS end published early", func() bool {
		r, err := o2.Get(ctx, a.DecisionID)
		return err == nil && r.State == Dead && r.EndPublished && r.EndedEarly != ""
	})
	throwKill(t, n, guard.KillSwitch{On: false, By: "ops@plant-a", Reason: "go on"})
	if err := stop2(); err != nil {
		t.Fatal(err)
	}
	recv := newReceiver(t, nil)
	o3 := open(t, js, named(testConfig(recv.srv.URL), "loop-3"))
	o3.SetGuard(kg)
	run(t, o3)
	if err := o3.Replay(ctx, a.DecisionID); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 15*time.Second, "the replayed start delivered", func() bool {
		r, err := o3.Get(ctx, a.DecisionID)
		return err == nil && r.State == Pending && r.Phase == EventEnd
	})
	if ids := streamOrder(t, js); len(ids) != 1 || ids[0] != a.DecisionID+":end" || recv.count(a.DecisionID) != 1 {
		t.Errorf("stream %v, webhook %v: want the end alone on NATS (no start after it), the start at the webhook", ids, recv.got)
	}
}

// A promotion whose NATS start may have gone out unmarked (its loop stopped after the publish, before
// the mark) and which a loop takes over while the kill switch is thrown is not cancelled in silence
// as a start nothing of which went out: its start may be on the stream, so it is ended there at
// once (the webhook, which never got the start, gets nothing) and keeps what it reserved, as a
// start the switch stopped after its NATS publish. Cancelled, its start stayed on the stream with
// no end, and its caps and cooldown were given back though it may have acted.
func TestKillSwitchEndsMaybeOutStartOnNATS(t *testing.T) {
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
	if err := kg.g.SetKill(ctx, true, "ops@plant-a", "recall"); err != nil {
		t.Fatal(err)
	}
	o2 := open(t, js, named(testConfig(recv.srv.URL), "loop-2"))
	o2.SetGuard(kg)
	run(t, o2)
	var rec Record
	testutil.WaitFor(t, 15*time.Second, "the record final", func() bool {
		r, err := o2.Get(ctx, a.DecisionID)
		rec = r
		return err == nil && (r.State == Done || r.State == Cancelled && !r.GiveBack)
	})
	msgs := streamMsgs(t, js, "ACTIONS")
	if rec.State != Done || len(msgs[a.DecisionID]) != 1 || len(msgs[a.DecisionID+":end"]) != 1 {
		t.Errorf("record %s (%s), stream: %d start(s), %d end(s): want done, its start (sent before the stop) ended on NATS once",
			rec.State, rec.LastError, len(msgs[a.DecisionID]), len(msgs[a.DecisionID+":end"]))
	}
	if c := recv.totalCalls(); c != 0 {
		t.Errorf("%d webhook calls, want none (the webhook never got the start)", c)
	}
	if ids := allowedIDs(t, kg.g); !slices.Contains(ids, a.DecisionID) || kg.cancelled.Load() != 0 {
		t.Errorf("allowed %v, %d given back: want its reservations kept (it may have acted)", ids, kg.cancelled.Load())
	}
}

// streamOrder returns the Nats-Msg-Id of the ACTIONS stream's messages in the stream's order.
func streamOrder(t *testing.T, js jetstream.JetStream) []string {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, "ACTIONS")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("get seq %d: %v", seq, err)
		}
		ids = append(ids, m.Header.Get(jetstream.MsgIDHeader))
	}
	return ids
}
