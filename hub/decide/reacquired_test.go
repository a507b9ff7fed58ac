package decide

import (
	"strings"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub/act"
	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/decide/guard"
	"github.com/gemba-io/gemba/internal/testutil"
)

// A replay that reserves a dead letter's reservations again says so on the decision log: a
// reacquired record (outcome fired) after the released one, so that why no longer shows the decision
// released. A replay that is dead-lettered again before anything went out gives back again, and
// that second release is on the log too (not taken for the first one); the next replay is recorded
// again. Each record once.
func TestReplayReacquiredOnDecisionLog(t *testing.T) {
	r := newRig(t, func(c *guard.Config) { c.Approval.Above = 0 })
	r.maxMsgSize(64)
	p := r.allowPromo("promote-a", "A", true)
	events := func(want ...string) []audit.Record {
		t.Helper()
		var hist []audit.Record
		ok := testutil.Poll(10*time.Second, func() bool {
			var err error
			hist, err = r.log.History(r.ctx, p.ID)
			return err == nil && len(hist) == len(want)
		})
		var got []string
		for _, h := range hist {
			got = append(got, h.Event)
		}
		if !ok || strings.Join(got, " ") != strings.Join(want, " ") {
			t.Fatalf("decision log: %v, want %v", got, want)
		}
		return hist
	}
	givenBack := func() act.Record {
		t.Helper()
		var ob act.Record
		testutil.WaitFor(t, 10*time.Second, "dead and given back", func() bool {
			var err error
			ob, err = r.outbox.Get(r.ctx, p.ID)
			return err == nil && ob.State == act.Dead && !ob.GivenBack.IsZero()
		})
		return ob
	}
	givenBack()
	events(audit.EventApproved, audit.EventReleased)

	// Replayed while the stream still refuses it: reserved again, dead again, given back again.
	if err := r.outbox.Replay(r.ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	ob := givenBack()
	hist := events(audit.EventApproved, audit.EventReleased, audit.EventReacquired, audit.EventReleased)
	explains(t, hist, &ob, "decision "+p.ID+": released", "reacquired → fired")

	// Replayed with room on the stream: reserved again and delivered.
	r.maxMsgSize(-1)
	if err := r.outbox.Replay(r.ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the replayed promotion delivered", func() bool {
		ob, err := r.outbox.Get(r.ctx, p.ID)
		return err == nil && ob.State == act.Pending && ob.Phase == act.EventEnd
	})
	hist = events(audit.EventApproved, audit.EventReleased, audit.EventReacquired, audit.EventReleased, audit.EventReacquired)
	ob, _ = r.outbox.Get(r.ctx, p.ID)
	explains(t, hist, &ob, "decision "+p.ID+": fired", "reserved again at")
	if v, err := r.guard.Check(r.ctx, p); err != nil || v.Outcome != guard.Allow {
		t.Errorf("after the replay: decision %+v %v, want allowed", v, err)
	}
	if n := len(r.records(audit.Filter{SKU: "A"})); n != 5 {
		t.Errorf("%d records of A on the log, want 5 (each once)", n)
	}
}
