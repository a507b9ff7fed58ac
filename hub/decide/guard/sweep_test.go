package guard

import (
	"context"
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
