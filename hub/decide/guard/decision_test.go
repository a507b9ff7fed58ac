package guard

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gemba-io/gemba/internal/natstest"
)

func TestDecisionID(t *testing.T) {
	b := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	id := DecisionID("v1", "r", "SKU", "web", b)
	if len(id) != 32 || !validID(id) {
		t.Fatalf("id %q", id)
	}
	if DecisionID("v1", "r", "SKU", "web", b.In(time.FixedZone("X", 3600))) != id {
		t.Fatal("the same instant in another zone is another id")
	}
	for name, other := range map[string]string{
		"version": DecisionID("v2", "r", "SKU", "web", b),
		"rule":    DecisionID("v1", "r2", "SKU", "web", b),
		"sku":     DecisionID("v1", "r", "SKU2", "web", b),
		"channel": DecisionID("v1", "r", "SKU", "retail", b),
		"bucket":  DecisionID("v1", "r", "SKU", "web", b.Add(time.Hour)),
		"shifted": DecisionID("v1", "rS", "KU", "web", b),
	} {
		if other == id {
			t.Errorf("%s: same id", name)
		}
	}
	if !TimeBucket(b.Add(59*time.Minute), time.Hour).Equal(b) || TimeBucket(b.Add(time.Hour), time.Hour).Equal(b) {
		t.Fatal("time bucket")
	}
}

// TestDecisionOnce: the second Check of an id returns the first verdict and the proposal it judged,
// whatever it carries, and consumes nothing more.
func TestDecisionOnce(t *testing.T) {
	g, c, js := single(t, nil)
	p := promo(c, "r", "SKU-1", "retail", 10)
	first := mustCheck(t, g, p)
	if first.Outcome != Allow || first.Replayed {
		t.Fatalf("first %+v", first)
	}
	q := p
	q.Discount = 29 // different content, same id
	q.Inputs[0].Stale = true
	second := mustCheck(t, g, q)
	if !second.Replayed || second.Outcome != Allow || !second.Decided.Equal(first.Decided) || len(second.Assessments) != len(first.Assessments) {
		t.Fatalf("second %+v", second)
	}
	// What was judged is what the caller must act on, not its own (different) proposal.
	if second.Judged == nil || second.Judged.Discount != 10 || second.Judged.Inputs[0].Stale {
		t.Fatalf("replay judged %+v, want the first proposal", second.Judged)
	}
	l := ledgerOf(t, js, g.cfg.Bucket, dayKey("2026-12-04", ""))
	if len(l.Entries) != 1 || l.budget() != 10 {
		t.Fatalf("day ledger %+v", l)
	}
}

// TestDecisionOnceAcrossReplicas: many concurrent Checks of the same ids on two replicas with their
// own connections: each id decided once, every caller sees that verdict, each counted once.
func TestDecisionOnceAcrossReplicas(t *testing.T) {
	n := natstest.JetStream(t)
	c := newClock()
	cfg := testConfig(c)
	cfg.Daily.MaxPromotions = 100
	cfg.Daily.MaxBudget = 0
	cfg.Approval.Above = 0
	var gs []*Guard
	for _, name := range []string{"a", "b"} {
		_, js := natstest.Connect(t, n.URL())
		gs = append(gs, openGuard(t, js, cfg, name))
	}
	_, js := natstest.Connect(t, n.URL())
	var ps []Proposal
	for _, s := range []string{"A", "B", "C", "D", "E", "F", "G", "H"} {
		ps = append(ps, promo(c, "r", s, "retail", 10))
	}
	type got struct {
		v   Verdict
		err error
	}
	res := make([][]got, len(ps))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, p := range ps {
		for k := range 6 {
			g := gs[k%2]
			wg.Go(func() {
				v, err := g.Check(context.Background(), p)
				mu.Lock()
				res[i] = append(res[i], got{v, err})
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	for i, rs := range res {
		fresh := 0
		for _, r := range rs {
			if r.err != nil {
				t.Fatalf("%s: %v", ps[i].SKU, r.err)
			}
			if !r.v.Replayed {
				fresh++
			}
			if r.v.Outcome != Allow || !r.v.Decided.Equal(rs[0].v.Decided) || r.v.Replica != rs[0].v.Replica {
				t.Fatalf("%s: verdicts differ: %+v vs %+v", ps[i].SKU, r.v, rs[0].v)
			}
		}
		if fresh != 1 {
			t.Fatalf("%s decided %d times", ps[i].SKU, fresh)
		}
	}
	if l := ledgerOf(t, js, cfg.Bucket, dayKey("2026-12-04", "")); len(l.Entries) != len(ps) {
		t.Fatalf("day ledger has %d entries, want %d", len(l.Entries), len(ps))
	}
}

// TestTakeover: a claim whose replica died before deciding is taken over once its lease lapses.
func TestTakeover(t *testing.T) {
	g, c, js := single(t, nil)
	p := promo(c, "r", "SKU-1", "retail", 10)
	// Replica "dead" claimed the decision and reserved the cooldown, then crashed.
	kv, err := js.KeyValue(context.Background(), g.cfg.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	dead := openGuard(t, js, g.cfg, "dead")
	if _, ok, err := dead.reserveCooldown(context.Background(), coolKey(p.SKU, p.Channel), p.ID, p.Time); err != nil || !ok {
		t.Fatal(ok, err)
	}
	rec := record{Status: statusClaimed, Owner: "dead", Lease: c.Now().Add(time.Second), Created: c.Now(), Proposal: p}
	if _, err := kv.Create(context.Background(), prefixDec+p.ID, mustJSON(t, rec)); err != nil {
		t.Fatal(err)
	}
	// While the lease holds, a Check waits.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	_, err = g.Check(ctx, p)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("during the lease: %v", err)
	}
	c.Add(2 * time.Second)
	v := mustCheck(t, g, p)
	if v.Outcome != Allow || v.Replica != "r1" || g.Metrics.Takeovers.Load() != 1 {
		t.Fatalf("after the lease: %+v takeovers %d", v, g.Metrics.Takeovers.Load())
	}
	if l := ledgerOf(t, js, g.cfg.Bucket, coolKey(p.SKU, p.Channel)); len(l.Entries) != 1 {
		t.Fatalf("cooldown ledger %+v: the dead replica's reservation counted twice?", l)
	}
}

// TestTakeoverSuppressReleases: a taken-over decision that is now suppressed gives back what the
// dead replica reserved.
func TestTakeoverSuppressReleases(t *testing.T) {
	g, c, js := single(t, nil)
	p := promo(c, "r", "SKU-1", "retail", 10)
	kv, _ := js.KeyValue(context.Background(), g.cfg.Bucket)
	dead := openGuard(t, js, g.cfg, "dead")
	ctx := context.Background()
	if _, ok, err := dead.reserveCooldown(ctx, coolKey(p.SKU, p.Channel), p.ID, p.Time); err != nil || !ok {
		t.Fatal(ok, err)
	}
	if _, ok, err := dead.reserveDay(ctx, dayKey("2026-12-04", ""), p.ID, p.Time, 10, g.cfg.Daily, GDailyCount, GDailyBudget, "x"); err != nil || !ok {
		t.Fatal(ok, err)
	}
	rec := record{Status: statusClaimed, Owner: "dead", Lease: c.Now().Add(-time.Second), Created: c.Now(), Proposal: p}
	if _, err := kv.Create(ctx, prefixDec+p.ID, mustJSON(t, rec)); err != nil {
		t.Fatal(err)
	}
	if err := g.SetKill(ctx, true, "ops", "stop"); err != nil {
		t.Fatal(err)
	}
	if v := mustCheck(t, g, p); v.Outcome != Suppress || v.Guardrail != GKillSwitch {
		t.Fatalf("%+v", v)
	}
	for _, k := range []string{coolKey(p.SKU, p.Channel), dayKey("2026-12-04", "")} {
		if l := ledgerOf(t, js, g.cfg.Bucket, k); len(l.Entries) != 0 {
			t.Fatalf("%s still holds %+v", k, l)
		}
	}
}

// TestRelease: an allowed action not delivered gives back its count, budget and cooldown.
func TestRelease(t *testing.T) {
	g, c, js := single(t, func(cfg *Config) { cfg.Daily.MaxPromotions = 1 })
	ctx := context.Background()
	p := promo(c, "r", "SKU-1", "retail", 10)
	if v := mustCheck(t, g, p); v.Outcome != Allow {
		t.Fatal(v)
	}
	q := promo(c, "r2", "SKU-1", "retail", 10)
	if v := mustCheck(t, g, q); v.Outcome != Suppress || v.Guardrail != GCooldown {
		t.Fatalf("%s %s", v.Outcome, v.Guardrail)
	}
	if err := g.Release(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	if err := g.Release(ctx, p.ID); err != nil {
		t.Fatalf("second release: %v", err)
	}
	if v := mustCheck(t, g, p); v.Outcome != Released || !v.Replayed {
		t.Fatalf("released decision checked again: %+v", v)
	}
	for _, k := range []string{coolKey(p.SKU, p.Channel), dayKey("2026-12-04", "")} {
		if l := ledgerOf(t, js, g.cfg.Bucket, k); len(l.Entries) != 0 {
			t.Fatalf("%s still holds %+v", k, l)
		}
	}
	r := promo(c, "r3", "SKU-1", "retail", 10)
	if v := mustCheck(t, g, r); v.Outcome != Allow {
		t.Fatalf("after release: %s %s", v.Outcome, v.Reason)
	}
	if err := g.Release(ctx, q.ID); !errors.Is(err, ErrState) {
		t.Fatalf("release of a suppressed decision: %v", err)
	}
	if err := g.Release(ctx, DecisionID("x", "y", "z", "w", c.Now())); !errors.Is(err, ErrNotFound) {
		t.Fatalf("release of an unknown decision: %v", err)
	}
}

// TestCorruptValues: a record or ledger that does not decode is an error naming the key, never
// overwritten, never a panic.
func TestCorruptValues(t *testing.T) {
	g, c, js := single(t, nil)
	ctx := context.Background()
	kv, err := js.KeyValue(ctx, g.cfg.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	p := promo(c, "r", "SKU-1", "retail", 10)
	if _, err := kv.Put(ctx, prefixDec+p.ID, []byte("garbage")); err != nil {
		t.Fatal(err)
	}
	for name, call := range map[string]func() error{
		"check":   func() error { _, err := g.Check(ctx, p); return err },
		"approve": func() error { _, err := g.Approve(ctx, p.ID, "bob", ""); return err },
		"reject":  func() error { _, err := g.Reject(ctx, p.ID, "bob", ""); return err },
		"release": func() error { return g.Release(ctx, p.ID) },
	} {
		if err := call(); err == nil || !strings.Contains(err.Error(), p.ID) || !strings.Contains(err.Error(), "undecodable") {
			t.Errorf("%s: %v", name, err)
		}
	}
	q := promo(c, "r", "SKU-2", "retail", 10)
	if _, err := kv.Put(ctx, coolKey(q.SKU, q.Channel), []byte("{")); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Check(ctx, q); err == nil || !strings.Contains(err.Error(), coolKey(q.SKU, q.Channel)) {
		t.Fatalf("corrupt ledger: %v", err)
	}
	if e, err := kv.Get(ctx, coolKey(q.SKU, q.Channel)); err != nil || string(e.Value()) != "{" {
		t.Fatalf("corrupt ledger overwritten: %v", err)
	}
}

// TestFirstDecisionRoundTrips: the first Check of an id with nothing to reserve costs three
// requests (the claim and the kill switch, side by side, then the verdict); an id whose record
// was deleted, and one decided already, still go through the read-first path.
func TestFirstDecisionRoundTrips(t *testing.T) {
	g, c, js := single(t, func(cfg *Config) {
		cfg.Cooldown, cfg.Daily, cfg.Channels, cfg.Approval = 0, Caps{}, nil, ApprovalConfig{}
	})
	nc := js.Conn()
	p := promo(c, "r", "SKU-1", "web", 10)
	before := nc.Stats().OutMsgs
	if v := mustCheck(t, g, p); v.Outcome != Allow || v.Replayed {
		t.Fatalf("first %+v", v)
	}
	if n := nc.Stats().OutMsgs - before; n != 3 {
		t.Fatalf("first decision sent %d requests, want 3 (claim, kill switch, verdict)", n)
	}
	if v := mustCheck(t, g, p); !v.Replayed || v.Outcome != Allow {
		t.Fatalf("again %+v", v)
	}

	// A deleted record fails the create (its delete marker is the key's last message): the
	// read-first path claims over it.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, g.cfg.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	q := promo(c, "r", "SKU-2", "web", 10)
	if _, err := kv.Create(ctx, prefixDec+q.ID, []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, prefixDec+q.ID); err != nil {
		t.Fatal(err)
	}
	if v := mustCheck(t, g, q); v.Outcome != Allow || v.Replayed {
		t.Fatalf("over a deleted record %+v", v)
	}
	if recs := allRecords(t, js, g.cfg.Bucket); recs[q.ID] == nil || recs[q.ID].Status != string(Allow) || recs[q.ID].Owner != "r1" {
		t.Fatalf("record over the deleted one: %+v", recs[q.ID])
	}
}
