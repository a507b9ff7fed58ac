package guard

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

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
	// The kill switch is checked again too: while thrown the approval is refused (the request
	// waits; TestApprovalRefusedWhileKilled).
	q := promo(c, "r", "SKU-2", "retail", 22)
	mustCheck(t, g, q)
	if err := g.SetKill(ctx, true, "ops", ""); err != nil {
		t.Fatal(err)
	}
	if v, err := g.Approve(ctx, q.ID, "bob", ""); !errors.Is(err, ErrKilled) {
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

// TestExpiryReportedWhoeverRecordsIt: a request that expired is reported by Expire (which the
// engine turns into the decision log's expired record) whichever call noticed the expiry first:
// a listing of the queue (the API, the console), an approval that came too late, or the sweep.
func TestExpiryReportedWhoeverRecordsIt(t *testing.T) {
	g, c, _ := single(t, nil)
	ctx := context.Background()
	listed, late := promo(c, "r", "SKU-1", "retail", 22), promo(c, "r", "SKU-2", "retail", 22)
	mustCheck(t, g, listed)
	mustCheck(t, g, late)
	c.Add(time.Hour + time.Second)
	if _, err := g.Approve(ctx, late.ID, "bob", ""); !errors.Is(err, ErrExpired) {
		t.Fatalf("approve after expiry: %v", err)
	}
	if pending, err := g.Pending(ctx); err != nil || len(pending) != 0 {
		t.Fatalf("pending %+v %v", pending, err)
	}
	swept := promo(c, "r", "SKU-3", "retail", 22)
	mustCheck(t, g, swept)
	c.Add(time.Hour + time.Second)
	if _, err := g.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	// A report that fails (the caller could not write its record) leaves the request queued: it is
	// reported again at the next call.
	failed := errors.New("decision log unavailable")
	n, err := g.Expire(ctx, func(Request) error { return failed })
	if !errors.Is(err, failed) || n != 0 {
		t.Fatalf("expire with failing reports: %d, %v", n, err)
	}
	got := map[string]bool{}
	n, err = g.Expire(ctx, func(q Request) error {
		if q.Verdict.Outcome != Expired || q.Lapsed != nil {
			t.Errorf("%s reported %s (lapsed %v)", q.Proposal.ID, q.Verdict.Outcome, q.Lapsed)
		}
		got[q.Proposal.ID] = true
		return nil
	})
	if err != nil || n != 3 {
		t.Fatalf("expire: %d, %v", n, err)
	}
	for _, p := range []Proposal{listed, late, swept} {
		if !got[p.ID] {
			t.Errorf("expired request %s (%s) not reported by Expire", p.ID, p.SKU)
		}
	}
	// Reported once: the next Expire has nothing more.
	if again, err := g.Expire(ctx, func(q Request) error {
		t.Errorf("%s reported again", q.Proposal.ID)
		return nil
	}); err != nil || again != 0 {
		t.Fatalf("expire again %d %v", again, err)
	}
}

// TestRejectOfALapsedApproval: a replica died while applying bob's approval; carol's rejection
// that comes after finishes bob's approval (it won), but is refused: a rejection never acts, and
// the caller must not record an allowed decision as rejected.
func TestRejectOfALapsedApproval(t *testing.T) {
	g, c, js := single(t, nil)
	ctx := context.Background()
	p := promo(c, "r", "SKU-1", "retail", 22)
	mustCheck(t, g, p)
	leaveApproving(t, g, js, c, p, time.Second)
	c.Add(2 * time.Second)
	if v, err := g.Reject(ctx, p.ID, "carol", "no"); !errors.Is(err, ErrState) {
		t.Fatalf("reject of a decision bob approved: %s by %+v, %v", v.Outcome, v.Approval, err)
	}
	if got := mustCheck(t, g, p); got.Outcome != Allow || got.Approval == nil || got.Approval.By != "bob" {
		t.Fatalf("bob's approval not applied: %+v", got)
	}
	// Bob repeating his answer gets his verdict.
	if v, err := g.Approve(ctx, p.ID, "bob", ""); err != nil || v.Outcome != Allow {
		t.Fatalf("bob again: %+v %v", v, err)
	}
}

// TestLapsedApprovalFinished: a replica died while applying an approval and nobody answers again
// (the request is no longer listed as pending): the reconciler's Expire takes the approval over
// once its lease lapses and records its verdict, rather than leaving it neither pending, decided
// nor expired for good.
func TestLapsedApprovalFinished(t *testing.T) {
	g, c, js := single(t, nil)
	ctx := context.Background()
	p := promo(c, "r", "SKU-1", "retail", 22)
	mustCheck(t, g, p)
	kv := leaveApproving(t, g, js, c, p, 30*time.Second)
	// While the lease holds, the approval is the dead replica's to finish.
	var lapsed []Request
	collect := func(q Request) error { lapsed = append(lapsed, q); return nil }
	if _, err := g.Expire(ctx, collect); err != nil || len(lapsed) != 0 {
		t.Fatalf("live approval reported: %+v %v", lapsed, err)
	}
	if r := allRecords(t, js, g.cfg.Bucket)[p.ID]; r.Status != statusApproving {
		t.Fatalf("live approval touched: %+v", r)
	}
	c.Add(31 * time.Second)
	if _, err := g.Expire(ctx, collect); err != nil || len(lapsed) != 1 || lapsed[0].Lapsed == nil ||
		lapsed[0].Lapsed.By != "bob" || !lapsed[0].Lapsed.Approved || lapsed[0].Proposal.ID != p.ID {
		t.Fatalf("lapsed approval reported as %+v, %v", lapsed, err)
	}
	// The caller (the engine) gives bob's answer again: the approval is finished and recorded.
	if v, err := g.Approve(ctx, p.ID, lapsed[0].Lapsed.By, lapsed[0].Lapsed.Reason); err != nil || v.Outcome != Allow {
		t.Fatalf("bob's answer given again: %+v %v", v, err)
	}
	r := allRecords(t, js, g.cfg.Bucket)[p.ID]
	if r.Status != string(Allow) || r.Verdict.Approval == nil || r.Verdict.Approval.By != "bob" {
		t.Fatalf("lapsed approval not finished: %s %+v", r.Status, r.Verdict)
	}
	if _, err := kv.Get(ctx, prefixQueue+p.ID); err == nil {
		t.Fatal("queue entry of a decided request kept")
	}
}

// TestLapsedApprovalSuppressReleases: a replica died while applying an approval, after reserving
// the cooldown and the day; the approval taken over is now suppressed (the kill switch was thrown)
// and gives back what the dead replica reserved.
func TestLapsedApprovalSuppressReleases(t *testing.T) {
	g, c, js := single(t, nil)
	ctx := context.Background()
	p := promo(c, "r", "SKU-1", "retail", 22)
	mustCheck(t, g, p)
	leaveApproving(t, g, js, c, p, time.Second)
	dead := openGuard(t, js, g.cfg, "dead")
	if _, ok, err := dead.reserveCooldown(ctx, coolKey(p.SKU, p.Channel), p.ID, c.Now()); err != nil || !ok {
		t.Fatal(ok, err)
	}
	if _, ok, err := dead.reserveDay(ctx, dayKey("2026-12-04", ""), p.ID, c.Now(), 22, g.cfg.Daily, GDailyCount, GDailyBudget, "x"); err != nil || !ok {
		t.Fatal(ok, err)
	}
	if err := g.SetKill(ctx, true, "ops", "stop"); err != nil {
		t.Fatal(err)
	}
	c.Add(2 * time.Second)
	if v, err := g.Approve(ctx, p.ID, "bob", ""); err != nil || v.Outcome != Suppress || v.Guardrail != GKillSwitch {
		t.Fatalf("%+v %v", v, err)
	}
	for _, k := range []string{coolKey(p.SKU, p.Channel), dayKey("2026-12-04", "")} {
		if l := ledgerOf(t, js, g.cfg.Bucket, k); len(l.Entries) != 0 {
			t.Errorf("%s still holds %+v", k, l)
		}
	}
}

// leaveApproving leaves p's record as a replica that stopped while applying bob's approval leaves
// it: status approving, its lease (held by "dead") running for lease more; it returns the bucket.
func leaveApproving(t *testing.T, g *Guard, js jetstream.JetStream, c *clock, p Proposal, lease time.Duration) jetstream.KeyValue {
	t.Helper()
	ctx := context.Background()
	kv, err := js.KeyValue(ctx, g.cfg.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, prefixDec+p.ID)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := decodeRecord(p.ID, e.Value())
	if err != nil {
		t.Fatal(err)
	}
	rec.Status, rec.Owner, rec.Lease = statusApproving, "dead", c.Now().Add(lease)
	rec.Approving = &Approval{By: "bob", At: c.Now(), Approved: true}
	if _, err := kv.Update(ctx, prefixDec+p.ID, mustJSON(t, rec), e.Revision()); err != nil {
		t.Fatal(err)
	}
	return kv
}

// An approval while the kill switch is thrown is refused and the request stays queued: approved
// then, it would be recorded as a kill suppression, leave the queue, and not be asked again in its
// time bucket. A rejection is taken (it never acts). After the reset the approval acts.
func TestApprovalRefusedWhileKilled(t *testing.T) {
	g, c, _ := single(t, nil)
	ctx := context.Background()
	p := promo(c, "r", "SKU-1", "retail", 22)
	q := promo(c, "r", "SKU-2", "retail", 22)
	mustCheck(t, g, p)
	mustCheck(t, g, q)
	if err := g.SetKill(ctx, true, "ops", "bad feed"); err != nil {
		t.Fatal(err)
	}
	v, err := g.Approve(ctx, p.ID, "bob", "stock is high")
	if !errors.Is(err, ErrKilled) || !strings.Contains(fmt.Sprint(err), "ops") {
		t.Fatalf("approve while killed: %+v %v, want ErrKilled naming who threw it", v, err)
	}
	if pending, err := g.Pending(ctx); err != nil || len(pending) != 2 {
		t.Fatalf("pending while killed: %d %v, want both still queued", len(pending), err)
	}
	if v, err := g.Reject(ctx, q.ID, "bob", "no"); err != nil || v.Outcome != Rejected {
		t.Fatalf("reject while killed: %+v %v", v, err)
	}
	if err := g.SetKill(ctx, false, "ops", "fixed"); err != nil {
		t.Fatal(err)
	}
	if v, err := g.Approve(ctx, p.ID, "bob", "stock is high"); err != nil || v.Outcome != Allow {
		t.Fatalf("approve after the reset: %+v %v", v, err)
	}
}
