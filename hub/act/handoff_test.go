package act

import (
	"context"
	"testing"
	"time"

	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

// While the replica's loop runs, Enqueue creates the record claimed by that loop, which delivers
// it from memory: the record's writes are the create, the publish mark and the done mark (no
// claim after a read), and it is published once. The bucket holds this one key, so its revision
// counts the writes (a watch would not: history 1 drops a revision a watcher has not read yet).
func TestEnqueueHandsOverToOwnLoop(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := connect(t, n)
	cfg := testConfig("")
	cfg.Owner = "A"
	o := open(t, js, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	run(t, o)
	testutil.WaitFor(t, 10*time.Second, "the loop taking records", func() bool {
		o.hand.mu.Lock()
		defer o.hand.mu.Unlock()
		return o.hand.running
	})
	a := hold("rs3:hold:sku-1:store:2026-12-04T21", "store")
	if fresh, err := o.Enqueue(ctx, a); err != nil || !fresh {
		t.Fatalf("enqueue: fresh %v err %v", fresh, err)
	}
	waitState(t, o, a.DecisionID, Done, EventStart)
	e, err := o.kv.Get(ctx, key(a.DecisionID))
	if err != nil {
		t.Fatal(err)
	}
	if e.Revision() != 3 {
		t.Fatalf("record at revision %d: want 3 writes (the create claimed by A, the publish mark, done)", e.Revision())
	}
	if c := streamCount(t, js, "ACTIONS"); c != 1 {
		t.Fatalf("stream holds %d messages, want 1", c)
	}
}

// A record created claimed by a replica that stops before delivering it is taken over by
// another loop once the lease has run out, and delivered once.
func TestHandedRecordTakenOverAfterLease(t *testing.T) {
	n := natstest.JetStream(t)
	_, jsA := connect(t, n)
	cfg := testConfig("")
	cfg.Lease, cfg.Owner = time.Second, "A"
	a := open(t, jsA, cfg)
	a.hand.open() // as a running loop would, but nothing takes the record: A stops here
	ctx := context.Background()
	act := hold("rs3:hold:sku-2:store:2026-12-04T21", "store")
	if _, err := a.Enqueue(ctx, act); err != nil {
		t.Fatal(err)
	}
	rec, err := a.Get(ctx, act.DecisionID)
	if err != nil || rec.Owner != "A" || rec.State != Pending {
		t.Fatalf("after enqueue: %+v, %v (want pending, claimed by A)", rec, err)
	}
	a.hand.close()

	_, jsB := connect(t, n)
	cfg.Owner = "B"
	b := open(t, jsB, cfg)
	run(t, b)
	rec = waitState(t, b, act.DecisionID, Done, EventStart)
	if rec.Owner != "" {
		t.Errorf("lease not released: %+v", rec)
	}
	if c := streamCount(t, jsB, "ACTIONS"); c != 1 {
		t.Errorf("stream holds %d messages, want 1", c)
	}
}
