package audit

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

func TestHistoryAndRecentSkipGarbage(t *testing.T) {
	n := natstest.JetStream(t)
	nc, js := natstest.Connect(t, n.URL())
	var logs testutil.Buffer
	ctx := context.Background()
	l, err := Open(ctx, js, Config{Prefix: "gemba"}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 40; i++ {
		if _, err := l.Publish(ctx, record(i, EventDecided, OutcomeAwaitingApproval), 0); err != nil {
			t.Fatal(err)
		}
		if i%4 == 0 {
			if _, err := l.Publish(ctx, record(i, EventApproved, OutcomeFired), 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Someone publishes garbage on a decision's subject and elsewhere on the stream.
	garbage := []struct{ subj, data string }{
		{"gemba.decisions." + id(4), "{not json"},
		{"gemba.decisions." + id(4), `{"decision_id":"` + id(5) + `","event":"decided","outcome":"fired","mode":"active","rule_set":{"version":"v"}}`},
		{"gemba.decisions.xyz", `{"event":"decided"}`},
	}
	for _, g := range garbage {
		if _, err := js.Publish(ctx, g.subj, []byte(g.data)); err != nil {
			t.Fatal(err)
		}
	}
	_ = nc
	h, err := l.History(ctx, id(4))
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 2 || h[0].Event != EventDecided || h[1].Event != EventApproved || h[1].Outcome != OutcomeFired || h[0].Seq >= h[1].Seq {
		t.Fatalf("history of 4: %+v", h)
	}
	if got := l.Stats.Malformed.Load(); got != 2 {
		t.Fatalf("malformed counted %d after History, want 2", got)
	}
	out := logs.String()
	if !strings.Contains(out, "subject=gemba.decisions."+id(4)) || !strings.Contains(out, "seq=") {
		t.Fatalf("malformed messages not logged with subject and seq:\n%s", out)
	}

	recent, err := l.Recent(ctx, Filter{Outcome: OutcomeFired, Limit: 3})
	if err != nil {
		t.Fatal(err)
	}
	if len(recent) != 3 || recent[0].DecisionID != id(40) || recent[1].DecisionID != id(36) || recent[2].DecisionID != id(32) {
		t.Fatalf("recent fired: %v", ids(recent))
	}
	recent, err = l.Recent(ctx, Filter{SKU: "B-1", Channel: "shop", Outcome: OutcomeAwaitingApproval})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range recent {
		if r.SKU != "B-1" || r.Channel != "shop" || (i > 0 && r.Seq > recent[i-1].Seq) {
			t.Fatalf("filter or order broken: %v", ids(recent))
		}
	}
	if len(recent) != 7 { // i ≡ 1 mod 3 and odd in 1..40: 1,7,13,19,25,31,37
		t.Fatalf("recent B-1/shop: %d records %v", len(recent), ids(recent))
	}
	// Bounded work: a scan of 5 messages sees only the newest 5.
	recent, err = l.Recent(ctx, Filter{MaxScan: 5})
	if err != nil || len(recent) > 5 {
		t.Fatalf("bounded scan: %d records, %v", len(recent), err)
	}
	// A read that stops at MaxScan says so and where to go on; going on from there (Before) reads
	// the older messages, and a read that reaches the stream's first message has no Next.
	info, err := l.stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	last := info.State.LastSeq
	p, err := l.RecentPage(ctx, Filter{SKU: "nothing", MaxScan: 5})
	if err != nil || len(p.Records) != 0 || !p.ScanCut || p.Next != last-4 {
		t.Fatalf("cut scan: %+v, %v; want no records, ScanCut, Next %d", p, err, last-4)
	}
	p, err = l.RecentPage(ctx, Filter{MaxScan: 5, Before: p.Next})
	if err != nil || len(p.Records) != 5 || p.Records[0].Seq != last-5 || !p.ScanCut || p.Next != last-9 {
		t.Fatalf("going on before %d: %+v, %v", last-4, p, err)
	}
	p, err = l.RecentPage(ctx, Filter{SKU: "nothing"})
	if err != nil || p.ScanCut || p.Next != 0 {
		t.Fatalf("whole stream read: %+v, %v; want neither ScanCut nor Next", p, err)
	}
	if p, err = l.RecentPage(ctx, Filter{Before: info.State.FirstSeq}); err != nil || len(p.Records) != 0 || p.Next != 0 {
		t.Fatalf("before the first message: %+v, %v", p, err)
	}
	if _, err := l.History(ctx, "nope"); err == nil {
		t.Fatal("history of a malformed id accepted")
	}
}

func ids(rs []Record) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.DecisionID[28:]+":"+r.Event)
	}
	return out
}

func TestFollowChangesSurvivesRestart(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	l := openLog(t, js, 1)
	ctx := context.Background()
	s1, err := l.RecordChange(ctx, Change{Op: OpActivate, Active: "v1", By: "a"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := l.RecordChange(ctx, Change{Op: OpActivate, Active: "v2", Previous: []string{"v1"}, By: "a"}, s1)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var seen []Change
	stop, err := l.FollowChanges(func(c Change) {
		mu.Lock()
		seen = append(seen, c)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	last := func() Change {
		mu.Lock()
		defer mu.Unlock()
		if len(seen) == 0 {
			return Change{}
		}
		return seen[len(seen)-1]
	}
	testutil.WaitFor(t, 10*time.Second, "the current state", func() bool { return last().Seq == s2 })
	mu.Lock()
	if len(seen) != 1 || seen[0].Active != "v2" {
		t.Fatalf("follow started with %+v, want only the current state", seen)
	}
	mu.Unlock()

	n.Stop()
	n.Start()
	var s3 uint64
	testutil.WaitFor(t, 30*time.Second, "a change after the restart", func() bool {
		if s3 == 0 {
			s3, _ = l.RecordChange(ctx, Change{Op: OpRollback, Active: "v1", By: "b"}, s2)
		}
		return s3 != 0 && last().Seq == s3
	})
	if c := last(); c.Active != "v1" || c.Op != OpRollback {
		t.Fatalf("after restart followed %+v", c)
	}
	all, err := l.Changes(ctx)
	if err != nil || len(all) != 3 || all[0].Seq != s1 || all[2].Seq != s3 {
		t.Fatalf("changes = %+v, %v", all, err)
	}
}
