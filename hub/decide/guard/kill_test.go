package guard

import (
	"context"
	"fmt"
	"strings"
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

// TestKillEndLiveMark: a throw with end_live leaves a mark (who, when, why, a generation) that a
// reset and a throw without end_live keep and the next throw with end_live replaces; a switch
// thrown with end_live by an older hub (no mark) reads as its mark.
func TestKillEndLiveMark(t *testing.T) {
	g, c, js := single(t, nil)
	ctx := context.Background()
	read := func() KillSwitch {
		t.Helper()
		k, err := g.Kill(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	if k := read(); k.Mark != nil {
		t.Fatalf("never thrown: %+v", k)
	}
	if err := g.SetKillSwitch(ctx, KillSwitch{On: true, EndLive: true, By: "ops-anna", Reason: "wrong price list",
		Mark: &EndLiveMark{Gen: 9, By: "forged"}}); err != nil {
		t.Fatal(err)
	}
	thrown := c.Now().UTC()
	want := EndLiveMark{Gen: 1, By: "ops-anna", Reason: "wrong price list", At: thrown}
	if k := read(); !k.On || !k.EndLive || k.Mark == nil || *k.Mark != want {
		t.Fatalf("thrown with end_live: %+v, want mark %+v", k, want)
	}
	c.Add(time.Second)
	if err := g.SetKill(ctx, false, "ops-anna", "good decisions may go on"); err != nil {
		t.Fatal(err)
	}
	if k := read(); k.On || k.EndLive || k.Mark == nil || *k.Mark != want {
		t.Fatalf("reset: %+v, want the mark %+v kept", k, want)
	}
	c.Add(time.Minute)
	if err := g.SetKill(ctx, true, "ops-ben", "audit"); err != nil {
		t.Fatal(err)
	}
	if k := read(); !k.On || k.EndLive || k.Mark == nil || *k.Mark != want {
		t.Fatalf("thrown without end_live: %+v, want the mark %+v kept", k, want)
	}
	c.Add(time.Minute)
	if err := g.SetKillSwitch(ctx, KillSwitch{On: true, EndLive: true, By: "ops-ben", Reason: "second list"}); err != nil {
		t.Fatal(err)
	}
	want = EndLiveMark{Gen: 2, By: "ops-ben", Reason: "second list", At: c.Now().UTC()}
	if k := read(); k.Mark == nil || *k.Mark != want {
		t.Fatalf("thrown with end_live again: %+v, want mark %+v", k, want)
	}
	if s := want.String(); !strings.Contains(s, "kill switch thrown by ops-ben") || !strings.Contains(s, "second list") {
		t.Errorf("mark says %q", s)
	}

	// As an older hub wrote it: no mark.
	kv, err := js.KeyValue(ctx, g.cfg.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, keyKill, []byte(`{"on":true,"end_live":true,"by":"old","reason":"r","at":"2026-12-04T09:00:00Z"}`)); err != nil {
		t.Fatal(err)
	}
	old := EndLiveMark{By: "old", Reason: "r", At: time.Date(2026, 12, 4, 9, 0, 0, 0, time.UTC)}
	if k := read(); k.Mark == nil || *k.Mark != old {
		t.Fatalf("old value: %+v, want mark %+v", k, old)
	}
	if err := g.SetKill(ctx, false, "ops-anna", "reset"); err != nil {
		t.Fatal(err)
	}
	if k := read(); k.Mark == nil || *k.Mark != old {
		t.Fatalf("old value reset: %+v, want mark %+v kept", k, old)
	}
}
