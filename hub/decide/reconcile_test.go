package decide

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/decide/guard"
	"github.com/gemba-io/gemba/hub/decide/rules"
	"github.com/gemba-io/gemba/internal/testutil"
)

// A replica that stops between the guard's allow and the outbox leaves a decision nothing
// delivers. Reconcile delivers it when its record is on the log, and releases it (never acting)
// when it is not; a decision still within the grace period is left to its replica.
func TestReconcileCompletesOrReleases(t *testing.T) {
	r := newRig(t, func(c *guard.Config) { c.Approval.Above = 0 })
	v := r.activate(testRules)
	now := r.clock()
	prop := func(sku string) guard.Proposal {
		return guard.Proposal{ID: guard.DecisionID(v, "promote-over", sku, "web", guard.TimeBucket(now, time.Hour)), RuleVersion: v,
			Rule: "promote-over", SKU: sku, Site: "s1", Channel: "web", Kind: guard.Promote, Discount: 10, Duration: guard.Duration(time.Hour), Time: now}
	}
	// Recorded, not enqueued.
	pa := prop("A")
	va, err := r.guard.Check(r.ctx, pa)
	if err != nil || !va.Acts() {
		t.Fatalf("check A: %+v %v", va, err)
	}
	rec := audit.Record{DecisionID: pa.ID, Event: audit.EventDecided, Outcome: audit.OutcomeFired, Mode: audit.ModeActive, Time: now,
		RuleSet: audit.RuleSetRef{Version: v}, Rule: audit.RuleRef{Name: pa.Rule}, SKU: "A", Site: "s1", Channel: "web", Verdict: &va,
		Action: rules.Action{Kind: rules.Promote, Channels: []string{"web"}, Discount: 10, Duration: time.Hour, Audience: "b2c"}}
	if _, err := r.log.Publish(r.ctx, rec, r.eng.Live().Change.Seq); err != nil {
		t.Fatal(err)
	}
	// Allowed only.
	pb := prop("B")
	if vb, err := r.guard.Check(r.ctx, pb); err != nil || !vb.Acts() {
		t.Fatalf("check B: %+v %v", vb, err)
	}

	if n, m, err := r.eng.reconcile(r.ctx); err != nil || n+m != 0 {
		t.Fatalf("within the grace period: enqueued %d, released %d, %v", n, m, err)
	}
	r.advance(5 * time.Minute)
	n, m, err := r.eng.reconcile(r.ctx)
	if err != nil || n != 1 || m != 1 {
		t.Fatalf("enqueued %d, released %d (want 1, 1): %v", n, m, err)
	}
	testutil.WaitFor(t, 10*time.Second, "A delivered", func() bool { return len(r.actions()) == 1 })
	if a := r.actions()[0]; a.DecisionID != pa.ID || a.Audience != "b2c" {
		t.Errorf("delivered %+v", a)
	}
	hist, err := r.log.History(r.ctx, pb.ID)
	if err != nil || len(hist) != 1 || hist[0].Event != audit.EventReleased {
		t.Errorf("B's history %+v %v", hist, err)
	}
	if vb, err := r.guard.Check(r.ctx, pb); err != nil || vb.Outcome != guard.Released {
		t.Errorf("B after reconcile: %+v %v", vb, err)
	}
	// Nothing left to do.
	if n, m, err := r.eng.reconcile(r.ctx); err != nil || n+m != 0 {
		t.Errorf("second pass: enqueued %d, released %d, %v", n, m, err)
	}
}

// An approval request nobody answers expires: the guard never acts on it, and the decision log
// says so beside its decided record.
func TestExpiredApprovalRecorded(t *testing.T) {
	r := newRig(t, func(c *guard.Config) { c.Approval.TTL = time.Hour })
	r.activate(strings.Replace(testRules, "discount: 10", "discount: 15", 1))
	r.overstocked("l1", "A")
	testutil.WaitFor(t, 10*time.Second, "two queued decisions", func() bool {
		p, err := r.guard.Pending(r.ctx)
		return err == nil && len(p) == 2
	})
	pend, _ := r.guard.Pending(r.ctx)
	if n, err := r.eng.expire(r.ctx); err != nil || n != 0 {
		t.Fatalf("before the ttl: %d expired, %v", n, err)
	}
	r.advance(2 * time.Hour)
	if n, err := r.eng.expire(r.ctx); err != nil || n != 2 {
		t.Fatalf("after the ttl: %d expired (want 2), %v", n, err)
	}
	for _, q := range pend {
		hist, err := r.log.History(r.ctx, q.Proposal.ID)
		if err != nil || len(hist) != 2 || hist[1].Event != audit.EventExpired || hist[1].Outcome != audit.OutcomeExpired {
			t.Errorf("history of %s: %+v %v", q.Proposal.ID, hist, err)
		}
	}
	if n := len(r.actions()); n != 0 {
		t.Errorf("%d actions from expired requests", n)
	}
}

// A replica that stopped while applying a person's answer leaves the decision neither pending nor
// decided; nobody sees it to answer again. The engine's timer gives the same answer again once its
// lease lapses: the approved record joins the decided one and the promotion is delivered, once.
func TestLapsedAnswerFinished(t *testing.T) {
	r := newRig(t, func(c *guard.Config) { c.Approval.TTL = time.Hour })
	r.activate(strings.Replace(testRules, "discount: 10", "discount: 15", 1))
	r.overstocked("l1", "A")
	testutil.WaitFor(t, 10*time.Second, "two queued decisions", func() bool {
		p, err := r.guard.Pending(r.ctx)
		return err == nil && len(p) == 2
	})
	pend, _ := r.guard.Pending(r.ctx)
	id := pend[0].Proposal.ID
	// What a replica leaves when it stops applying bob's approval: the record in status approving,
	// its lease held by the dead replica.
	kv, err := r.js.KeyValue(r.ctx, guard.DefaultConfig().Bucket)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(r.ctx, "dec."+id)
	if err != nil {
		t.Fatal(err)
	}
	var rec map[string]any
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		t.Fatal(err)
	}
	now := r.clock()
	rec["status"], rec["owner"], rec["lease"] = "approving", "dead", now.Add(time.Second)
	rec["approving"] = guard.Approval{By: "bob", Reason: "stock is high", At: now, Approved: true}
	b, _ := json.Marshal(rec)
	if _, err := kv.Update(r.ctx, "dec."+id, b, e.Revision()); err != nil {
		t.Fatal(err)
	}
	if n, err := r.eng.expire(r.ctx); err != nil || n != 0 {
		t.Fatalf("within the lease: %d reported, %v", n, err)
	}
	r.advance(2 * time.Second)
	if n, err := r.eng.expire(r.ctx); err != nil || n != 1 {
		t.Fatalf("after the lease: %d reported (want 1), %v", n, err)
	}
	hist, err := r.log.History(r.ctx, id)
	if err != nil || len(hist) != 2 || hist[1].Event != audit.EventApproved || hist[1].Outcome != audit.OutcomeFired ||
		!strings.Contains(hist[1].Note, "bob") {
		t.Fatalf("history of %s: %+v %v", id, hist, err)
	}
	testutil.WaitFor(t, 10*time.Second, "the approved promotion delivered", func() bool { return len(r.actions()) == 1 })
	if n, err := r.eng.expire(r.ctx); err != nil || n != 0 {
		t.Fatalf("again: %d reported, %v", n, err)
	}
	if p, err := r.guard.Pending(r.ctx); err != nil || len(p) != 1 || p[0].Proposal.ID == id {
		t.Fatalf("pending after: %+v %v", p, err)
	}
	if n := len(r.actions()); n != 1 {
		t.Fatalf("%d actions, want 1", n)
	}
}
