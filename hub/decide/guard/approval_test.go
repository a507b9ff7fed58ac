package guard

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/gemba-io/gemba/internal/natstest"
)

func TestApprovalQueue(t *testing.T) {
	g, c, js := single(t, nil)
	ctx := context.Background()
	p := promo(c, "r", "SKU-1", "retail", 22)
	v := mustCheck(t, g, p)
	if v.Outcome != NeedsApproval {
		t.Fatalf("%+v", v)
	}
	if again := mustCheck(t, g, p); again.Outcome != NeedsApproval || !again.Replayed {
		t.Fatalf("again %+v", again)
	}
	pending, err := g.Pending(ctx)
	if err != nil || len(pending) != 1 || pending[0].Proposal.ID != p.ID || !pending[0].Expires.Equal(c.Now().Add(time.Hour)) {
		t.Fatalf("pending %+v %v", pending, err)
	}
	// Nothing is consumed while it waits.
	if l := ledgerOf(t, js, g.cfg.Bucket, dayKey("2026-12-04", "")); len(l.Entries) != 0 {
		t.Fatalf("queued decision consumed %+v", l)
	}
	if _, err := g.Approve(ctx, p.ID, "alice", "mine"); !errors.Is(err, ErrSelfApproval) {
		t.Fatalf("self approval: %v", err)
	}
	c.Add(10 * time.Minute)
	v, err = g.Approve(ctx, p.ID, "bob", "stock is high")
	if err != nil || v.Outcome != Allow || v.Approval == nil || v.Approval.By != "bob" || !v.ActionTime.Equal(c.Now()) {
		t.Fatalf("approve: %+v %v", v, err)
	}
	if got := mustCheck(t, g, p); got.Outcome != Allow || got.Approval.By != "bob" {
		t.Fatalf("check after approval: %+v", got)
	}
	if l := ledgerOf(t, js, g.cfg.Bucket, dayKey("2026-12-04", "")); len(l.Entries) != 1 || l.budget() != 22 {
		t.Fatalf("approved decision not counted: %+v", l)
	}
	if _, err := g.Approve(ctx, p.ID, "carol", ""); !errors.Is(err, ErrState) {
		t.Fatalf("second approval: %v", err)
	}
	if _, err := g.Reject(ctx, p.ID, "carol", ""); !errors.Is(err, ErrState) {
		t.Fatalf("reject after approval: %v", err)
	}
	if pending, err := g.Pending(ctx); err != nil || len(pending) != 0 {
		t.Fatalf("pending after approval %+v %v", pending, err)
	}
}

func TestApprovalSelfAllowedWhenConfigured(t *testing.T) {
	g, c, _ := single(t, func(cfg *Config) { cfg.Approval.ForbidSelf = false })
	p := promo(c, "r", "SKU-1", "retail", 22)
	mustCheck(t, g, p)
	if v, err := g.Approve(context.Background(), p.ID, "alice", ""); err != nil || v.Outcome != Allow {
		t.Fatalf("%+v %v", v, err)
	}
}

// TestApprovalRechecksCaps: the budget spent while the request waited suppresses the approval.
func TestApprovalRechecksCaps(t *testing.T) {
	g, c, _ := single(t, func(cfg *Config) { cfg.Daily.MaxBudget = 40 })
	ctx := context.Background()
	p := promo(c, "r", "SKU-1", "retail", 22)
	mustCheck(t, g, p)
	for _, s := range []string{"A", "B"} {
		if v := mustCheck(t, g, promo(c, "r", s, "retail", 10)); v.Outcome != Allow {
			t.Fatal(v)
		}
	}
	v, err := g.Approve(ctx, p.ID, "bob", "")
	if err != nil || v.Outcome != Suppress || v.Guardrail != GDailyBudget || v.Approval == nil || v.Approval.By != "bob" {
		t.Fatalf("%+v %v", v, err)
	}
	// The kill switch is checked again too.
	q := promo(c, "r", "SKU-2", "retail", 22)
	mustCheck(t, g, q)
	if err := g.SetKill(ctx, true, "ops", ""); err != nil {
		t.Fatal(err)
	}
	if v, err := g.Approve(ctx, q.ID, "bob", ""); err != nil || v.Outcome != Suppress || v.Guardrail != GKillSwitch {
		t.Fatalf("%+v %v", v, err)
	}
}

func TestRejectAndExpiry(t *testing.T) {
	g, c, _ := single(t, nil)
	ctx := context.Background()
	p := promo(c, "r", "SKU-1", "retail", 22)
	q := promo(c, "r", "SKU-2", "retail", 22)
	mustCheck(t, g, p)
	mustCheck(t, g, q)
	v, err := g.Reject(ctx, p.ID, "alice", "not now")
	if err != nil || v.Outcome != Rejected || v.Approval.By != "alice" || v.Approval.Approved {
		t.Fatalf("reject %+v %v", v, err)
	}
	if got := mustCheck(t, g, p); got.Outcome != Rejected {
		t.Fatalf("%+v", got)
	}
	c.Add(time.Hour + time.Second)
	if _, err := g.Approve(ctx, q.ID, "bob", ""); !errors.Is(err, ErrExpired) {
		t.Fatalf("approve after expiry: %v", err)
	}
	if got := mustCheck(t, g, q); got.Outcome != Expired {
		t.Fatalf("%+v", got)
	}
	if pending, err := g.Pending(ctx); err != nil || len(pending) != 0 {
		t.Fatalf("pending %+v %v", pending, err)
	}
	if _, err := g.Approve(ctx, DecisionID("a", "b", "c", "d", c.Now()), "bob", ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown: %v", err)
	}
}

func TestPendingExpiresLazily(t *testing.T) {
	g, c, _ := single(t, nil)
	ctx := context.Background()
	p := promo(c, "r", "SKU-1", "retail", 22)
	mustCheck(t, g, p)
	c.Add(30 * time.Minute)
	q := promo(c, "r", "SKU-2", "retail", 22)
	mustCheck(t, g, q)
	c.Add(31 * time.Minute)
	pending, err := g.Pending(ctx)
	if err != nil || len(pending) != 1 || pending[0].Proposal.ID != q.ID {
		t.Fatalf("%+v %v", pending, err)
	}
	if got := mustCheck(t, g, p); got.Outcome != Expired {
		t.Fatalf("%+v", got)
	}
}

// TestConcurrentApprovals: two approvers on two replicas at once: one approval takes effect.
func TestConcurrentApprovals(t *testing.T) {
	n := natstest.JetStream(t)
	c := newClock()
	cfg := testConfig(c)
	cfg.Daily = Caps{MaxPromotions: 100}
	_, jsA := natstest.Connect(t, n.URL())
	_, jsB := natstest.Connect(t, n.URL())
	a, b := openGuard(t, jsA, cfg, "a"), openGuard(t, jsB, cfg, "b")
	for i := range 10 {
		p := promo(c, "r", "SKU-"+string(rune('A'+i)), "retail", 22)
		mustCheck(t, a, p)
		var wg sync.WaitGroup
		var oks, states int
		var mu sync.Mutex
		for k, g := range []*Guard{a, b, a, b} {
			wg.Go(func() {
				v, err := g.Approve(context.Background(), p.ID, []string{"bob", "carol", "dave", "erin"}[k], "")
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil && v.Outcome == Allow:
					oks++
				case errors.Is(err, ErrState):
					states++
				default:
					t.Errorf("approve: %+v %v", v, err)
				}
			})
		}
		wg.Wait()
		if oks != 1 || states != 3 {
			t.Fatalf("decision %d: %d approvals took effect, %d refused", i, oks, states)
		}
		c.Add(time.Minute)
	}
}
