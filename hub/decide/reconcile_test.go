package decide

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub/act"
	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/decide/guard"
	"github.com/gemba-io/gemba/hub/decide/rules"
	"github.com/gemba-io/gemba/hub/state/graph"
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

// failingAppend is the decision log with its next n appends refused, as an unreachable stream
// refuses them.
type failingAppend struct {
	Recorder
	mu sync.Mutex
	n  int
}

func (f *failingAppend) Append(ctx context.Context, rec audit.Record) (uint64, error) {
	f.mu.Lock()
	fail := f.n > 0
	f.n--
	f.mu.Unlock()
	if fail {
		return 0, errors.New("stream not answering")
	}
	return f.Recorder.Append(ctx, rec)
}

// Reconcile says an incomplete pass is retried at the next timer. A released record it could not
// write is written then: the decision log is the only trace of a decision the guard allowed and
// then gave back, and it was lost when the log refused the first append.
func TestReconcileReleasedRecordRetried(t *testing.T) {
	r := newRig(t, func(c *guard.Config) { c.Approval.Above = 0 })
	v := r.activate(testRules)
	now := r.clock()
	p := guard.Proposal{ID: guard.DecisionID(v, "promote-over", "B", "web", guard.TimeBucket(now, time.Hour)), RuleVersion: v,
		Rule: "promote-over", SKU: "B", Site: "s1", Channel: "web", Kind: guard.Promote, Discount: 10, Duration: guard.Duration(time.Hour), Time: now}
	if vb, err := r.guard.Check(r.ctx, p); err != nil || !vb.Acts() {
		t.Fatalf("check: %+v %v", vb, err)
	}
	// Another replica's engine, whose decision log refuses one append.
	cfg := DefaultConfig()
	cfg.Timer = time.Hour
	g, err := graph.Load([]byte(testGraph))
	if err != nil {
		t.Fatal(err)
	}
	rec := &failingAppend{Recorder: r.log, n: 1}
	b, err := New(cfg, Deps{Graph: g, State: r.state, Features: testDefs, Guard: r.guard, Outbox: r.outbox, Audit: rec, Replica: "r2", Now: r.clock})
	if err != nil {
		t.Fatal(err)
	}
	r.advance(5 * time.Minute)
	if _, _, err := b.reconcile(r.ctx); err == nil {
		t.Fatal("reconcile with the log refusing: no error")
	}
	if _, _, err := b.reconcile(r.ctx); err != nil {
		t.Fatalf("reconcile at the next timer: %v", err)
	}
	hist, err := r.log.History(r.ctx, p.ID)
	if err != nil || len(hist) != 1 || hist[0].Event != audit.EventReleased {
		t.Fatalf("history after the retry: %+v %v", hist, err)
	}
	if vb, err := r.guard.Check(r.ctx, p); err != nil || vb.Outcome != guard.Released {
		t.Errorf("verdict after reconcile: %+v %v", vb, err)
	}
}

// hookedGuard runs hook (once) when a Check replays an allowed verdict, before the engine records
// and enqueues it: the moment another replica's reconcile may look at the same decision.
type hookedGuard struct {
	Guard
	mu   sync.Mutex
	hook func(id string)
}

func (h *hookedGuard) Check(ctx context.Context, p guard.Proposal) (guard.Verdict, error) {
	v, err := h.Guard.Check(ctx, p)
	if err == nil && v.Replayed && v.Acts() {
		h.mu.Lock()
		f := h.hook
		h.hook = nil
		h.mu.Unlock()
		if f != nil {
			f(p.ID)
		}
	}
	return v, err
}

// A replica stopped after the guard allowed a decision and before recording it. Later in the same
// bucket one replica decides the same id again (the guard replays the allow) while another's
// reconcile finds nothing on the log nor in the outbox and releases it. One of them must win: the
// promotion delivered with its caps and cooldown given back would let the guard allow more than
// configured.
func TestReconcileReleaseRacesReplayedAllow(t *testing.T) {
	hg := &hookedGuard{}
	r := newRigWith(t, testGraph, func(c *guard.Config) { c.Approval.Above = 0 }, nil, func(g Guard) Guard { hg.Guard = g; return hg })
	// Early in an hour bucket, so that the decision and its replay share one.
	r.nowMu.Lock()
	r.now = guard.TimeBucket(r.now, time.Hour).Add(time.Minute)
	r.nowMu.Unlock()
	v := r.activate(testRules)
	now := r.clock()
	id := guard.DecisionID(v, "promote-over", "A", "web", guard.TimeBucket(now, time.Hour))
	p := guard.Proposal{ID: id, RuleVersion: v, Rule: "promote-over", SKU: "A", Site: "s1", Channel: "web", Kind: guard.Promote,
		Discount: 10, Duration: guard.Duration(24 * time.Hour), Time: now}
	if va, err := r.guard.Check(r.ctx, p); err != nil || !va.Acts() {
		t.Fatalf("check: %+v %v", va, err)
	}
	// The stopped replica recorded nothing more. Past the grace period, replica r2 reconciles just
	// as this engine replays the decision.
	cfg := DefaultConfig()
	cfg.Timer = time.Hour
	g, err := graph.Load([]byte(testGraph))
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(cfg, Deps{Graph: g, State: r.state, Features: testDefs, Guard: r.guard, Outbox: r.outbox, Audit: r.log, Replica: "r2", Now: r.clock})
	if err != nil {
		t.Fatal(err)
	}
	reconciled := make(chan error, 1)
	hg.mu.Lock()
	hg.hook = func(string) {
		_, _, err := b.reconcile(r.ctx)
		reconciled <- err
	}
	hg.mu.Unlock()
	r.advance(5 * time.Minute)
	r.overstocked("l1", "A")
	if err := <-reconciled; err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	testutil.WaitFor(t, 10*time.Second, "the retail promotion delivered", func() bool {
		for _, m := range r.actions() {
			if m.Channel == "retail" {
				return true
			}
		}
		return false
	})
	testutil.WaitFor(t, 10*time.Second, "the web decision's start settled in the outbox", func() bool {
		rec, err := r.outbox.Get(r.ctx, id)
		return err == nil && (rec.State != act.Pending || rec.Phase == act.EventEnd)
	})
	va, err := r.guard.Check(r.ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	delivered := 0
	for _, m := range r.actions() {
		if m.DecisionID == id {
			delivered++
		}
	}
	if va.Outcome == guard.Released && delivered > 0 {
		t.Fatalf("decision %s delivered %d time(s) and released by the guard (caps and cooldown given back)", id, delivered)
	}
	if va.Outcome != guard.Released && delivered != 1 {
		t.Fatalf("decision %s %s and delivered %d times", id, va.Outcome, delivered)
	}
}

// A replica stopped between the guard queuing a decision for approval and its decided record. The
// request is in the queue every replica reads, so their engines take the rule as already asking and
// never evaluate the id again — and without its record the request cannot be answered ("no
// decision record") until it expires. The same id in the same bucket is replayed and recorded.
func TestQueuedDecisionWithoutRecordAnswerable(t *testing.T) {
	r := newRig(t, nil)
	r.nowMu.Lock()
	r.now = guard.TimeBucket(r.now, time.Hour).Add(time.Minute)
	r.nowMu.Unlock()
	v := r.activate(strings.Replace(testRules, "discount: 10", "discount: 15", 1))
	now := r.clock()
	id := guard.DecisionID(v, "promote-over", "A", "web", guard.TimeBucket(now, time.Hour))
	p := guard.Proposal{ID: id, RuleVersion: v, Rule: "promote-over", SKU: "A", Site: "s1", Channel: "web", Kind: guard.Promote,
		Discount: 15, Duration: guard.Duration(24 * time.Hour), Time: now, Requester: "alice"}
	if vq, err := r.guard.Check(r.ctx, p); err != nil || vq.Outcome != guard.NeedsApproval {
		t.Fatalf("check: %+v %v", vq, err)
	}
	// The engine's timer reads the queue.
	pend, err := r.guard.Pending(r.ctx)
	if err != nil || len(pend) != 1 {
		t.Fatalf("pending %+v %v", pend, err)
	}
	r.eng.refreshQueue(pend)
	r.advance(time.Minute)
	r.overstocked("l1", "A")
	testutil.WaitFor(t, 10*time.Second, "the retail decision queued", func() bool {
		p, err := r.guard.Pending(r.ctx)
		return err == nil && len(p) == 2
	})
	testutil.WaitFor(t, 10*time.Second, "the web decision recorded", func() bool {
		h, err := r.log.History(r.ctx, id)
		return err == nil && len(h) == 1
	})
	ap := &Approver{Guard: r.guard, Audit: r.log, Outbox: r.outbox, Replica: "r1", Now: r.clock}
	if va, err := ap.Answer(r.ctx, id, "bob", "stock is real", true); err != nil || !va.Acts() {
		t.Fatalf("approve: %+v %v", va, err)
	}
	testutil.WaitFor(t, 10*time.Second, "the approved promotion", func() bool { return len(r.actions()) == 1 })
}

// A promotion whose record the delivery loop made cancelled as expired (its end passed before its
// start could go out) and whose reservations it is still giving back (a failed give-back, retried
// later) is the loop's to release: reconcile leaves it alone instead of releasing it with a note
// saying the deciding replica stopped, which would stand on the log in place of the loop's own
// (deduplicated on the decision id and event).
func TestReconcileLeavesExpiredGivingBack(t *testing.T) {
	r := newRig(t, func(c *guard.Config) { c.Approval.Above = 0 })
	p := r.allowPromo("promote-a", "A", false)
	v, err := r.guard.Check(r.ctx, p)
	if err != nil || v.Outcome != guard.Allow {
		t.Fatalf("check: %+v %v", v, err)
	}
	ra := rules.Action{Kind: rules.Promote, Channels: []string{"web"}, Discount: 10, Duration: time.Hour}
	if _, err := r.log.Append(r.ctx, audit.Record{DecisionID: p.ID, Event: audit.EventApproved, Outcome: audit.OutcomeFired,
		Mode: audit.ModeActive, Time: r.clock(), RuleSet: audit.RuleSetRef{Version: p.RuleVersion}, Rule: audit.RuleRef{Name: p.Rule},
		SKU: "A", Site: "s1", Channel: "web", Verdict: &v, Action: ra}); err != nil {
		t.Fatal(err)
	}
	// As expire leaves it when the give-back failed: cancelled, still to give back, at NextAt.
	now := r.clock()
	ob := act.Record{Action: Action(p, ra, v), State: act.Cancelled, Phase: act.EventStart, FirstAt: now, NextAt: now.Add(time.Hour),
		DoneAt: now, GiveBack: true, LastError: "expired: its end had passed when its start could go out; last error: maximum messages"}
	data, err := json.Marshal(ob)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := r.js.KeyValue(r.ctx, "GEMBA_ACT_OUTBOX")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(r.ctx, "a."+p.ID, data); err != nil {
		t.Fatal(err)
	}
	r.advance(5 * time.Minute)
	if n, m, err := r.eng.reconcile(r.ctx); err != nil || n+m != 0 {
		t.Errorf("reconcile: enqueued %d, released %d, %v; want the expired promotion left to its loop", n, m, err)
	}
	r.advance(2 * time.Hour) // the loop's retry of the give-back is due
	testutil.WaitFor(t, 10*time.Second, "given back by the loop", func() bool {
		ob, err := r.outbox.Get(r.ctx, p.ID)
		return err == nil && !ob.GiveBack && !ob.GivenBack.IsZero()
	})
	hist, err := r.log.History(r.ctx, p.ID)
	if err != nil || len(hist) != 2 || hist[1].Event != audit.EventReleased || !strings.Contains(hist[1].Note, "expired") ||
		strings.Contains(hist[1].Note, "replica stopped") {
		t.Fatalf("history %+v %v: want approved, then released as expired", hist, err)
	}
}
