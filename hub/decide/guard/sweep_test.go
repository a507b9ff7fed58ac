package guard

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/internal/testutil"
)

// TestSweep: what can no longer matter is removed, what still can is kept, and a swept day is
// not re-opened by a late proposal (it is outside max_skew).
func TestSweep(t *testing.T) {
	g, c, js := single(t, nil)
	ctx := context.Background()
	old := promo(c, "r", "SKU-1", "retail", 10)
	queued := promo(c, "r", "SKU-2", "retail", 22)
	mustCheck(t, g, old)
	mustCheck(t, g, queued)
	c.Add(4 * 24 * time.Hour)
	fresh := promo(c, "r", "SKU-3", "retail", 10)
	if v := mustCheck(t, g, fresh); v.Outcome != Allow {
		t.Fatal(v)
	}
	n, err := g.Sweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	recs := allRecords(t, js, g.cfg.Bucket)
	if _, ok := recs[old.ID]; ok {
		t.Error("old decision kept")
	}
	if r := recs[queued.ID]; r == nil || r.Status != string(Expired) {
		t.Errorf("queued decision %+v, want expired", r)
	}
	if r := recs[fresh.ID]; r == nil || r.Status != string(Allow) {
		t.Errorf("fresh decision %+v", r)
	}
	if l := ledgerOf(t, js, g.cfg.Bucket, dayKey("2026-12-04", "")); len(l.Entries) != 0 {
		t.Errorf("old day kept: %+v", l)
	}
	if l := ledgerOf(t, js, g.cfg.Bucket, dayKey("2026-12-08", "")); len(l.Entries) != 1 {
		t.Errorf("today's day: %+v", l)
	}
	if l := ledgerOf(t, js, g.cfg.Bucket, coolKey("SKU-1", "retail")); len(l.Entries) != 0 {
		t.Errorf("old cooldown kept: %+v", l)
	}
	if l := ledgerOf(t, js, g.cfg.Bucket, coolKey("SKU-3", "retail")); len(l.Entries) != 1 {
		t.Errorf("fresh cooldown: %+v", l)
	}
	if n < 3 {
		t.Errorf("removed %d keys", n)
	}
	// The old proposal again: its record is gone, but it is days old and cannot act.
	if v := mustCheck(t, g, old); v.Outcome != Suppress || v.Guardrail != GTimeSkew {
		t.Errorf("late replay after sweep: %+v", v)
	}
}

// AllowedSince returns the decisions allowed at or after a time, as their records now stand: not
// those suppressed, released since, or deleted; and not those allowed earlier.
func TestAllowedSince(t *testing.T) {
	g, c, js := single(t, nil)
	ctx := context.Background()
	t0 := c.Now()
	allowed, suppressed, released := promo(c, "r", "SKU-1", "retail", 10), promo(c, "r", "SKU-2", "retail", 40), promo(c, "r", "SKU-3", "retail", 10)
	gone := promo(c, "r", "SKU-4", "retail", 10)
	for _, p := range []Proposal{allowed, suppressed, released, gone} {
		mustCheck(t, g, p)
	}
	if err := g.Release(ctx, released.ID); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, g.cfg.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, prefixDec+gone.ID); err != nil {
		t.Fatal(err)
	}
	c.Add(2 * time.Hour)
	later := promo(c, "r", "SKU-5", "retail", 10)
	mustCheck(t, g, later)
	ids := func(since time.Time) []string {
		got, err := g.AllowedSince(ctx, since)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, a := range got {
			out = append(out, a.Proposal.SKU)
		}
		return out
	}
	if got := fmt.Sprint(ids(t0.Add(-time.Minute))); got != "[SKU-1 SKU-5]" {
		t.Errorf("allowed since before the first: %s, want [SKU-1 SKU-5]", got)
	}
	if got := fmt.Sprint(ids(t0.Add(time.Hour))); got != "[SKU-5]" {
		t.Errorf("allowed since an hour later: %s, want [SKU-5]", got)
	}
	if got := ids(c.Now().Add(time.Minute)); len(got) != 0 {
		t.Errorf("allowed since after the last: %v", got)
	}
}

// TestSweepFinishesAbandonedClaim: a replica that stopped between its reservations and its verdict
// leaves a claim that only a Check of the same id would take over — and past max_skew that Check
// could only suppress it. Nothing checks it again once its time bucket is over: the sweep finishes
// it as that Check would, giving back the day's count and budget and the cooldown it held.
func TestSweepFinishesAbandonedClaim(t *testing.T) {
	g, c, js := single(t, nil)
	ctx := context.Background()
	p := promo(c, "r", "SKU-1", "retail", 10)
	dead := openGuard(t, js, g.cfg, "dead")
	if _, ok, err := dead.reserveCooldown(ctx, coolKey(p.SKU, p.Channel), p.ID, p.Time); err != nil || !ok {
		t.Fatal(ok, err)
	}
	if _, ok, err := dead.reserveDay(ctx, dayKey("2026-12-04", ""), p.ID, p.Time, 10, g.cfg.Daily, GDailyCount, GDailyBudget, "x"); err != nil || !ok {
		t.Fatal(ok, err)
	}
	kv, err := js.KeyValue(ctx, g.cfg.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	rec := record{Status: statusClaimed, Owner: "dead", Lease: c.Now().Add(g.cfg.ClaimLease), Created: c.Now(), Proposal: p}
	if _, err := kv.Create(ctx, prefixDec+p.ID, mustJSON(t, rec)); err != nil {
		t.Fatal(err)
	}
	// Within the lease the claim is its replica's.
	if _, err := g.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if r := allRecords(t, js, g.cfg.Bucket)[p.ID]; r == nil || r.Status != statusClaimed {
		t.Fatalf("claim within its lease: %+v", r)
	}
	c.Add(g.cfg.MaxSkew + time.Minute)
	if _, err := g.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if r := allRecords(t, js, g.cfg.Bucket)[p.ID]; r == nil || r.Status != string(Suppress) {
		t.Fatalf("abandoned claim after the sweep: %+v", r)
	}
	for _, k := range []string{coolKey(p.SKU, p.Channel), dayKey("2026-12-04", "")} {
		if l := ledgerOf(t, js, g.cfg.Bucket, k); len(l.Entries) != 0 {
			t.Errorf("%s still holds the abandoned decision: %+v", k, l)
		}
	}
}

// subjectMsgs counts the messages the bucket's stream holds under the keys matching filter: values
// and delete markers.
func subjectMsgs(t *testing.T, g *Guard, js jetstream.JetStream, filter string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, "KV_"+g.cfg.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(g.subjPrefix+filter))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range info.State.Subjects {
		n += int(c)
	}
	return n
}

// oldDecisions decides n proposals (allowed up to the daily cap, suppressed after it) and moves the
// clock past their retention.
func oldDecisions(t *testing.T, g *Guard, c *clock, n int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range n {
		p := promo(c, "r", fmt.Sprintf("SKU-%04d", i), "retail", 10)
		mustCheck(t, g, p)
		ids[i] = p.ID
	}
	c.Add(4 * 24 * time.Hour)
	return ids
}

// TestSweepLeavesNothing: what Sweep removes leaves nothing in the bucket. It deleted each key,
// which leaves a delete marker for good (the bucket has no TTL, and no listing of Sweep's sees a
// deleted key): every listing of the bucket streamed one per decision, day and cooldown ever swept.
func TestSweepLeavesNothing(t *testing.T) {
	g, c, js := single(t, nil)
	ctx := context.Background()
	oldDecisions(t, g, c, 60)
	n, err := g.Sweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n < 60 {
		t.Errorf("swept %d keys, want the 60 decisions and their ledgers", n)
	}
	nc := js.Conn()
	before := nc.Stats().InMsgs
	if _, err := g.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	got := nc.Stats().InMsgs - before
	if left := subjectMsgs(t, g, js, ">"); left != 0 || got > 10 {
		t.Errorf("the bucket swept of 60 decisions holds %d messages, and sweeping it again received %d messages, want none and a few", left, got)
	}
}

// TestSweepRemovesOldDeleteMarkers: the delete markers an earlier release's Sweep left (or a replica
// of one, during an upgrade) are removed by Sweep, which walks the bucket anyway; a key written
// again over a marker is kept.
func TestSweepRemovesOldDeleteMarkers(t *testing.T) {
	g, c, js := single(t, nil)
	ctx := context.Background()
	ids := oldDecisions(t, g, c, 20)
	for _, id := range ids {
		if err := g.kv.Delete(ctx, prefixDec+id); err != nil {
			t.Fatal(err)
		}
	}
	again := promo(c, "r", "SKU-AGAIN", "retail", 10)
	if _, err := g.kv.Put(ctx, prefixDec+ids[0], mustJSON(t, record{Status: statusClaimed, Owner: "r1", Lease: c.Now().Add(time.Hour), Created: c.Now(), Proposal: again})); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if left := subjectMsgs(t, g, js, prefixDec+">"); left != 1 {
		t.Errorf("the decisions hold %d messages after Sweep, want the one written again", left)
	}
	if r := allRecords(t, js, g.cfg.Bucket)[ids[0]]; r == nil || r.Proposal.SKU != "SKU-AGAIN" {
		t.Errorf("the decision written again over a marker: %+v", r)
	}
}

// TestSweepRemovalKeepsAKeyWrittenAgain: Sweep removes a key up to the revision it judged: a
// decision written again under the key after it was read (here: by another replica, after its
// record was removed) stays.
func TestSweepRemovalKeepsAKeyWrittenAgain(t *testing.T) {
	g, c, js := single(t, nil)
	ctx := context.Background()
	ids := oldDecisions(t, g, c, 1)
	key := prefixDec + ids[0]
	_, rev, err := g.get(ctx, key)
	if err != nil || rev == 0 {
		t.Fatal(rev, err)
	}
	again := promo(c, "r", "SKU-AGAIN", "retail", 10)
	if _, err := g.kv.Put(ctx, key, mustJSON(t, record{Status: statusClaimed, Owner: "r2", Lease: c.Now().Add(time.Hour), Created: c.Now(), Proposal: again})); err != nil {
		t.Fatal(err)
	}
	if err := g.purgeKey(ctx, key, rev); err != nil {
		t.Fatal(err)
	}
	if r := allRecords(t, js, g.cfg.Bucket)[ids[0]]; r == nil || r.Proposal.SKU != "SKU-AGAIN" {
		t.Errorf("the decision written again after the read: %+v", r)
	}
}

// blockedWatchers counts the goroutines of KV watches blocked delivering to their channel.
func blockedWatchers() int {
	buf := make([]byte, 1<<22)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "[chan send") && strings.Contains(g, "jetstream.(*kvs).WatchFiltered.func1") {
			n++
		}
	}
	return n
}

// TestSweepTimedOutListingLeaksNothing: a listing of the bucket that times out part way leaves no
// goroutine behind. The listing (ListKeysFiltered) stopped reading its watch when its time was up:
// the watch's delivery, blocked on its full channel, stayed blocked for good, one goroutine and its
// messages per timed-out listing (a listing slow enough to time out comes back each sweep).
func TestSweepTimedOutListingLeaksNothing(t *testing.T) {
	g, _, _ := single(t, nil)
	ctx := context.Background()
	for i := range 5000 {
		if _, err := g.kv.PutString(ctx, fmt.Sprintf("x.%05d", i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	cut := 0
	for i := range 40 {
		// The call's time ends during its listing (or before, or after it: then nothing to see).
		sctx, cancel := context.WithTimeout(ctx, time.Duration(1+i)*5*time.Millisecond)
		if _, err := g.Sweep(sctx); err != nil {
			cut++
		}
		cancel()
	}
	t.Logf("%d of 40 sweeps cut short", cut)
	testutil.WaitForState(t, 5*time.Second, "no watch goroutine blocked after the sweeps' listings timed out", func() (bool, string) {
		n := blockedWatchers()
		return n == 0, fmt.Sprintf("%d watch goroutines blocked for good after the sweeps' listings timed out", n)
	})
}
