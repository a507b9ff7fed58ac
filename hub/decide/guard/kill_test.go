package guard

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

// TestKillSwitchAcrossReplicas: thrown on one replica, it stops allows on another within a second,
// and every later decision there is suppressed until it is reset.
func TestKillSwitchAcrossReplicas(t *testing.T) {
	n := natstest.JetStream(t)
	c := newClock()
	cfg := testConfig(c)
	cfg.Daily = Caps{}
	cfg.Cooldown = 0
	_, jsA := natstest.Connect(t, n.URL())
	_, jsB := natstest.Connect(t, n.URL())
	a, b := openGuard(t, jsA, cfg, "a"), openGuard(t, jsB, cfg, "b")
	ctx := context.Background()
	i := 0
	next := func() Verdict {
		i++
		return mustCheck(t, b, promo(c, "r", fmt.Sprintf("SKU-%d", i), "retail", 10))
	}
	if v := next(); v.Outcome != Allow {
		t.Fatalf("before: %+v", v)
	}
	if err := a.SetKill(ctx, true, "ops-anna", "bad feed"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, time.Second, "replica b suppressing", func() bool { return next().Outcome == Suppress })
	for range 20 {
		if v := next(); v.Outcome != Suppress || v.Guardrail != GKillSwitch || v.Reason == "" {
			t.Fatalf("after the switch: %+v", v)
		}
	}
	k, err := b.Kill(ctx)
	if err != nil || !k.On || k.By != "ops-anna" || k.Reason != "bad feed" {
		t.Fatalf("kill %+v %v", k, err)
	}
	if err := b.SetKill(ctx, false, "ops-anna", "fixed"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, time.Second, "replica a allowing again", func() bool {
		i++
		return mustCheck(t, a, promo(c, "r", fmt.Sprintf("SKU-%d", i), "retail", 10)).Outcome == Allow
	})
}

// TestKillSwitchUnreadable: a kill value nobody can decode counts as thrown.
func TestKillSwitchUnreadable(t *testing.T) {
	g, c, js := single(t, nil)
	kv, err := js.KeyValue(context.Background(), g.cfg.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(context.Background(), keyKill, []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	if v := mustCheck(t, g, promo(c, "r", "SKU-1", "retail", 10)); v.Outcome != Suppress || v.Guardrail != GKillSwitch {
		t.Fatalf("%+v", v)
	}
}

// TestKillSuppressionNotFinal: a decision the kill switch suppressed is decided again by a later
// Check once the switch is reset, in the same time bucket (round 1), once across two replicas
// checking together; while the switch stays thrown it is replayed. Any other suppression is final.
func TestKillSuppressionNotFinal(t *testing.T) {
	n := natstest.JetStream(t)
	c := newClock()
	cfg := testConfig(c)
	_, jsA := natstest.Connect(t, n.URL())
	_, jsB := natstest.Connect(t, n.URL())
	a, b := openGuard(t, jsA, cfg, "a"), openGuard(t, jsB, cfg, "b")
	ctx := context.Background()
	if err := a.SetKill(ctx, true, "ops-anna", "bad feed"); err != nil {
		t.Fatal(err)
	}
	p := promo(c, "r", "SKU-1", "retail", 10)
	if v := mustCheck(t, a, p); v.Outcome != Suppress || v.Guardrail != GKillSwitch || v.Round != 0 {
		t.Fatalf("switch thrown: %+v", v)
	}
	c.Add(time.Minute)
	p2 := p
	p2.Time = c.Now()
	if v := mustCheck(t, b, p2); v.Outcome != Suppress || !v.Replayed {
		t.Fatalf("switch still thrown: %+v, want the suppression replayed", v)
	}
	if err := a.SetKill(ctx, false, "ops-anna", "feed fixed"); err != nil {
		t.Fatal(err)
	}
	c.Add(time.Minute)
	p3 := p
	p3.Time = c.Now()
	vs := make(chan Verdict, 2)
	for _, g := range []*Guard{a, b} {
		go func() {
			v, err := g.Check(ctx, p3)
			if err != nil {
				t.Error(err)
			}
			vs <- v
		}()
	}
	v1, v2 := <-vs, <-vs
	if v1.Outcome != Allow || v2.Outcome != Allow || v1.Replayed == v2.Replayed || v1.Round != 1 || v2.Round != 1 {
		t.Fatalf("after the reset: %+v and %+v; want one decision allowed in round 1, the other replayed", v1, v2)
	}
	if l := ledgerOf(t, jsA, cfg.Bucket, coolKey("SKU-1", "retail")); len(l.Entries) != 1 {
		t.Errorf("cooldown ledger %+v, want the decision once", l)
	}
	if v := mustCheck(t, a, p3); v.Outcome != Allow || !v.Replayed {
		t.Errorf("later check: %+v", v)
	}

	// Suppressed by another guardrail: final, reset or not.
	q := promo(c, "r", "SKU-2", "retail", 90) // above max_discount
	if v := mustCheck(t, a, q); v.Outcome != Suppress || v.Guardrail == GKillSwitch {
		t.Fatalf("%+v", v)
	}
	q.Discount = 10
	if v := mustCheck(t, b, q); v.Outcome != Suppress || !v.Replayed {
		t.Errorf("a suppression by %s decided again: %+v", GMaxDiscount, v)
	}
}
