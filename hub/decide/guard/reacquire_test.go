package guard

import (
	"context"
	"sync"
	"testing"
	"time"
)

// A released decision (its action dead-lettered before any of it went out) reserves again as of
// now: refused while the cooldown or the kill switch stops it, and then still released and holding
// nothing; allowed once there is room, in today's ledgers, once across two replicas asking together,
// without asking for an approval again; a later Release gives back what it took.
func TestReacquire(t *testing.T) {
	g, c, js := single(t, nil)
	g2 := openGuard(t, js, testConfig(c), "r2")
	ctx := context.Background()
	p1 := promo(c, "r-a", "A", "web", 22) // above the approval threshold
	if v := mustCheck(t, g, p1); v.Outcome != NeedsApproval {
		t.Fatalf("p1: %+v", v)
	}
	if v, err := g.Approve(ctx, p1.ID, "bob", "ok"); err != nil || v.Outcome != Allow {
		t.Fatalf("approve: %+v %v", v, err)
	}
	if err := g.Release(ctx, p1.ID); err != nil {
		t.Fatal(err)
	}
	c.Add(30 * time.Hour) // the next day; p1's proposal is far older than max_skew
	p2 := promo(c, "r-b", "A", "web", 10)
	if v := mustCheck(t, g, p2); v.Outcome != Allow {
		t.Fatalf("p2: %+v", v)
	}
	today := g.day(c.Now())
	v, err := g.Reacquire(ctx, p1.ID)
	if err != nil || v.Outcome != Suppress || v.Guardrail != GCooldown {
		t.Fatalf("reacquire with A in cooldown: %+v %v, want suppressed by cooldown", v, err)
	}
	for _, k := range []string{coolKey("A", "web"), dayKey(today, "web"), dayKey(today, "")} {
		if l := ledgerOf(t, js, g.cfg.Bucket, k); l.has(p1.ID) {
			t.Errorf("refused reacquire left %s holding p1: %+v", k, l)
		}
	}
	if r := allRecords(t, js, g.cfg.Bucket)[p1.ID]; r.Status != string(Released) || r.Reacquiring {
		t.Errorf("after a refused reacquire: %s reacquiring=%v, want released", r.Status, r.Reacquiring)
	}
	if err := g.Release(ctx, p2.ID); err != nil {
		t.Fatal(err)
	}
	if err := g.SetKill(ctx, true, "ops", "audit"); err != nil {
		t.Fatal(err)
	}
	if v, err := g.Reacquire(ctx, p1.ID); err != nil || v.Outcome != Suppress || v.Guardrail != GKillSwitch {
		t.Fatalf("reacquire with the switch thrown: %+v %v", v, err)
	}
	if err := g.SetKill(ctx, false, "ops", "done"); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	vs := make([]Verdict, 2)
	errs := make([]error, 2)
	for i, gg := range []*Guard{g, g2} {
		wg.Go(func() { vs[i], errs[i] = gg.Reacquire(ctx, p1.ID) })
	}
	wg.Wait()
	for i := range vs {
		if errs[i] != nil || vs[i].Outcome != Allow || !vs[i].ActionTime.Equal(c.Now()) || vs[i].Approval == nil {
			t.Fatalf("replica %d: %+v %v, want allowed at now, the approval kept", i, vs[i], errs[i])
		}
	}
	for _, k := range []string{coolKey("A", "web"), dayKey(today, "web"), dayKey(today, "")} {
		if l := ledgerOf(t, js, g.cfg.Bucket, k); len(l.Entries) != 1 || !l.has(p1.ID) {
			t.Errorf("%s after the reacquire: %+v, want p1 once", k, l)
		}
	}
	if v := mustCheck(t, g, p1); v.Outcome != Allow {
		t.Errorf("p1 after the reacquire: %s", v.Outcome)
	}
	if err := g.Release(ctx, p1.ID); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{coolKey("A", "web"), dayKey(today, "web"), dayKey(today, "")} {
		if l := ledgerOf(t, js, g.cfg.Bucket, k); l.has(p1.ID) {
			t.Errorf("release after the reacquire left %s holding p1", k)
		}
	}
}
