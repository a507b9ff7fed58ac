package audit

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub/decide/guard"
	"github.com/gemba-io/gemba/hub/decide/rules"
	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

func openLog(t *testing.T, js jetstream.JetStream, replicas int) *Log {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := Open(ctx, js, Config{Prefix: "gemba", Replicas: replicas}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func id(n int) string { return fmt.Sprintf("%032x", n) }

func record(n int, event, outcome string) Record {
	return Record{DecisionID: id(n), Event: event, Outcome: outcome, Mode: ModeActive, Time: time.Date(2026, 12, 4, 10, 0, n, 0, time.UTC),
		RuleSet: RuleSetRef{Name: "promo", Version: "v1"}, Rule: RuleRef{Name: "low-cover", When: "inventory.days_of_cover > 30"},
		SKU: fmt.Sprintf("B-%d", n%3), Channel: []string{"web", "shop"}[n%2],
		Action: rules.Action{Kind: rules.Promote, Channels: []string{"web"}, Discount: 10, Duration: time.Hour}}
}

// fenceScenario checks the fence and the change CAS on whatever server js reaches.
func fenceScenario(t *testing.T, l *Log) {
	ctx := context.Background()
	// No change yet: fence 0 means "no rules change", and holds.
	if _, err := l.Publish(ctx, record(1, EventDecided, OutcomeFired), 0); err != nil {
		t.Fatalf("publish at fence 0 before any change: %v", err)
	}
	s1, err := l.RecordChange(ctx, Change{Op: OpActivate, Active: "v1", To: "v1", By: "alice"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Publish(ctx, record(2, EventDecided, OutcomeFired), 0); !errors.Is(err, ErrFenced) {
		t.Fatalf("publish at fence 0 after change %d: got %v, want ErrFenced", s1, err)
	}
	seq, err := l.Publish(ctx, record(2, EventDecided, OutcomeFired), s1)
	if err != nil {
		t.Fatalf("publish at the current fence: %v", err)
	}
	// A re-publish (a crash before the ack was seen) is stored once.
	again, err := l.Publish(ctx, record(2, EventDecided, OutcomeFired), s1)
	if err != nil || again != seq {
		t.Fatalf("re-publish: seq %d err %v, want %d", again, err, seq)
	}
	if l.Stats.Duplicates.Load() != 1 {
		t.Fatalf("duplicates counted %d, want 1", l.Stats.Duplicates.Load())
	}
	// Two changes computed from the same state: one lands.
	if _, err := l.RecordChange(ctx, Change{Op: OpActivate, Active: "v2", By: "bob"}, 0); !errors.Is(err, ErrConflict) {
		t.Fatalf("change from a stale state: got %v, want ErrConflict", err)
	}
	s2, err := l.RecordChange(ctx, Change{Op: OpRollback, Active: "v0", By: "bob"}, s1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Publish(ctx, record(3, EventDecided, OutcomeFired), s1); !errors.Is(err, ErrFenced) {
		t.Fatalf("publish under the old rules after a rollback: got %v, want ErrFenced", err)
	}
	if _, err := l.Publish(ctx, record(3, EventDecided, OutcomeFired), s2); err != nil {
		t.Fatal(err)
	}
	cur, err := l.Current(ctx)
	if err != nil || cur.Seq != s2 || cur.Active != "v0" || cur.Op != OpRollback {
		t.Fatalf("current = %+v, %v; want the rollback at %d", cur, err, s2)
	}
	if l.Stats.Fenced.Load() != 2 || l.Stats.Conflicts.Load() != 1 {
		t.Fatalf("fenced %d conflicts %d, want 2 and 1", l.Stats.Fenced.Load(), l.Stats.Conflicts.Load())
	}
	// Nothing refused was stored: records 1, 2, 3 once each.
	for n := 1; n <= 3; n++ {
		h, err := l.History(ctx, id(n))
		if err != nil || len(h) != 1 {
			t.Fatalf("history of %d: %v %v, want one record", n, h, err)
		}
	}
}

func TestFenceSingleServer(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	fenceScenario(t, openLog(t, js, 1))
}

func TestFenceClusterR3(t *testing.T) {
	nodes := natstest.Cluster(t, 3)
	_, js := natstest.Connect(t, natstest.URLs(nodes...))
	fenceScenario(t, openLog(t, js, 3))
}

func TestCurrentNoneYet(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	l := openLog(t, js, 1)
	c, err := l.Current(context.Background())
	if err != nil || c.Seq != 0 || c.Active != "" {
		t.Fatalf("current on an empty log = %+v, %v", c, err)
	}
	cs, err := l.Changes(context.Background())
	if err != nil || len(cs) != 0 {
		t.Fatalf("changes on an empty log = %v, %v", cs, err)
	}
}

// The decision stream must sit next to the agents' stream on the same prefix.
func TestNoOverlapWithAgents(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "AGENTS", Subjects: []string{"gemba.*.*.features", "gemba.*.*.status"}}); err != nil {
		t.Fatal(err)
	}
	openLog(t, js, 1)
}

func TestTTLOnRecordsOnly(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	l := openLog(t, js, 1)
	ctx := context.Background()
	rs, err := l.Publish(ctx, record(1, EventDecided, OutcomeFired), 0)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := l.RecordChange(ctx, Change{Op: OpActivate, Active: "v1", By: "a"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	m, err := l.stream.GetMsg(ctx, rs)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Header.Get(jetstream.MsgTTLHeader); got != DefaultRetention.String() {
		t.Fatalf("record TTL header %q, want %q", got, DefaultRetention)
	}
	if got := m.Header.Get(jetstream.MsgIDHeader); got != id(1)+":decided" {
		t.Fatalf("record Nats-Msg-Id %q", got)
	}
	m, err = l.stream.GetMsg(ctx, cs)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Header.Get(jetstream.MsgTTLHeader); got != "" {
		t.Fatalf("a rules change carries TTL %q: it must be kept", got)
	}
}

// A short retention really expires records, and never the rules state.
func TestRecordsExpire(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	ctx := context.Background()
	l, err := Open(ctx, js, Config{Prefix: "gemba", Retention: time.Second, DuplicateWindow: time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.RecordChange(ctx, Change{Op: OpActivate, Active: "v1", By: "a"}, 0); err != nil {
		t.Fatal(err)
	}
	cur, _ := l.Current(ctx)
	if _, err := l.Publish(ctx, record(1, EventDecided, OutcomeFired), cur.Seq); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, "the record to expire", func() bool {
		h, err := l.History(ctx, id(1))
		return err == nil && len(h) == 0
	})
	if c, err := l.Current(ctx); err != nil || c.Active != "v1" {
		t.Fatalf("rules state after records expired: %+v %v", c, err)
	}
}

func TestRefusesBadRecords(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	l := openLog(t, js, 1)
	ctx := context.Background()
	bad := []func(*Record){
		func(r *Record) { r.DecisionID = "ABC" },
		func(r *Record) { r.DecisionID = "rules" },
		func(r *Record) { r.Event = "exploded" },
		func(r *Record) { r.Outcome = "maybe" },
		func(r *Record) { r.Mode = "shadow" }, // outcome fired
		func(r *Record) { r.RuleSet.Version = "" },
	}
	for i, mod := range bad {
		r := record(1, EventDecided, OutcomeFired)
		mod(&r)
		if _, err := l.Publish(ctx, r, 0); err == nil {
			t.Errorf("bad record %d accepted: %+v", i, r)
		}
	}
	if _, err := l.RecordChange(ctx, Change{Op: "explode", By: "a"}, 0); err == nil {
		t.Error("unknown op accepted")
	}
	if _, err := l.RecordChange(ctx, Change{Op: OpActivate, Active: "v"}, 0); err == nil {
		t.Error("change without by accepted")
	}
	if _, err := l.RecordChange(ctx, Change{Op: OpCanary, By: "a", Canary: &CanarySpec{Version: "v", Share: 2, By: "sku"}}, 0); err == nil {
		t.Error("canary share 2 accepted")
	}
}

// Later events of a decision are not fenced: an approval answers the decision as it was made.
func TestAppendUnfenced(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	l := openLog(t, js, 1)
	ctx := context.Background()
	if _, err := l.Publish(ctx, record(1, EventDecided, OutcomeAwaitingApproval), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := l.RecordChange(ctx, Change{Op: OpActivate, Active: "v2", By: "a"}, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(ctx, record(1, EventApproved, OutcomeFired)); err != nil {
		t.Fatalf("append after a change: %v", err)
	}
	if _, err := l.Append(ctx, record(2, EventDecided, OutcomeFired)); err == nil {
		t.Fatal("a decided record appended without its fence")
	}
	h, err := l.History(ctx, id(1))
	if err != nil || len(h) != 2 || h[1].Event != EventApproved {
		t.Fatalf("history %+v %v", h, err)
	}
}

// A decision suppressed by the kill switch and decided again after its reset (round 1) keeps both
// decided records: the second has a message id of its own (not dropped as a duplicate), History
// lists both (a repeat of either once), and Decided is the latest, which why explains.
func TestDecidedAgainAfterKillSwitch(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	l := openLog(t, js, 1)
	ctx := context.Background()
	first := record(1, EventDecided, OutcomeSuppressed)
	first.Verdict = &guard.Verdict{DecisionID: id(1), Outcome: guard.Suppress, Guardrail: guard.GKillSwitch, Reason: "kill switch thrown by ops"}
	again := record(1, EventDecided, OutcomeFired)
	again.Time = first.Time.Add(time.Hour)
	again.Verdict = &guard.Verdict{DecisionID: id(1), Outcome: guard.Allow, Round: 1}
	var seqs []uint64
	for _, r := range []Record{first, again, again, first} {
		seq, err := l.Publish(ctx, r, 0)
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, seq)
	}
	if seqs[0] == seqs[1] || seqs[1] != seqs[2] || seqs[0] != seqs[3] {
		t.Errorf("sequences %v: want the decision again stored once, apart from the first", seqs)
	}
	recs, err := l.History(ctx, id(1))
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || recs[0].Outcome != OutcomeSuppressed || recs[1].Outcome != OutcomeFired {
		t.Fatalf("history %+v: want the suppression, then the decision again", recs)
	}
	if d := Decided(recs); d.Outcome != OutcomeFired || d.Verdict.Round != 1 {
		t.Errorf("decided record %+v: want the latest", d)
	}
	m, err := l.stream.GetMsg(ctx, seqs[1])
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Header.Get(jetstream.MsgIDHeader); got != id(1)+":decided:1" {
		t.Errorf("Nats-Msg-Id %q of the decision again", got)
	}
	var b strings.Builder
	Explain(&b, recs, nil)
	for _, want := range []string{"decision " + id(1) + ": fired", "decided  → suppressed", "decided  → fired", "guardrails: allow"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("why lacks %q:\n%s", want, b.String())
		}
	}
}
