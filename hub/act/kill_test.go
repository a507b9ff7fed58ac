package act

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub/decide/guard"
	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

// killGuard is the hub's wiring of Guard (decide.DeliveryGuard) without the decision log: the real
// guard's kill switch and its Release.
type killGuard struct {
	g         *guard.Guard
	cancelled atomic.Int32
	failing   atomic.Bool // Cancelled fails, as a KV outage (or a crash before it) would
}

func (k *killGuard) Killed(ctx context.Context) (bool, string, error) {
	s, err := k.g.Kill(ctx)
	return s.On, s.String(), err
}

func (k *killGuard) EndLive(ctx context.Context) (EndMark, error) {
	s, err := k.g.Kill(ctx)
	if err != nil || s.Mark == nil {
		return EndMark{}, err
	}
	return EndMark{Gen: s.Mark.Gen, At: s.Mark.At, Why: s.Mark.String()}, nil
}

func (k *killGuard) Cancelled(ctx context.Context, a Action, _ string) error {
	if k.failing.Load() {
		return errors.New("guard not answering")
	}
	k.cancelled.Add(1)
	return k.g.Release(ctx, a.DecisionID)
}

func (k *killGuard) DeadLettered(ctx context.Context, a Action, _ string) error {
	return k.g.Release(ctx, a.DecisionID)
}

func (k *killGuard) Reacquired(context.Context, Action, time.Time) error { return nil }

func (k *killGuard) Reacquire(ctx context.Context, a Action) error {
	v, err := k.g.Reacquire(ctx, a.DecisionID)
	if err == nil && v.Outcome != guard.Allow {
		err = fmt.Errorf("%w by %s: %s", ErrRefused, v.Guardrail, v.Reason)
	}
	return err
}

// guarded opens a guard on js (one-hour cooldown) and returns it with a function that has it allow
// a proposal and returns the proposal's action on channel, as the decider enqueues it.
func guarded(t *testing.T, js jetstream.JetStream) (*killGuard, func(rule, sku, channel string, kind Kind) Action) {
	t.Helper()
	cfg := guard.DefaultConfig()
	cfg.MaxDiscount, cfg.Cooldown = 30, time.Hour
	g, err := guard.New(context.Background(), js, cfg, "r1", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Close() })
	allow := func(rule, sku, channel string, kind Kind) Action {
		t.Helper()
		now := time.Now()
		p := guard.Proposal{RuleVersion: "v3", Rule: rule, SKU: sku, Site: "plant-a", Channel: channel, Kind: guard.Kind(kind),
			Time: now, Requester: "rules", Inputs: []guard.Input{{Name: "days_of_cover"}}}
		a := Action{Kind: kind, SKU: sku, Site: "plant-a", Channel: channel, Start: now, RuleSetVersion: "v3", Rule: rule, Reason: "test"}
		if kind == Promote {
			p.Discount, p.Duration = 15, guard.Duration(time.Hour)
			a.Discount, a.End = 15, now.Add(time.Hour)
		}
		p.ID = guard.DecisionID(p.RuleVersion, p.Rule, p.SKU, p.Channel, guard.TimeBucket(p.Time, time.Hour))
		v, err := g.Check(context.Background(), p)
		if err != nil || v.Outcome != guard.Allow {
			t.Fatalf("guard: %s: %v %+v", rule, err, v)
		}
		a.DecisionID = p.ID
		return a
	}
	return &killGuard{g: g}, allow
}

func allowedIDs(t *testing.T, g *guard.Guard) []string {
	t.Helper()
	as, err := g.AllowedSince(context.Background(), time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, a := range as {
		ids = append(ids, a.Proposal.ID)
	}
	return ids
}

// Decisions allowed just before the kill switch is thrown and enqueued after it (the decider, a
// reconcile, a replay) are cancelled for good, nothing of them sent: what they held is given back,
// the record says who threw the switch and why, and resetting the switch does not deliver them.
func TestKillSwitchCancelsAllowedStarts(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := connect(t, n)
	ctx := context.Background()
	kg, allow := guarded(t, js)
	recv := newReceiver(t, nil)
	o := open(t, js, testConfig(recv.srv.URL))
	o.SetGuard(kg)
	run(t, o)
	p := allow("overstock", "sku-2", "web", Promote)
	h := allow("hold-when-down", "sku-1", "web", Hold)
	if err := kg.g.SetKill(ctx, true, "ops@plant-a", "line audit"); err != nil {
		t.Fatal(err)
	}
	for _, a := range []Action{p, h} {
		if _, err := o.Enqueue(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{p.DecisionID, h.DecisionID} {
		rec := waitState(t, o, id, Cancelled, EventStart)
		if rec.Published || rec.Hooked || !strings.Contains(rec.LastError, "kill switch thrown by ops@plant-a") ||
			!strings.Contains(rec.LastError, "line audit") || rec.Owner != "" {
			t.Errorf("cancelled record %+v: want nothing sent, the switch named, no owner", rec)
		}
	}
	if ids := allowedIDs(t, kg.g); len(ids) != 0 {
		t.Errorf("still allowed in the guard: %v (want both released)", ids)
	}
	if err := kg.g.SetKill(ctx, false, "ops@plant-a", "audit done"); err != nil {
		t.Fatal(err)
	}
	// The promotion's cooldown was given back: another promotion of the SKU on the channel is
	// allowed, and delivered, while the cancelled ones stay cancelled.
	p2 := allow("overstock-2", "sku-2", "web", Promote)
	if _, err := o.Enqueue(ctx, p2); err != nil {
		t.Fatal(err)
	}
	waitState(t, o, p2.DecisionID, Pending, EventEnd)
	msgs := streamMsgs(t, js, "ACTIONS")
	if len(msgs) != 1 || len(msgs[p2.DecisionID]) != 1 {
		t.Errorf("stream holds %v, want only %s", msgs, p2.DecisionID)
	}
	if recv.count(p.DecisionID) != 0 || recv.count(h.DecisionID) != 0 || recv.count(p2.DecisionID) != 1 {
		t.Errorf("webhook receipts: %v", recv.got)
	}
	for _, id := range []string{p.DecisionID, h.DecisionID} {
		if r, _ := o.Get(ctx, id); r.State != Cancelled {
			t.Errorf("%s is %s after the reset, want cancelled", id, r.State)
		}
	}
	if c := kg.cancelled.Load(); c != 2 {
		t.Errorf("Cancelled called %d times, want 2", c)
	}
	recv.checkSigned()
}

// A promotion whose NATS start went out and whose webhook had not answered yet when the switch
// was thrown gets no webhook start: it is ended at once on NATS (the only place that has its
// start). A promotion fully started before the switch still gets its end everywhere.
func TestKillSwitchEndsPartStartedPromotion(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := connect(t, n)
	ctx := context.Background()
	kg, allow := guarded(t, js)
	var failing atomic.Bool
	failing.Store(true)
	recv := newReceiver(t, func(int, string) (int, http.Header, time.Duration) {
		if failing.Load() {
			return http.StatusInternalServerError, nil, 0
		}
		return http.StatusOK, nil, 0
	})
	o := open(t, js, testConfig(recv.srv.URL))
	o.SetGuard(kg)
	stop := run(t, o)
	a := allow("overstock", "sku-2", "web", Promote)
	b := allow("overstock", "sku-3", "store", Promote) // NATS only: fully started
	b.End = time.Now().Add(2 * time.Second)
	for _, x := range []Action{a, b} {
		if _, err := o.Enqueue(ctx, x); err != nil {
			t.Fatal(err)
		}
	}
	testutil.WaitFor(t, 15*time.Second, "the NATS start out and the webhook failed", func() bool {
		r, err := o.Get(ctx, a.DecisionID)
		return err == nil && r.Published && r.Attempts >= 1
	})
	waitState(t, o, b.DecisionID, Pending, EventEnd)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if err := kg.g.SetKill(ctx, true, "ops@plant-a", "recall"); err != nil {
		t.Fatal(err)
	}
	failing.Store(false)
	run(t, o)
	rec := waitState(t, o, a.DecisionID, Done, EventEnd)
	if !strings.Contains(rec.LastError, "kill switch thrown by ops@plant-a") {
		t.Errorf("record %+v does not say the kill switch stopped it", rec)
	}
	waitState(t, o, b.DecisionID, Done, EventEnd)
	msgs := streamMsgs(t, js, "ACTIONS")
	for _, id := range []string{a.DecisionID, a.DecisionID + ":end", b.DecisionID, b.DecisionID + ":end"} {
		if len(msgs[id]) != 1 {
			t.Errorf("%s on the stream %d times, want once", id, len(msgs[id]))
		}
	}
	if recv.count(a.DecisionID) != 0 || recv.count(a.DecisionID+":end") != 0 {
		t.Errorf("webhook got %v: want neither the start nor the end of a promotion it never got", recv.got)
	}
	// It acted (on NATS): what it holds stays held.
	if ids := allowedIDs(t, kg.g); !slices.Contains(ids, a.DecisionID) || kg.cancelled.Load() != 0 {
		t.Errorf("allowed %v, %d cancelled: the part-started promotion must keep its reservations", ids, kg.cancelled.Load())
	}
	recv.checkSigned()
}

// Replay refuses while the kill switch is thrown.
func TestReplayRefusedWhileKilled(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := connect(t, n)
	ctx := context.Background()
	kg, _ := guarded(t, js)
	recv := newReceiver(t, func(int, string) (int, http.Header, time.Duration) { return http.StatusGone, nil, 0 })
	o := open(t, js, testConfig(recv.srv.URL))
	o.SetGuard(kg)
	run(t, o)
	h := hold("dec-replay-killed", "web")
	if _, err := o.Enqueue(ctx, h); err != nil {
		t.Fatal(err)
	}
	waitState(t, o, h.DecisionID, Dead, EventStart)
	if err := kg.g.SetKill(ctx, true, "ops@plant-a", "recall"); err != nil {
		t.Fatal(err)
	}
	err := o.Replay(ctx, h.DecisionID)
	if !errors.Is(err, ErrKilled) || !strings.Contains(err.Error(), "ops@plant-a") {
		t.Fatalf("replay while killed: %v", err)
	}
	if r, _ := o.Get(ctx, h.DecisionID); r.State != Dead {
		t.Errorf("state %s after a refused replay", r.State)
	}
	if err := kg.g.SetKill(ctx, false, "ops@plant-a", "done"); err != nil {
		t.Fatal(err)
	}
	if err := o.Replay(ctx, h.DecisionID); err != nil {
		t.Fatalf("replay after the reset: %v", err)
	}
}

// Once a start is marked cancelled by the switch it is never delivered, even when giving back
// fails and the switch is reset before the retry: the retry finishes the cancellation.
func TestKillSwitchCancelSurvivesResetAndFailure(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := connect(t, n)
	ctx := context.Background()
	kg, allow := guarded(t, js)
	kg.failing.Store(true)
	o := open(t, js, testConfig(""))
	o.SetGuard(kg)
	run(t, o)
	p := allow("overstock", "sku-2", "store", Promote)
	if err := kg.g.SetKill(ctx, true, "ops@plant-a", "recall"); err != nil {
		t.Fatal(err)
	}
	if _, err := o.Enqueue(ctx, p); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 15*time.Second, "the start marked cancelled, giving back failed", func() bool {
		r, err := o.Get(ctx, p.DecisionID)
		return err == nil && r.State == Pending && r.Killed != "" && strings.Contains(r.LastError, "guard not answering")
	})
	if err := kg.g.SetKill(ctx, false, "ops@plant-a", "recall over"); err != nil {
		t.Fatal(err)
	}
	kg.failing.Store(false)
	rec := waitState(t, o, p.DecisionID, Cancelled, EventStart)
	if rec.Published || !strings.Contains(rec.LastError, "kill switch thrown by ops@plant-a") {
		t.Errorf("record %+v", rec)
	}
	if c := streamCount(t, js, "ACTIONS"); c != 0 {
		t.Errorf("%d messages on the stream", c)
	}
	if ids := allowedIDs(t, kg.g); len(ids) != 0 {
		t.Errorf("still allowed: %v", ids)
	}
}
