package decide

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub/act"
	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/decide/guard"
	"github.com/gemba-io/gemba/internal/testutil"
)

// fullStream makes the ACTIONS stream refuse every new message for now (full, discarding new ones:
// a temporary refusal, retried) when full, and lifts it otherwise.
func (r *rig) fullStream(full bool) {
	r.t.Helper()
	s, err := r.js.Stream(r.ctx, "ACTIONS")
	if err != nil {
		r.t.Fatal(err)
	}
	c := s.CachedInfo().Config
	c.MaxMsgs, c.Discard = -1, jetstream.DiscardOld
	if full {
		if _, err := r.js.Publish(r.ctx, "gemba.actions.holds.retail", []byte(`{}`)); err != nil {
			r.t.Fatal(err)
		}
		c.MaxMsgs, c.Discard = 1, jetstream.DiscardNew
	}
	if _, err := r.js.UpdateStream(r.ctx, c); err != nil {
		r.t.Fatal(err)
	}
}

// A promotion whose start NATS refused for a while (a temporary refusal, retried) until its end had
// passed is not started: a start then would run a promotion of yesterday today. Its record ends
// cancelled saying it expired, nothing of it is published, its caps and cooldown are given back with
// a released record on the decision log saying why, and why shows it.
func TestStartAfterItsEndIsNotStarted(t *testing.T) {
	r := newRig(t, func(c *guard.Config) { c.Approval.Above = 0 })
	r.fullStream(true)
	p := r.allowPromo("promote-a", "A", true)
	testutil.WaitFor(t, 10*time.Second, "the start refused by NATS", func() bool {
		ob, err := r.outbox.Get(r.ctx, p.ID)
		return err == nil && ob.State == act.Pending && strings.Contains(ob.LastError, "maximum messages")
	})
	r.advance(time.Duration(p.Duration) + time.Minute) // NATS stayed away past the promotion's end
	r.fullStream(false)
	var ob act.Record
	testutil.WaitFor(t, 10*time.Second, "the record final", func() bool {
		var err error
		ob, err = r.outbox.Get(r.ctx, p.ID)
		return err == nil && (ob.State == act.Done || ob.State == act.Cancelled && !ob.GiveBack)
	})
	for _, m := range r.actions() {
		if strings.HasPrefix(m.ID, p.ID) {
			t.Errorf("%s (%s) published %s after the promotion's end %s", m.ID, m.Event, r.clock().Format(time.RFC3339), ob.Action.End.Format(time.RFC3339))
		}
	}
	if ob.State != act.Cancelled || ob.Published || ob.GivenBack.IsZero() || !strings.Contains(ob.LastError, "expired") {
		t.Fatalf("outbox record %+v: want cancelled as expired, nothing published, given back", ob)
	}
	if v, err := r.guard.Check(r.ctx, p); err != nil || v.Outcome != guard.Released {
		t.Errorf("decision after it expired: %+v %v, want released (its caps and cooldown given back)", v, err)
	}
	hist, err := r.log.History(r.ctx, p.ID)
	if err != nil || len(hist) != 2 || hist[1].Event != audit.EventReleased || !strings.Contains(hist[1].Note, "expired") {
		t.Fatalf("history %+v %v: want approved, then released as expired", hist, err)
	}
	explains(t, hist, &ob, "decision "+p.ID+": released", "delivery: cancelled", "expired", "never started")
}

// What the guard can never give back (the decision is not in a state Release takes: here it was
// suppressed, yet an action of its id reached the outbox) is not retried forever, neither for a
// start the kill switch cancelled nor for a promotion dead-lettered before any of it went out: the
// record becomes final (cancelled; dead, no longer giving back), the guard's refusal on it.
func TestGiveBackGuardStateErrorIsFinal(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(r *rig)
		final func(ob act.Record) bool
		says  string
	}{
		{"kill switch", func(r *rig) {
			if err := r.guard.SetKill(r.ctx, true, "ops@plant-a", "price audit"); err != nil {
				r.t.Fatal(err)
			}
		}, func(ob act.Record) bool { return ob.State == act.Cancelled }, "kill switch thrown by ops@plant-a"},
		{"dead letter", func(r *rig) { r.maxMsgSize(64) },
			func(ob act.Record) bool { return ob.State == act.Dead && !ob.GiveBack }, "exceeds maximum"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, func(c *guard.Config) { c.Approval.Above = 0 })
			now := r.clock()
			p := guard.Proposal{ID: guard.DecisionID("v-dead", "too-deep", "A", "web", guard.TimeBucket(now, time.Hour)), RuleVersion: "v-dead",
				Rule: "too-deep", SKU: "A", Site: "s1", Channel: "web", Kind: guard.Promote, Discount: 50, Duration: guard.Duration(time.Hour), Time: now}
			if v, err := r.guard.Check(r.ctx, p); err != nil || v.Outcome != guard.Suppress {
				t.Fatalf("check: %+v %v, want suppressed (discount above the maximum)", v, err)
			}
			tc.setup(r)
			a := act.Action{DecisionID: p.ID, Kind: act.Promote, SKU: "A", Site: "s1", Channel: "web", Discount: 50, Start: now,
				End: now.Add(time.Hour), RuleSetVersion: "v-dead", Rule: "too-deep"}
			if _, err := r.outbox.Enqueue(r.ctx, a); err != nil {
				t.Fatal(err)
			}
			var ob act.Record
			final := testutil.Poll(10*time.Second, func() bool {
				var err error
				ob, err = r.outbox.Get(r.ctx, p.ID)
				return err == nil && tc.final(ob)
			})
			if !final {
				t.Fatalf("outbox record %+v: want final, the guard's refusal on it (not retried forever)", ob)
			}
			if !strings.Contains(ob.LastError, tc.says) || !strings.Contains(ob.LastError, "decision is suppress") {
				t.Errorf("last error %q: want %q and the guard's refusal", ob.LastError, tc.says)
			}
			if n := len(r.actions()); n != 0 {
				t.Errorf("%d actions delivered", n)
			}
			// The decision log does not say it was released (caps and cooldown given back):
			// the guard refused that.
			hist, err := r.log.History(r.ctx, p.ID)
			if err != nil {
				t.Fatal(err)
			}
			for _, h := range hist {
				if h.Event == audit.EventReleased {
					t.Errorf("decision log has %s record %q though the guard refused the release", h.Event, h.Note)
				}
			}
		})
	}
}
