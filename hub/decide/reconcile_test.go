package decide

import (
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
