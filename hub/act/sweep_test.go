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
