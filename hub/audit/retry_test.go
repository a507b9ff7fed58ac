package audit

import (
	"context"
	"testing"
	"time"

	"github.com/gemba-io/gemba/internal/natstest"
)

// resendScenario: a record or a change sent again after its answer was lost (the caller saw an
// error, the server had stored it) is a duplicate whose sequence comes back — also when a rules
// change landed in between. One server checks the expected sequence before the message id, a
// replicated stream the id first: both must answer the same.
func resendScenario(t *testing.T, l *Log) {
	ctx := context.Background()
	s1, err := l.RecordChange(ctx, Change{Op: OpActivate, Active: "v1", By: "a"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	rec := record(1, EventDecided, OutcomeFired)
	seq, err := l.Publish(ctx, rec, s1)
	if err != nil {
		t.Fatal(err)
	}
	// A rollback lands before the decider sends its (stored) record again.
	at := time.Date(2026, 12, 5, 9, 0, 0, 0, time.UTC)
	change := Change{Op: OpRollback, Active: "v0", From: "v1", To: "v0", By: "b", Why: "bad", At: at}
	s2, err := l.RecordChange(ctx, change, s1)
	if err != nil {
		t.Fatal(err)
	}
	again, err := l.Publish(ctx, rec, s1)
	if err != nil || again != seq {
		t.Fatalf("stored record sent again after a rules change: seq %d err %v, want the duplicate's seq %d", again, err, seq)
	}
	// The same change sent again (same content, same expected state): its sequence, no conflict.
	again, err = l.RecordChange(ctx, change, s1)
	if err != nil || again != s2 {
		t.Fatalf("stored change sent again: seq %d err %v, want the duplicate's seq %d", again, err, s2)
	}
	// A different change from the same state still conflicts, and a record under the old rules
	// never sent before is still fenced.
	if _, err := l.RecordChange(ctx, Change{Op: OpActivate, Active: "v2", By: "c", At: at}, s1); err == nil {
		t.Fatal("a different change computed from a replaced state landed")
	}
	if _, err := l.Publish(ctx, record(2, EventDecided, OutcomeFired), s1); err == nil {
		t.Fatal("a new record under replaced rules was stored")
	}
	cs, err := l.Changes(ctx)
	if err != nil || len(cs) != 2 {
		t.Fatalf("changes %+v %v, want 2", cs, err)
	}
	if h, err := l.History(ctx, id(1)); err != nil || len(h) != 1 {
		t.Fatalf("history %+v %v, want one record", h, err)
	}
	st, err := l.stream.Info(ctx)
	if err != nil || st.State.Msgs != 3 {
		t.Fatalf("stream holds %v messages (%v), want 3", st.State.Msgs, err)
	}
}

func TestResendIsDuplicateSingleServer(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	resendScenario(t, openLog(t, js, 1))
}

func TestResendIsDuplicateClusterR3(t *testing.T) {
	nodes := natstest.Cluster(t, 3)
	_, js := natstest.Connect(t, natstest.URLs(nodes...))
	resendScenario(t, openLog(t, js, 3))
}

// A message on the rules subject that is not a change (someone's `nats pub`, a newer hub's op)
// must not wedge the rules: Current still answers, with the last change that decodes, at a
// sequence a new change can be computed from; that change lands and is the state again.
func TestCurrentPastMalformedChange(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	l := openLog(t, js, 1)
	ctx := context.Background()
	s1, err := l.RecordChange(ctx, Change{Op: OpActivate, Active: "v1", Previous: []string{"v0"}, By: "a"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	ack, err := js.Publish(ctx, l.cfg.RulesSubject(), []byte(`{"op":"pause","by":"newer-hub"}`))
	if err != nil {
		t.Fatal(err)
	}
	cur, err := l.Current(ctx)
	if err != nil {
		t.Fatalf("current after a malformed change: %v", err)
	}
	if cur.Active != "v1" || len(cur.Previous) != 1 || cur.Seq != ack.Sequence {
		t.Fatalf("current = %+v; want v1's state at the malformed message's seq %d (change %d)", cur, ack.Sequence, s1)
	}
	if l.Stats.Malformed.Load() == 0 {
		t.Fatal("the malformed change was not counted")
	}
	s3, err := l.RecordChange(ctx, Change{Op: OpRollback, Active: "v0", By: "b"}, cur.Seq)
	if err != nil {
		t.Fatalf("a change computed from the current state: %v", err)
	}
	if cur, err = l.Current(ctx); err != nil || cur.Seq != s3 || cur.Active != "v0" {
		t.Fatalf("current after the change = %+v, %v; want v0 at %d", cur, err, s3)
	}
	// Only garbage: no change yet, at the garbage's sequence.
	n2 := natstest.JetStream(t)
	_, js2 := natstest.Connect(t, n2.URL())
	l2 := openLog(t, js2, 1)
	ack, err = js2.Publish(ctx, l2.cfg.RulesSubject(), []byte(`not json`))
	if err != nil {
		t.Fatal(err)
	}
	if cur, err = l2.Current(ctx); err != nil || cur.Seq != ack.Sequence || cur.Active != "" {
		t.Fatalf("current with only a malformed change = %+v, %v", cur, err)
	}
}
