package act

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/internal/natstest"
)

// Sweep removes done records a retention after they were done, and nothing pending.
func TestSweep(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := connect(t, n)
	o := open(t, js, testConfig(""))
	run(t, o)
	ctx := context.Background()
	h := hold("rs3:hold:sku-1:store:h20", "store")
	p := promo("rs3:promo:sku-2:store:h20", "store", time.Now().Add(24*time.Hour))
	for _, a := range []Action{h, p} {
		if _, err := o.Enqueue(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	waitState(t, o, h.DecisionID, Done, EventStart)
	waitState(t, o, p.DecisionID, Pending, EventEnd)
	if n, err := o.Sweep(ctx, time.Hour); err != nil || n != 0 {
		t.Fatalf("sweep now: %d, %v (nothing is an hour old)", n, err)
	}
	later := testConfig("")
	later.Now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	o2 := open(t, js, later)
	if n, err := o2.Sweep(ctx, time.Hour); err != nil || n != 1 {
		t.Fatalf("sweep two hours later: %d, %v (want the hold removed)", n, err)
	}
	if _, err := o.Get(ctx, h.DecisionID); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("swept hold: %v", err)
	}
	if rec, err := o.Get(ctx, p.DecisionID); err != nil || rec.State != Pending {
		t.Errorf("running promotion: %+v, %v (must stay)", rec, err)
	}
	if _, err := o.Sweep(ctx, 0); err == nil {
		t.Error("retention 0 accepted")
	}
}

// Cancel takes a decision's key before anything enqueued it: a later Enqueue is a no-op, nothing is
// delivered, and the sweep removes the record a retention later. After an Enqueue it changes nothing.
func TestCancel(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := connect(t, n)
	o := open(t, js, testConfig(""))
	run(t, o)
	ctx := context.Background()
	c := promo("rs3:promo:sku-1:store:h20", "store", time.Now().Add(time.Hour))
	if ok, err := o.Cancel(ctx, c, "released"); err != nil || !ok {
		t.Fatalf("cancel: %v %v", ok, err)
	}
	if fresh, err := o.Enqueue(ctx, c); err != nil || fresh {
		t.Fatalf("enqueue after cancel: fresh %v err %v (want a no-op)", fresh, err)
	}
	h := hold("rs3:hold:sku-2:store:h20", "store")
	if _, err := o.Enqueue(ctx, h); err != nil {
		t.Fatal(err)
	}
	if ok, err := o.Cancel(ctx, h, "released"); err != nil || ok {
		t.Fatalf("cancel after enqueue: %v %v (want false)", ok, err)
	}
	waitState(t, o, h.DecisionID, Done, EventStart)
	if msgs := streamMsgs(t, js, "ACTIONS"); len(msgs) != 1 || len(msgs[h.DecisionID]) != 1 {
		t.Fatalf("stream holds %v, want the hold only", msgs)
	}
	if rec, err := o.Get(ctx, c.DecisionID); err != nil || rec.State != Cancelled || rec.LastError != "released" {
		t.Fatalf("cancelled record %+v %v", rec, err)
	}
	later := testConfig("")
	later.Now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	if n, err := open(t, js, later).Sweep(ctx, time.Hour); err != nil || n != 2 {
		t.Fatalf("sweep two hours later: %d, %v (want the hold and the cancelled record)", n, err)
	}
}
