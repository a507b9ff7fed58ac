package console

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub/api"
	"github.com/gemba-io/gemba/hub/decide/guard"
	"github.com/gemba-io/gemba/internal/natstest"
)

// guardDecisions answers the approval listing from a real guard (the rest from the fake).
type guardDecisions struct {
	*fakeDecisions
	g *guard.Guard
}

func (d *guardDecisions) PendingPage(ctx context.Context, after uint64, limit int) (guard.QueuePage, error) {
	return d.g.PendingPage(ctx, after, limit)
}

// floodQueue opens a guard whose approval threshold every proposal is above and queues n requests,
// one a minute of the guard's clock; it returns the guard and the ids in the order they were queued.
func floodQueue(t *testing.T, js jetstream.JetStream, n int) (*guard.Guard, []string) {
	t.Helper()
	var mu sync.Mutex
	now := time.Now().UTC().Add(-time.Duration(n) * time.Minute)
	clock := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return now
	}
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
		mu.Lock()
		now = now.Add(time.Minute)
		mu.Unlock()
	}
	return g, ids
}

var pendingRow = regexp.MustCompile(`<tr data-id="([0-9a-f]+)">`)

// TestApprovalsPageBoundedByPage: the approvals page shows a page of the queue (page_size, oldest
// first, the queue's size and a next link), reading only that page's requests. Each view read,
// decoded and rendered every queued request: a rule flooding the queue (thousands a day) made the
// page cost the whole queue in KV reads and memory, and a page of thousands of forms nobody can use.
func TestApprovalsPageBoundedByPage(t *testing.T) {
	_, js := natstest.Connect(t, natstest.JetStream(t).URL())
	const queued = 3000
	g, ids := floodQueue(t, js, queued)
	e := newEnv(t, nil)
	gd := &guardDecisions{fakeDecisions: e.dec, g: g}
	e.c.src.Decisions = func() api.Decisions { return gd }
	sc, _ := e.login(t, "vera", "viewer-pw")
	path := "/console/approvals"
	for page := 0; page < 2; page++ {
		n, w := e.allocated(t, path, sc)
		body := w.Body.String()
		var rows []string
		for _, m := range pendingRow.FindAllStringSubmatch(body, -1) {
			rows = append(rows, m[1])
		}
		from := page * 200
		if len(rows) != 200 || rows[0] != ids[from] || rows[199] != ids[from+199] || !strings.Contains(body, fmt.Sprintf("Waiting (%d)", queued)) {
			first := ""
			if len(rows) > 0 {
				first = rows[0]
			}
			t.Fatalf("%s: %d requests from %s; want 200 (page_size) from the %dth oldest, %s, and the queue's size", path, len(rows), first, from+1, ids[from])
		}
		t.Logf("%s: %d kB", path, n>>10)
		if bound := uint64(4*queued<<10 + 4<<20); n > bound {
			t.Errorf("%s: a page of 200 allocated %d kB (the queue: %d requests), want at most %d kB", path, n>>10, queued, bound>>10)
		}
		next := regexp.MustCompile(`<a href="(\?after=[0-9]+)" id="next">`).FindStringSubmatch(body)
		if next == nil {
			t.Fatalf("%s: no next page link", path)
		}
		path = "/console/approvals" + next[1]
	}
	if w := e.do("GET", "/console/approvals?after=x", nil, []*http.Cookie{sc}, nil); w.Code != http.StatusBadRequest {
		t.Errorf("a cursor that is not a queue position: %d, want 400", w.Code)
	}
}
