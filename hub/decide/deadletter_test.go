package decide

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub/act"
	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/decide/guard"
	"github.com/gemba-io/gemba/hub/decide/rules"
	"github.com/gemba-io/gemba/internal/testutil"
)

// maxMsgSize sets the ACTIONS stream's max_msg_size: a small one makes every publish on it fail
// for good (dead-lettered at its first attempt, before anything went out); -1 lifts it.
func (r *rig) maxMsgSize(n int32) {
	r.t.Helper()
	s, err := r.js.Stream(r.ctx, "ACTIONS")
	if err != nil {
		r.t.Fatal(err)
	}
	c := s.CachedInfo().Config
	c.MaxMsgSize = n
	if _, err := r.js.UpdateStream(r.ctx, c); err != nil {
		r.t.Fatal(err)
	}
}

// allowPromo has the rig's guard allow a 10 % promotion of sku on web by rule at the rig's time and
// enqueues its action, as the decider does; it returns the proposal.
func (r *rig) allowPromo(rule, sku string, enqueue bool) guard.Proposal {
	r.t.Helper()
	now := r.clock()
	p := guard.Proposal{ID: guard.DecisionID("v-dead", rule, sku, "web", guard.TimeBucket(now, time.Hour)), RuleVersion: "v-dead",
		Rule: rule, SKU: sku, Site: "s1", Channel: "web", Kind: guard.Promote, Discount: 10, Duration: guard.Duration(time.Hour), Time: now}
	v, err := r.guard.Check(r.ctx, p)
	if err != nil || !v.Acts() {
		r.t.Fatalf("check %s: %+v %v", rule, v, err)
	}
	if !enqueue {
		return p
	}
	ra := rules.Action{Kind: rules.Promote, Channels: []string{"web"}, Discount: 10, Duration: time.Hour}
	if _, err := r.log.Append(r.ctx, audit.Record{DecisionID: p.ID, Event: audit.EventApproved, Outcome: audit.OutcomeFired,
		Mode: audit.ModeActive, Time: now, RuleSet: audit.RuleSetRef{Version: p.RuleVersion}, Rule: audit.RuleRef{Name: rule},
		SKU: sku, Site: "s1", Channel: "web", Verdict: &v, Action: ra}); err != nil {
		r.t.Fatal(err)
	}
	if _, err := r.outbox.Enqueue(r.ctx, Action(p, ra, v)); err != nil {
		r.t.Fatal(err)
	}
	return p
}

// A promotion allowed by the guard and dead-lettered before any of it went out (its NATS start can
// never be published) gives its daily cap and cooldown back, once across two replicas' loops, with a
// released record on the decision log saying why. A replay then reserves again, as of now: refused,
// naming the cap, while the day is full (the record stays dead); delivered once when there is room.
func TestDeadBeforeAnythingWentOutGivesBack(t *testing.T) {
	r := newRig(t, func(c *guard.Config) { c.Approval.Above = 0; c.Daily.MaxPromotions = 1 })
	// A second replica: its own guard and delivery loop on the same buckets.
	gc := guard.DefaultConfig()
	gc.MaxDiscount, gc.Approval.Above, gc.Cooldown, gc.Now, gc.Daily.MaxPromotions = 20, 0, time.Hour, r.clock, 1
	g2, err := guard.New(r.ctx, r.js, gc, "r2", testutil.Logger(t, slog.LevelWarn))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g2.Close() })
	oc := act.Config{Prefix: "gemba", Channels: map[string]act.Channel{"web": {}, "retail": {}}, Poll: 50 * time.Millisecond, Now: r.clock}
	oc.Defaults()
	o2, err := act.Open(r.ctx, r.js, oc, nil)
	if err != nil {
		t.Fatal(err)
	}
	o2.SetGuard(DeliveryGuard{Guard: g2, Audit: r.log, Replica: "r2", Now: r.clock})
	ctx2, stop2 := context.WithCancel(r.ctx)
	done2 := make(chan error, 1)
	go func() { done2 <- o2.Run(ctx2) }()
	t.Cleanup(func() { stop2(); <-done2 })

	r.maxMsgSize(64)
	p1 := r.allowPromo("promote-a", "A", true)
	ob := waitDead(t, r.outbox, p1.ID)
	if ob.Published || ob.Hooked {
		t.Fatalf("dead letter %+v: something went out", ob)
	}
	released := testutil.Poll(10*time.Second, func() bool {
		v, err := r.guard.Check(r.ctx, p1)
		return err == nil && v.Outcome == guard.Released
	})
	if !released {
		v, _ := r.guard.Check(r.ctx, p1)
		probe := r.allowProbe("promote-b", "A")
		t.Fatalf("dead-lettered before anything went out, the decision is still %s: it holds its reservations "+
			"(another promotion of A on web: %s by %s: %s)", v.Outcome, probe.Outcome, probe.Guardrail, probe.Reason)
	}
	testutil.WaitFor(t, 10*time.Second, "the released record on the decision log", func() bool {
		hist, err := r.log.History(r.ctx, p1.ID)
		return err == nil && len(hist) == 2 && hist[1].Event == audit.EventReleased
	})
	hist, _ := r.log.History(r.ctx, p1.ID)
	if n := hist[1].Note; !strings.Contains(n, "dead-lettered") || !strings.Contains(n, "exceeds maximum") {
		t.Errorf("released record's note %q: want why (dead-lettered, the publish refused)", n)
	}
	if n := r.guard.Metrics.Released.Load() + g2.Metrics.Released.Load(); n != 1 {
		t.Errorf("given back %d times across the two replicas, want once", n)
	}
	// Marked given back after the guard's release and the record: polled, not read once.
	if !testutil.Poll(10*time.Second, func() bool {
		ob, _ = r.outbox.Get(r.ctx, p1.ID)
		return ob.State == act.Dead && !ob.GivenBack.IsZero()
	}) {
		t.Errorf("outbox record after the give-back: %+v, want dead, given back", ob)
	}
	explains(t, hist, &ob, "guardrails: released: dead-lettered", "its caps and cooldown given back at")

	// The day's one promotion is free again: B takes it (A's cooldown is free too, see below).
	r.maxMsgSize(-1)
	pb := r.allowPromo("promote-b", "B", false)
	err = r.outbox.Replay(r.ctx, p1.ID)
	if !errors.Is(err, act.ErrRefused) || !strings.Contains(err.Error(), guard.GDailyCount) {
		t.Fatalf("replay with the day's cap taken: %v, want refused naming %s", err, guard.GDailyCount)
	}
	if ob, _ := r.outbox.Get(r.ctx, p1.ID); ob.State != act.Dead {
		t.Errorf("refused replay: record %s, want still dead", ob.State)
	}
	if v, err := r.guard.Check(r.ctx, p1); err != nil || v.Outcome != guard.Released {
		t.Errorf("refused replay: decision %+v %v, want still released", v, err)
	}

	// Room again: the replay reserves (as of now) and delivers once.
	if err := r.guard.Release(r.ctx, pb.ID); err != nil {
		t.Fatal(err)
	}
	if err := r.outbox.Replay(r.ctx, p1.ID); err != nil {
		t.Fatalf("replay with room: %v", err)
	}
	testutil.WaitFor(t, 10*time.Second, "the replayed promotion delivered", func() bool {
		ob, err := r.outbox.Get(r.ctx, p1.ID)
		return err == nil && ob.State == act.Pending && ob.Phase == act.EventEnd
	})
	n := 0
	for _, m := range r.actions() {
		if m.ID == p1.ID {
			n++
		}
	}
	if n != 1 {
		t.Errorf("replayed start on the stream %d times, want once", n)
	}
	if v, err := r.guard.Check(r.ctx, p1); err != nil || v.Outcome != guard.Allow {
		t.Errorf("after the replay: decision %+v %v, want allowed again", v, err)
	}
	hist, _ = r.log.History(r.ctx, p1.ID)
	ob, _ = r.outbox.Get(r.ctx, p1.ID)
	explains(t, hist, &ob, "reserved again at", "allowed again")
	// It holds the day and A's cooldown again.
	if probe := r.allowProbe("promote-c", "A"); probe.Outcome != guard.Suppress || probe.Guardrail != guard.GCooldown {
		t.Errorf("another promotion of A on web after the replay: %s by %s, want suppressed by the cooldown", probe.Outcome, probe.Guardrail)
	}
}

// allowProbe asks the guard about another promotion of sku on web (never enqueued).
func (r *rig) allowProbe(rule, sku string) guard.Verdict {
	r.t.Helper()
	now := r.clock()
	p := guard.Proposal{ID: guard.DecisionID("v-dead", rule, sku, "web", guard.TimeBucket(now, time.Hour)), RuleVersion: "v-dead",
		Rule: rule, SKU: sku, Site: "s1", Channel: "web", Kind: guard.Promote, Discount: 10, Duration: guard.Duration(time.Hour), Time: now}
	v, err := r.guard.Check(r.ctx, p)
	if err != nil {
		r.t.Fatal(err)
	}
	return v
}

func waitDead(t *testing.T, o *act.Outbox, id string) act.Record {
	t.Helper()
	var ob act.Record
	testutil.WaitFor(t, 10*time.Second, id+" dead-lettered", func() bool {
		r, err := o.Get(context.Background(), id)
		ob = r
		return err == nil && r.State == act.Dead
	})
	return ob
}

// explains checks that why (audit.Explain) of a decision says each of wants.
func explains(t *testing.T, hist []audit.Record, ob *act.Record, wants ...string) {
	t.Helper()
	var why bytes.Buffer
	audit.Explain(&why, hist, ob)
	for _, want := range wants {
		if !strings.Contains(why.String(), want) {
			t.Errorf("why does not say %q:\n%s", want, why.String())
		}
	}
}
