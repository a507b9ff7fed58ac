package decide

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/decide/guard"
	"github.com/gemba-io/gemba/internal/testutil"
)

// failingGuard is the guard with its checks failing while fail is set (the guard's KV not
// answering, as in an outage of the stream's leader).
type failingGuard struct {
	Guard
	fail  atomic.Bool
	calls atomic.Uint64
}

func (g *failingGuard) Check(ctx context.Context, p guard.Proposal) (guard.Verdict, error) {
	g.calls.Add(1)
	if g.fail.Load() {
		return guard.Verdict{}, errors.New("guard: no responders")
	}
	return g.Guard.Check(ctx, p)
}

// A decision that cannot be completed is retried after a pause, not in a loop that evaluates,
// calls the guard and logs as fast as the machine goes: the engine settles between attempts, and
// decides once the guard answers again, with no new input.
func TestFailedDecisionRetriedWithoutSpinning(t *testing.T) {
	fg := &failingGuard{}
	fg.fail.Store(true)
	r := newRigWith(t, testGraph, nil, nil, func(g Guard) Guard { fg.Guard = g; return fg })
	r.activate(testRules)
	before := r.eng.rounds.Load()
	r.overstocked("l1", "A")
	testutil.WaitFor(t, 10*time.Second, "a failed check", func() bool { return fg.calls.Load() > 0 })
	testutil.WaitFor(t, 10*time.Second, "the engine settled after the failure", func() bool { return r.eng.settled(before) })
	fg.fail.Store(false)
	testutil.WaitFor(t, 10*time.Second, "two promotions once the guard answers", func() bool { return len(r.actions()) == 2 })
}

// A rules change whose version does not load leaves the previous rules with their old fence: every
// decision is refused by the log, and the unit waits for rules that load instead of being
// evaluated, claimed and refused again in a loop.
func TestFencedDecisionDoesNotSpin(t *testing.T) {
	r := newRig(t, nil)
	v1 := r.activate(testRules)
	cur, err := r.log.Current(r.ctx)
	if err != nil {
		t.Fatal(err)
	}
	missing := strings.Repeat("f", 64)
	if _, err := r.log.RecordChange(r.ctx, audit.Change{Op: "activate", Active: missing, Previous: []string{v1}, From: v1, To: missing,
		By: "mallory", Why: "a version nobody stored"}, cur.Seq); err != nil {
		t.Fatal(err)
	}
	before := r.eng.rounds.Load()
	r.overstocked("l1", "A")
	testutil.WaitFor(t, 10*time.Second, "a fenced record", func() bool { return r.eng.Metrics.Fenced.Load() > 0 })
	testutil.WaitFor(t, 10*time.Second, "the engine settled after the fence", func() bool { return r.eng.settled(before) })
	if n := len(r.actions()); n != 0 {
		t.Errorf("%d actions under rules that are no longer the recorded state", n)
	}
}
