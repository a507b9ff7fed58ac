package guard

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// queueMany queues n requests, each step of the clock after the one before; their ids in order.
func queueMany(t *testing.T, g *Guard, c *clock, n int, step time.Duration) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range n {
		p := promo(c, "r", fmt.Sprintf("SKU-%04d", i), "retail", 22)
		if v := mustCheck(t, g, p); v.Outcome != NeedsApproval {
			t.Fatalf("%d: %+v", i, v)
		}
		ids[i] = p.ID
		c.Add(step)
	}
	return ids
}

// TestPendingPageReadsItsPage: a page of the queue reads the decisions of its page, not of the
// whole queue (Pending made one KV request per queued request for every view).
func TestPendingPageReadsItsPage(t *testing.T) {
	g, c, js := single(t, func(cfg *Config) { cfg.Approval.TTL = 24 * time.Hour })
	ctx := context.Background()
	ids := queueMany(t, g, c, 400, time.Second)
	nc := js.Conn()
	before := nc.Stats().OutMsgs
	p, err := g.PendingPage(ctx, 0, 10)
	sent := nc.Stats().OutMsgs - before
	if err != nil || len(p.Requests) != 10 || p.Total != 400 || p.Next == 0 {
		t.Fatalf("page: %d requests, total %d, next %d, %v", len(p.Requests), p.Total, p.Next, err)
	}
	for i, q := range p.Requests {
		if q.Proposal.ID != ids[i] {
			t.Fatalf("request %d of the page is %s (%s), want %s: the oldest first", i, q.Proposal.ID, q.Proposal.SKU, ids[i])
		}
	}
	// The listing is one request (a consumer) and its flow control; then a read per entry.
	t.Logf("a page of 10 of 400: %d messages sent", sent)
	if sent > 10+20 {
		t.Errorf("a page of 10 of a queue of 400 sent %d messages to the servers, want at most 30", sent)
	}
}

// TestPendingPageEachOnce: paging through the queue lists every request waiting once, oldest first,
// while requests leave it between pages (answered, expired and swept by Expire, expired and found so
// by the page that reads them); every expiry is reported once by Expire.
func TestPendingPageEachOnce(t *testing.T) {
	g, c, _ := single(t, nil) // approval ttl 1h
	ctx := context.Background()
	start := c.Now()
	const n, limit = 300, 40
	ids := queueMany(t, g, c, n, 10*time.Second) // request i created at start + 10 s × i
	seen := map[string]int{}
	var order []string
	reported := map[string]int{}
	expire := func() {
		t.Helper()
		if _, err := g.Expire(ctx, func(q Request) error {
			reported[q.Proposal.ID]++
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	until := func(i int) { // requests 0..i expired
		c.Add(start.Add(10*time.Second*time.Duration(i) + time.Hour + time.Second).Sub(c.Now()))
	}
	var after uint64
	for page := 0; ; page++ {
		if page > n/limit+5 {
			t.Fatalf("still paging after %d pages", page)
		}
		p, err := g.PendingPage(ctx, after, limit)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Requests) > limit {
			t.Fatalf("page %d: %d requests, want at most %d", page, len(p.Requests), limit)
		}
		for _, q := range p.Requests {
			seen[q.Proposal.ID]++
			order = append(order, q.Proposal.ID)
		}
		switch page {
		case 0:
			if p.Total != n {
				t.Errorf("total %d, want %d", p.Total, n)
			}
			// Requests 0..59 expire and Expire sweeps them: 40..59, on the next page, are gone.
			until(59)
			expire()
		case 1:
			// 100 is rejected and 101..110 expire, unswept: the next page reads them.
			if _, err := g.Reject(ctx, ids[100], "bob", ""); err != nil {
				t.Fatal(err)
			}
			until(110)
		}
		if p.Next == 0 {
			break
		}
		after = p.Next
	}
	expire()
	var want []string
	for i, id := range ids {
		if i < 40 || i >= 60 && i != 100 && (i < 101 || i > 110) {
			want = append(want, id)
		}
	}
	for i, id := range ids {
		if w := map[bool]int{true: 1}[i < 40 || i >= 60 && i != 100 && (i < 101 || i > 110)]; seen[id] != w {
			t.Errorf("request %d listed %d times, want %d", i, seen[id], w)
		}
		if w := map[bool]int{true: 1}[i <= 110 && i != 100]; reported[id] != w {
			t.Errorf("expiry of request %d reported %d times, want %d", i, reported[id], w)
		}
	}
	if fmt.Sprint(order) != fmt.Sprint(want) {
		t.Errorf("listed in another order than queued:\n got %v\nwant %v", order, want)
	}
}

// queueSubjects counts the messages the bucket's stream holds under the queue's keys: entries and
// delete markers.
func queueSubjects(t *testing.T, g *Guard, js jetstream.JetStream) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, "KV_"+g.cfg.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(g.subjPrefix+prefixQueue+">"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range info.State.Subjects {
		n += int(c)
	}
	return n
}

// TestAnsweredRequestsLeaveNothing: a request that leaves the queue leaves nothing of it in the
// bucket. Each left a delete marker, for good (no TTL, and Sweep lists no deleted key), and every
// listing of the queue (each view of it, each Expire, the engine's each timer) streamed one per
// request ever queued: with a flooded queue, thousands more each day, for ever.
func TestAnsweredRequestsLeaveNothing(t *testing.T) {
	g, c, js := single(t, func(cfg *Config) { cfg.Approval.TTL = 24 * time.Hour })
	ctx := context.Background()
	ids := queueMany(t, g, c, 300, time.Second)
	for i, id := range ids {
		var err error
		if i%2 == 0 {
			_, err = g.Reject(ctx, id, "bob", "")
		} else {
			_, err = g.Approve(ctx, id, "bob", "")
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	nc := js.Conn()
	before := nc.Stats().InMsgs
	if p, err := g.PendingPage(ctx, 0, 10); err != nil || len(p.Requests) != 0 || p.Total != 0 {
		t.Fatalf("%+v %v", p, err)
	}
	got := nc.Stats().InMsgs - before
	if n := queueSubjects(t, g, js); n != 0 || got > 10 {
		t.Errorf("the queue emptied of 300 requests holds %d messages, and listing it received %d messages, want none and a few", n, got)
	}
}

// TestExpireRemovesOldDeleteMarkers: the delete markers an earlier release left in the queue (or a
// replica of one, during an upgrade) are removed by Expire, which walks the queue anyway.
func TestExpireRemovesOldDeleteMarkers(t *testing.T) {
	g, c, js := single(t, nil)
	ctx := context.Background()
	ids := queueMany(t, g, c, 20, time.Second)
	for _, id := range ids[:15] {
		if err := g.kv.Delete(ctx, prefixQueue+id); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := g.Expire(ctx, func(Request) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if n := queueSubjects(t, g, js); n != 5 {
		t.Errorf("the queue holds %d messages after Expire, want the 5 requests waiting", n)
	}
	if p, err := g.PendingPage(ctx, 0, 100); err != nil || len(p.Requests) != 5 || p.Requests[0].Proposal.ID != ids[15] {
		t.Errorf("%+v %v", p, err)
	}
}
