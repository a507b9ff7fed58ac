package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub/decide/guard"
	"github.com/gemba-io/gemba/internal/natstest"
)

// guardDecisions answers the approval listing from a real guard (the rest from the fake).
type guardDecisions struct {
	fakeDecisions
	g *guard.Guard
}

func (d *guardDecisions) PendingPage(ctx context.Context, after uint64, limit int) (guard.QueuePage, error) {
	return d.g.PendingPage(ctx, after, limit)
}

// floodQueue opens a guard whose approval threshold every proposal is above and queues n requests,
// one a minute of the guard's clock (so the oldest is the first queued); it returns the guard, the
// ids in the order they were queued, and the clock's setter.
func floodQueue(t *testing.T, js jetstream.JetStream, n int) (*guard.Guard, []string, func(time.Duration)) {
	t.Helper()
	var mu sync.Mutex
	now := time.Now().UTC().Add(-time.Duration(n) * time.Minute)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	add := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	cfg := guard.DefaultConfig()
	cfg.MaxDiscount, cfg.Cooldown, cfg.MaxSkew = 50, 0, 365*24*time.Hour
	cfg.Approval = guard.ApprovalConfig{Above: 10, TTL: time.Duration(2*n) * time.Minute}
	cfg.Retention = 2 * cfg.MaxSkew
	cfg.Now = clock
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	g, err := guard.New(ctx, js, cfg, "r1", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Close() })
	ids := make([]string, n)
	for i := range n {
		p := guard.Proposal{RuleVersion: "v1", Rule: "r", SKU: fmt.Sprintf("SKU-%05d", i), Site: "p1", Channel: "web",
			Kind: guard.Promote, Discount: 20, Duration: guard.Duration(time.Hour), Time: clock(), Requester: "alice"}
		p.ID = guard.DecisionID(p.RuleVersion, p.Rule, p.SKU, p.Channel, guard.TimeBucket(p.Time, time.Hour))
		v, err := g.Check(ctx, p)
		if err != nil || v.Outcome != guard.NeedsApproval {
			t.Fatalf("check %d: %+v %v", i, v, err)
		}
		ids[i] = p.ID
		add(time.Minute)
	}
	return g, ids, add
}

// TestApprovalsPageBoundedByLimit: a page of the approval queue costs memory (and KV reads) by its
// limit, not by the queue. Each GET read and decoded every queued request (one KV request each)
// and answered all of them: a rule whose threshold floods the queue made every view of it cost
// the whole queue.
func TestApprovalsPageBoundedByLimit(t *testing.T) {
	nc, js := natstest.Connect(t, natstest.JetStream(t).URL())
	const queued = 3000
	g, ids, _ := floodQueue(t, js, queued)
	h := DecisionsHandler(func() Decisions { return &guardDecisions{g: g} }, "", "")
	n, out := allocated(t, h, "/api/v1/approvals?limit=10")
	var page []guard.Request
	if err := json.Unmarshal(out["approvals"], &page); err != nil {
		t.Fatal(err)
	}
	var total int
	var next string
	_ = json.Unmarshal(out["total"], &total)
	_ = json.Unmarshal(out["next"], &next)
	if len(page) != 10 || page[0].Proposal.ID != ids[0] || page[9].Proposal.ID != ids[9] || total != queued || next == "" {
		first := ""
		if len(page) > 0 {
			first = page[0].Proposal.ID
		}
		t.Errorf("a page of %d requests from %s (the oldest: %s), total %d, next %q; want 10 from the oldest, total %d and a next page",
			len(page), first, ids[0], total, next, queued)
	}
	// What is left by the queue's size: its listing, one stream of its keys' metadata (a few kB
	// a request, garbage at once), not a read and a decoded record each (some 55 kB a request).
	t.Logf("/api/v1/approvals?limit=10: %d kB", n>>10)
	if bound := uint64(4 * queued << 10); n > bound {
		t.Errorf("a page of 10 allocated %d kB (the queue: %d requests), want at most %d kB", n>>10, queued, bound>>10)
	}
	before := nc.Stats().OutMsgs
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/api/v1/approvals?limit=10", nil))
	if w.Code != 200 {
		t.Fatalf("%d %s", w.Code, w.Body.String())
	}
	// The listing is one request (a consumer) and its flow control; then one read a request shown.
	if sent := nc.Stats().OutMsgs - before; sent > 10+20 {
		t.Errorf("a page of 10 sent %d messages to the servers (the queue: %d requests), want at most 30", sent, queued)
	}
	// Paged through by next alone, every request is listed once.
	seen := walk(t, h, "/api/v1/approvals", "limit=1000", "approvals", 1000, func(q guard.Request) string { return q.Proposal.ID })
	onceEach(t, "approval request", seen, ids)
}
