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
