package guard

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestSweep: what can no longer matter is removed, what still can is kept, and a swept day is
// not re-opened by a late proposal (it is outside max_skew).
func TestSweep(t *testing.T) {
	g, c, js := single(t, nil)
	ctx := context.Background()
	old := promo(c, "r", "SKU-1", "retail", 10)
	queued := promo(c, "r", "SKU-2", "retail", 22)
	mustCheck(t, g, old)
	mustCheck(t, g, queued)
	c.Add(4 * 24 * time.Hour)
	fresh := promo(c, "r", "SKU-3", "retail", 10)
	if v := mustCheck(t, g, fresh); v.Outcome != Allow {
		t.Fatal(v)
	}
	n, err := g.Sweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	recs := allRecords(t, js, g.cfg.Bucket)
	if _, ok := recs[old.ID]; ok {
		t.Error("old decision kept")
	}
	if r := recs[queued.ID]; r == nil || r.Status != string(Expired) {
		t.Errorf("queued decision %+v, want expired", r)
	}
	if r := recs[fresh.ID]; r == nil || r.Status != string(Allow) {
		t.Errorf("fresh decision %+v", r)
	}
	if l := ledgerOf(t, js, g.cfg.Bucket, dayKey("2026-12-04", "")); len(l.Entries) != 0 {
		t.Errorf("old day kept: %+v", l)
	}
	if l := ledgerOf(t, js, g.cfg.Bucket, dayKey("2026-12-08", "")); len(l.Entries) != 1 {
		t.Errorf("today's day: %+v", l)
	}
	if l := ledgerOf(t, js, g.cfg.Bucket, coolKey("SKU-1", "retail")); len(l.Entries) != 0 {
		t.Errorf("old cooldown kept: %+v", l)
	}
	if l := ledgerOf(t, js, g.cfg.Bucket, coolKey("SKU-3", "retail")); len(l.Entries) != 1 {
		t.Errorf("fresh cooldown: %+v", l)
	}
	if n < 3 {
		t.Errorf("removed %d keys", n)
	}
	// The old proposal again: its record is gone, but it is days old and cannot act.
	if v := mustCheck(t, g, old); v.Outcome != Suppress || v.Guardrail != GTimeSkew {
		t.Errorf("late replay after sweep: %+v", v)
	}
}

// AllowedSince returns the decisions allowed at or after a time, as their records now stand: not
// those suppressed, released since, or deleted; and not those allowed earlier.
func TestAllowedSince(t *testing.T) {
	g, c, js := single(t, nil)
	ctx := context.Background()
	t0 := c.Now()
	allowed, suppressed, released := promo(c, "r", "SKU-1", "retail", 10), promo(c, "r", "SKU-2", "retail", 40), promo(c, "r", "SKU-3", "retail", 10)
	gone := promo(c, "r", "SKU-4", "retail", 10)
	for _, p := range []Proposal{allowed, suppressed, released, gone} {
		mustCheck(t, g, p)
	}
	if err := g.Release(ctx, released.ID); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, g.cfg.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, prefixDec+gone.ID); err != nil {
		t.Fatal(err)
	}
	c.Add(2 * time.Hour)
	later := promo(c, "r", "SKU-5", "retail", 10)
	mustCheck(t, g, later)
	ids := func(since time.Time) []string {
		got, err := g.AllowedSince(ctx, since)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, a := range got {
			out = append(out, a.Proposal.SKU)
		}
		return out
	}
	if got := fmt.Sprint(ids(t0.Add(-time.Minute))); got != "[SKU-1 SKU-5]" {
		t.Errorf("allowed since before the first: %s, want [SKU-1 SKU-5]", got)
	}
	if got := fmt.Sprint(ids(t0.Add(time.Hour))); got != "[SKU-5]" {
		t.Errorf("allowed since an hour later: %s, want [SKU-5]", got)
	}
	if got := ids(c.Now().Add(time.Minute)); len(got) != 0 {
		t.Errorf("allowed since after the last: %v", got)
	}
}

// TestSweepFinishesAbandonedClaim: a replica that stopped between its reservations and its verdict
// leaves a claim that only a Check of the same id would take over — and past max_skew that Check
// could only suppress it. Nothing checks it again once its time bucket is over: the sweep finishes
// it as that Check would, giving back the day's count and budget and the cooldown it held.
func TestSweepFinishesAbandonedClaim(t *testing.T) {
	g, c, js := single(t, nil)
	ctx := context.Background()
	p := promo(c, "r", "SKU-1", "retail", 10)
	dead := openGuard(t, js, g.cfg, "dead")
	if _, ok, err := dead.reserveCooldown(ctx, coolKey(p.SKU, p.Channel), p.ID, p.Time); err != nil || !ok {
		t.Fatal(ok, err)
	}
	if _, ok, err := dead.reserveDay(ctx, dayKey("2026-12-04", ""), p.ID, p.Time, 10, g.cfg.Daily, GDailyCount, GDailyBudget, "x"); err != nil || !ok {
		t.Fatal(ok, err)
	}
	kv, err := js.KeyValue(ctx, g.cfg.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	rec := record{Status: statusClaimed, Owner: "dead", Lease: c.Now().Add(g.cfg.ClaimLease), Created: c.Now(), Proposal: p}
	if _, err := kv.Create(ctx, prefixDec+p.ID, mustJSON(t, rec)); err != nil {
		t.Fatal(err)
	}
	// Within the lease the claim is its replica's.
	if _, err := g.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if r := allRecords(t, js, g.cfg.Bucket)[p.ID]; r == nil || r.Status != statusClaimed {
		t.Fatalf("claim within its lease: %+v", r)
	}
	c.Add(g.cfg.MaxSkew + time.Minute)
	if _, err := g.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if r := allRecords(t, js, g.cfg.Bucket)[p.ID]; r == nil || r.Status != string(Suppress) {
		t.Fatalf("abandoned claim after the sweep: %+v", r)
	}
	for _, k := range []string{coolKey(p.SKU, p.Channel), dayKey("2026-12-04", "")} {
		if l := ledgerOf(t, js, g.cfg.Bucket, k); len(l.Entries) != 0 {
			t.Errorf("%s still holds the abandoned decision: %+v", k, l)
		}
	}
}
