package inventory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/config"
	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

// connectJS connects to urls (natstest's client: reconnecting forever) with opts added.
func connectJS(t testing.TB, urls string, opts ...nats.Option) jetstream.JetStream {
	t.Helper()
	_, js := natstest.Connect(t, urls, opts...)
	return js
}

// testClock is an injectable hub clock, fixed unless a test moves it.
type testClock struct{ ns atomic.Int64 }

func newTestClock(t time.Time) *testClock {
	c := &testClock{}
	c.ns.Store(t.UnixNano())
	return c
}

func (c *testClock) Now() time.Time { return time.Unix(0, c.ns.Load()).UTC() }

func testConfig(clock *testClock) Config {
	c := DefaultConfig()
	c.Now = clock.Now
	c.RetryFor = 20 * time.Second
	return c
}

func openStore(t testing.TB, js jetstream.JetStream, cfg Config) *Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Open(ctx, js, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func mustMove(t testing.TB, s *Store, m Movement, want Outcome) Position {
	t.Helper()
	r, err := s.Move(context.Background(), m)
	if err != nil {
		t.Fatalf("move %s: %v", m.ID, err)
	}
	if want != 0 && r.Outcome != want {
		t.Errorf("move %s: outcome %s, want %s", m.ID, r.Outcome, want)
	}
	return r.Position
}

func mustSnap(t testing.TB, s *Store, sn Snapshot, want Outcome) Position {
	t.Helper()
	r, err := s.Snapshot(context.Background(), sn)
	if err != nil {
		t.Fatalf("snapshot %s: %v", sn.ID, err)
	}
	if r.Outcome != want {
		t.Errorf("snapshot %s: outcome %s, want %s", sn.ID, r.Outcome, want)
	}
	return r.Position
}

func TestStoreLateSnapshotDuplicatesAndRestart(t *testing.T) {
	srv := natstest.JetStream(t)
	clock := newTestClock(t0)
	cfg := testConfig(clock)
	js := connectJS(t, srv.URL())
	s := openStore(t, js, cfg)
	h := time.Hour
	moves := []Movement{mv("p1", Produced, 10, 9*h), mv("s1", Sold, 3, 8*h), mv("s0", Sold, 2, 11*h), mv("old", Produced, 4, 60*h)}
	for _, m := range moves {
		mustMove(t, s, m, 0)
	}
	expectPos(t, mustSnap(t, s, sn("erp-late", 100, 10*h), Applied), 100, 10, 3)
	expectPos(t, mustSnap(t, s, sn("erp-older", 1, 12*h), Stale), 100, 10, 3)
	p := mustMove(t, s, mv("s1", Sold, 3, 8*h), Duplicate)
	expectPos(t, p, 100, 10, 3)
	got, ok := s.Get("SKU", "S1")
	if !ok || got != p || got.Revision == 0 {
		t.Fatalf("Get %+v %v, want %+v", got, ok, p)
	}
	if _, ok := s.Get("SKU", "nowhere"); ok {
		t.Error("Get of an unknown key")
	}
	if n := s.Metrics.Applied.Load(); n != 3 {
		t.Errorf("applied %d, want 3", n)
	}
	if n := s.Metrics.Duplicates.Load(); n != 1 {
		t.Errorf("duplicates %d, want 1", n)
	}
	s.Close()

	// A new Store (another process, or this one after a restart) on a restarted server: the view loads
	// from the bucket and the same ids are still duplicates.
	srv.Stop()
	srv.Start() // same port and store
	s2 := openStore(t, connectJS(t, srv.URL()), cfg)
	got, ok = s2.Get("SKU", "S1")
	if !ok || got != p {
		t.Fatalf("after restart Get %+v %v, want %+v", got, ok, p)
	}
	for _, m := range moves[:2] {
		mustMove(t, s2, m, Duplicate)
	}
	mustSnap(t, s2, sn("erp-late", 100, 10*h), Duplicate)
	if got, _ := s2.Get("SKU", "S1"); got != p {
		t.Errorf("duplicates changed the position: %+v, want %+v", got, p)
	}
}

func TestStoreRefusesBadInput(t *testing.T) {
	srv := natstest.JetStream(t)
	s := openStore(t, connectJS(t, srv.URL()), testConfig(newTestClock(t0)))
	_, err := s.Move(context.Background(), Movement{ID: "sale:1:1", SKU: "A", Site: "S1", Kind: Sold, Qty: -1, Time: t0})
	var ie *InputError
	if !errors.Is(err, ErrInvalid) || !errors.As(err, &ie) || ie.ID != "sale:1:1" || ie.Field != "qty" {
		t.Errorf("negative qty: %v", err)
	}
	_, err = s.Snapshot(context.Background(), Snapshot{ID: "erp:1", SKU: "", Site: "S1", Time: t0})
	if err == nil || !strings.Contains(err.Error(), `snapshot "erp:1": sku: empty`) {
		t.Errorf("empty sku: %v", err)
	}
	if n := s.Metrics.Invalid.Load(); n != 2 {
		t.Errorf("invalid %d, want 2", n)
	}
	// Unknown sites and SKUs are accepted (the graph is checked elsewhere), with any characters.
	mustMove(t, s, Movement{ID: "x", SKU: "new sku.with*odd>chars", Site: "Site ü", Kind: Produced, Qty: 1, Time: t0}, Applied)
	if p, ok := s.Get("new sku.with*odd>chars", "Site ü"); !ok || p.Position != 1 || p.Site != "Site ü" {
		t.Errorf("odd names: %+v %v", p, ok)
	}
}

func TestStoreCorruptValueIsNotOverwritten(t *testing.T) {
	srv := natstest.JetStream(t)
	js := connectJS(t, srv.URL())
	s := openStore(t, js, testConfig(newTestClock(t0)))
	ctx := context.Background()
	kv, err := js.KeyValue(ctx, "GEMBA_INVENTORY")
	if err != nil {
		t.Fatal(err)
	}
	rev, err := kv.Put(ctx, keyOf("S1", "SKU"), []byte("not ours"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Move(ctx, mv("p1", Produced, 1, time.Hour))
	if err == nil || !strings.Contains(err.Error(), "movement p1 at S1/SKU: key S1.SKU") || !errors.Is(err, errCorrupt) {
		t.Errorf("move onto a corrupt value: %v", err)
	}
	if e, err := kv.Get(ctx, keyOf("S1", "SKU")); err != nil || e.Revision() != rev {
		t.Errorf("corrupt value overwritten: %v", err)
	}
	testutil.WaitFor(t, 5*time.Second, "the view to skip the corrupt value", func() bool { return s.Metrics.ViewErrors.Load() == 1 })
	if _, ok := s.Get("SKU", "S1"); ok {
		t.Error("corrupt value in the view")
	}
}

// TestStoreShuffledLedgers runs random histories through the store, several keys at once, and checks each
// key against its ledger, in the writer's view and in a second store's.
func TestStoreShuffledLedgers(t *testing.T) {
	srv := natstest.JetStream(t)
	clock := newTestClock(t0)
	s := openStore(t, connectJS(t, srv.URL()), testConfig(clock))
	other := openStore(t, connectJS(t, srv.URL()), testConfig(clock))
	r := rand.New(rand.NewPCG(7, 8))
	const keys = 12
	cases := make([]ledgerCase, keys)
	var wg sync.WaitGroup
	for k := range keys {
		cases[k] = randomLedger(r)
		r.Shuffle(len(cases[k].ops), func(i, j int) { cases[k].ops[i], cases[k].ops[j] = cases[k].ops[j], cases[k].ops[i] })
		sku := fmt.Sprintf("SKU-%02d", k)
		wg.Go(func() {
			for _, o := range cases[k].ops {
				var err error
				if o.m != nil {
					m := *o.m
					m.SKU = sku
					_, err = s.Move(context.Background(), m)
				} else {
					x := *o.s
					x.SKU = sku
					_, err = s.Snapshot(context.Background(), x)
				}
				if err != nil {
					t.Errorf("%s: %v", sku, err)
				}
			}
		})
	}
	wg.Wait()
	for k, c := range cases {
		sku := fmt.Sprintf("SKU-%02d", k)
		for _, st := range []*Store{s, other} {
			testutil.WaitFor(t, 10*time.Second, sku+" in both views", func() bool {
				p, ok := st.Get(sku, "S1")
				return ok && p.OnHand == c.onHand && p.Produced == c.produced && p.Sold == c.sold
			})
		}
	}
}

func TestStoreList(t *testing.T) {
	srv := natstest.JetStream(t)
	clock := newTestClock(t0)
	s := openStore(t, connectJS(t, srv.URL()), testConfig(clock))
	for _, site := range []string{"S2", "S1", "S3"} {
		for i := range 5 {
			mustMove(t, s, Movement{ID: site + fmt.Sprint(i), SKU: fmt.Sprintf("K%d", 4-i), Site: site, Kind: Produced, Qty: float64(i + 1), Time: t0}, Applied)
		}
	}
	var all []string
	f := Filter{Limit: 4}
	for {
		page := s.List(f)
		if len(page) == 0 {
			break
		}
		if len(page) > 4 {
			t.Fatalf("page of %d", len(page))
		}
		for _, p := range page {
			all = append(all, p.Site+"/"+p.SKU)
		}
		last := page[len(page)-1]
		f.AfterSite, f.AfterSKU = last.Site, last.SKU
	}
	want := "S1/K0 S1/K1 S1/K2 S1/K3 S1/K4 S2/K0 S2/K1 S2/K2 S2/K3 S2/K4 S3/K0 S3/K1 S3/K2 S3/K3 S3/K4"
	if got := strings.Join(all, " "); got != want {
		t.Errorf("paged list\n got %s\nwant %s", got, want)
	}
	if got := s.List(Filter{Site: "S2", AfterSKU: "K2", AfterSite: "S2"}); len(got) != 2 || got[0].SKU != "K3" || got[1].SKU != "K4" {
		t.Errorf("site S2 after K2: %+v", got)
	}
	if got := s.List(Filter{SKU: "K1"}); len(got) != 3 || got[0].Site != "S1" || got[2].Site != "S3" || got[0].Position != 4 {
		t.Errorf("sku K1: %+v", got)
	}
	if got := s.List(Filter{Site: "S9"}); len(got) != 0 {
		t.Errorf("unknown site: %+v", got)
	}
}

func TestStoreCloseAndCancel(t *testing.T) {
	srv := natstest.JetStream(t)
	js := connectJS(t, srv.URL())
	s := openStore(t, js, testConfig(newTestClock(t0)))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Move(context.Background(), mv("p", Produced, 1, time.Hour)); !errors.Is(err, ErrClosed) {
		t.Errorf("move after close: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Open(ctx, js, testConfig(newTestClock(t0)), nil); err == nil {
		t.Error("open with a cancelled context succeeded")
	}
	bad := DefaultConfig()
	bad.Replicas, bad.Bucket = 2, "a.b"
	if _, err := Open(context.Background(), js, bad, nil); err == nil || !strings.Contains(err.Error(), "bucket: must be") || !strings.Contains(err.Error(), "replicas: must be 1 or 3, got 2") {
		t.Errorf("bad config: %v", err)
	}
}

func TestConfigDecode(t *testing.T) {
	cfg := DefaultConfig()
	err := config.NewDecoder().Unmarshal([]byte("bucket: INV\nreplicas: 3\nhorizon: 72h\nrate_window_days: 14\ndemand_days: 21\n"), &cfg)
	if err != nil || cfg.Bucket != "INV" || cfg.Replicas != 3 || cfg.Horizon != 72*time.Hour || cfg.RateWindow != 14 || cfg.DemandDays != 21 {
		t.Fatalf("decode: %v %+v", err, cfg)
	}
	cfg = DefaultConfig()
	err = config.NewDecoder().Unmarshal([]byte("replicas: 2\nrate_window_days: 14\nhorizon: 1s\nbuckets: x\n"), &cfg)
	var ps config.Problems
	if !errors.As(err, &ps) {
		t.Fatalf("want problems, got %v", err)
	}
	for _, want := range []string{"buckets", "replicas: must be 1 or 3", "demand_days: must be between rate_window_days+1 (15)", "horizon: must be at least 1m"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("problems %q lack %q", err, want)
		}
	}
}

// lossyKV stores writes on the real bucket but loses the reply of the next n of them, as a timeout
// after the server stored the message does.
type lossyKV struct {
	jetstream.KeyValue
	lose atomic.Int32
}

func (l *lossyKV) lost(rev uint64, err error) (uint64, error) {
	if err == nil && l.lose.Add(-1) >= 0 {
		return 0, context.DeadlineExceeded
	}
	return rev, err
}

func (l *lossyKV) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	return l.lost(l.KeyValue.Create(ctx, key, value, opts...))
}

func (l *lossyKV) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	return l.lost(l.KeyValue.Update(ctx, key, value, rev))
}

// TestStoreLostReplies: a write whose reply is lost is retried without being applied twice, and reports
// what it did, also for a movement older than the horizon (which has no place in the list).
func TestStoreLostReplies(t *testing.T) {
	srv := natstest.JetStream(t)
	s := openStore(t, connectJS(t, srv.URL()), testConfig(newTestClock(t0)))
	lossy := &lossyKV{KeyValue: s.kv}
	s.kv = lossy
	cases := []struct {
		op       func() (Result, error)
		want     Outcome
		position float64
	}{
		{func() (Result, error) { return s.Move(context.Background(), mv("p1", Produced, 5, time.Hour)) }, Applied, 5},                 // Create
		{func() (Result, error) { return s.Move(context.Background(), mv("p2", Produced, 7, 2*time.Hour)) }, Applied, 12},              // Update
		{func() (Result, error) { return s.Move(context.Background(), mv("old", Produced, 11, 60*time.Hour)) }, AppliedUnverified, 23}, // base
		{func() (Result, error) { return s.Snapshot(context.Background(), sn("erp", 100, 3*time.Hour)) }, Applied, 112},
	}
	for i, c := range cases {
		lossy.lose.Store(1)
		r, err := c.op()
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		if r.Outcome != c.want {
			t.Errorf("case %d: outcome %s, want %s", i, r.Outcome, c.want)
		}
		if writes := 1 - lossy.lose.Load(); writes != 1 {
			t.Fatalf("case %d: %d writes, want just the one whose reply was lost", i, writes)
		}
		if r.Position.Position != c.position {
			t.Errorf("case %d: position %g, want %g", i, r.Position.Position, c.position)
		}
	}
	if n := s.Metrics.Retries.Load(); n != uint64(len(cases)) {
		t.Errorf("retries %d, want %d", n, len(cases))
	}
	p, _ := s.Get("SKU", "S1") // (sku, site)
	expectPos(t, p, 100, 12, 0)
	st, _ := storedState(t, connectJS(t, srv.URL()), "GEMBA_INVENTORY", keyOf("S1", "SKU"))
	checkOnce(t, st)
}

// MoveAll is Move for every movement of one key in one write: the same positions and outcomes,
// refusals per movement, duplicates recognised on a second call.
func TestStoreMoveAll(t *testing.T) {
	srv := natstest.JetStream(t)
	clock := newTestClock(t0)
	js := connectJS(t, srv.URL())
	s := openStore(t, js, testConfig(clock))
	h := time.Hour
	moves := []Movement{mv("p1", Produced, 10, 9*h), mv("s1", Sold, 3, 8*h), mv("s0", Sold, 2, 11*h), mv("p2", Produced, 7, 2*h)}
	bad := mv("bad", Produced, 1, 2*h)
	bad.ID = ""
	all := append(slices.Clone(moves[:2]), bad)
	all = append(all, moves[2:]...)
	rs, refused, err := s.MoveAll(context.Background(), all)
	if err != nil {
		t.Fatal(err)
	}
	if refused[2] == nil || !errors.Is(refused[2], ErrInvalid) || rs[2].Outcome != 0 {
		t.Errorf("the bad movement: %v %+v", refused[2], rs[2])
	}
	for i, r := range rs {
		if i != 2 && (refused[i] != nil || r.Outcome != Applied) {
			t.Errorf("movement %d: %+v %v", i, r, refused[i])
		}
	}
	p, _ := s.Get("SKU", "S1") // (sku, site)
	if p.Revision != 1 {
		t.Errorf("key revision %d after one MoveAll, want 1 (one write)", p.Revision)
	}
	// The same movements one by one on another key end at the same position.
	other := openStore(t, js, testConfig(clock))
	var last Position
	for _, m := range moves {
		m.SKU = "S2"
		last = mustMove(t, other, m, Applied)
	}
	if p.Position != last.Position || p.Produced != last.Produced || p.Sold != last.Sold {
		t.Errorf("MoveAll position %+v, one by one %+v", p, last)
	}
	rs, _, err = s.MoveAll(context.Background(), moves)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range rs {
		if r.Outcome != Duplicate {
			t.Errorf("again, movement %d: %v, want duplicate", i, r.Outcome)
		}
	}
	if _, _, err := s.MoveAll(context.Background(), []Movement{moves[0], {ID: "x", SKU: "S9", Site: moves[0].Site, Kind: Produced, Qty: 1, Time: t0}}); err == nil {
		t.Error("MoveAll over two keys accepted")
	}
}

// Quantities are finite but may be absurd (a unit price in the quantity column, a corrupt export):
// whatever the store accepts, the position it keeps stays finite, so it reads and serves as JSON.
func TestStoreHugeQuantities(t *testing.T) {
	srv := natstest.JetStream(t)
	s := openStore(t, connectJS(t, srv.URL()), testConfig(newTestClock(t0)))
	ctx := context.Background()
	huge := math.MaxFloat64
	for _, op := range []func() error{
		func() error { _, err := s.Snapshot(ctx, sn("erp:1", huge, 3*time.Hour)); return err },
		func() error { _, err := s.Move(ctx, mv("prod:1", Produced, huge, 2*time.Hour)); return err },
		func() error { _, err := s.Move(ctx, mv("prod:2", Produced, huge, time.Hour)); return err },
		func() error { _, err := s.Move(ctx, mv("sale:1:1", Sold, huge, 25*time.Hour)); return err },
		func() error { _, err := s.Move(ctx, mv("sale:2:1", Sold, huge, 26*time.Hour)); return err },
		func() error { _, err := s.Move(ctx, mv("sale:3:1", Sold, 1, time.Hour)); return err },
	} {
		if err := op(); err != nil && !errors.Is(err, ErrInvalid) {
			t.Fatal(err)
		}
	}
	p, ok := s.Get("SKU", "S1")
	if !ok {
		t.Fatal("no position")
	}
	for _, v := range []float64{p.OnHand, p.Produced, p.Sold, p.Position, p.DailyRate} {
		if math.IsInf(v, 0) || math.IsNaN(v) {
			t.Errorf("position not finite: %+v", p)
			break
		}
	}
	if _, err := json.Marshal(p); err != nil {
		t.Errorf("position does not marshal: %v", err)
	}
}

// An agent's replayed backlog moves many windows older than the horizon for one key in one MoveAll.
// When the reply of that write is lost, the retry must recognise every one of them, not only the
// last few whose ids the value remembers.
func TestStoreMoveAllLostReplyOldBacklog(t *testing.T) {
	srv := natstest.JetStream(t)
	s := openStore(t, connectJS(t, srv.URL()), testConfig(newTestClock(t0)))
	lossy := &lossyKV{KeyValue: s.kv}
	s.kv = lossy
	const n = 3 * recentCap
	ms := make([]Movement, n)
	for i := range ms {
		ms[i] = mv(fmt.Sprint("prod:a:", i), Produced, 1, 60*time.Hour+time.Duration(n-i)*time.Minute)
	}
	lossy.lose.Store(1)
	rs, bad, err := s.MoveAll(context.Background(), ms)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range rs {
		if bad[i] != nil || r.Outcome != AppliedUnverified {
			t.Errorf("movement %d: %v %v, want applied_unverified", i, r.Outcome, bad[i])
		}
	}
	st, _ := storedState(t, connectJS(t, srv.URL()), "GEMBA_INVENTORY", keyOf("S1", "SKU"))
	if got := st.summary().position("S1", "SKU").Produced; got != n {
		t.Errorf("produced %v after a lost reply, want %d", got, n)
	}
}

// racingKV runs before (once) ahead of the next Update: another replica writing the key between
// this store's read and its compare-and-set.
type racingKV struct {
	jetstream.KeyValue
	before func()
}

func (r *racingKV) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	if f := r.before; f != nil {
		r.before = nil
		f()
	}
	return r.KeyValue.Update(ctx, key, value, rev)
}

// Two replicas given the same movement (a redelivery taken by both): the one that loses the
// compare-and-set finds it applied by the other and reports a duplicate, from MoveAll as from Move;
// it is counted applied once across the replicas.
func TestStoreMoveAllLosesTheRaceToAReplica(t *testing.T) {
	srv := natstest.JetStream(t)
	clock := newTestClock(t0)
	a := openStore(t, connectJS(t, srv.URL()), testConfig(clock))
	b := openStore(t, connectJS(t, srv.URL()), testConfig(clock))
	ctx := context.Background()
	m0, m1 := mv("prod:a:0", Produced, 1, 2*time.Hour), mv("prod:a:1", Produced, 2, time.Hour)
	if _, _, err := a.MoveAll(ctx, []Movement{m0}); err != nil {
		t.Fatal(err)
	}
	a.kv = &racingKV{KeyValue: a.kv, before: func() { mustMove(t, b, m1, Applied) }}
	rs, _, err := a.MoveAll(ctx, []Movement{m1})
	if err != nil {
		t.Fatal(err)
	}
	if a.Metrics.Conflicts.Load() == 0 {
		t.Fatal("no conflict: the test did not race")
	}
	if rs[0].Outcome != Duplicate || rs[0].Position.Produced != 3 {
		t.Errorf("the loser reports %v at produced %v, want duplicate at 3", rs[0].Outcome, rs[0].Position.Produced)
	}
	if n := a.Metrics.Applied.Load() + b.Metrics.Applied.Load(); n != 2 {
		t.Errorf("applied counted %d times across the replicas for 2 movements", n)
	}
}

// A key whose list is full (max_movements) folds a late movement older than every kept one
// straight into the base. When the reply of that write is lost, the retry must still recognise it.
func TestStoreLostReplyOfAMovementFoldedEarly(t *testing.T) {
	srv := natstest.JetStream(t)
	cfg := testConfig(newTestClock(t0))
	cfg.MaxMovements = 16
	s := openStore(t, connectJS(t, srv.URL()), cfg)
	for i := range cfg.MaxMovements {
		mustMove(t, s, mv(fmt.Sprint("sale:", i), Sold, 1, time.Duration(i+1)*time.Minute), Applied)
	}
	lossy := &lossyKV{KeyValue: s.kv}
	s.kv = lossy
	lossy.lose.Store(1)
	late := mv("prod:late", Produced, 100, 10*time.Hour)
	r, err := s.Move(context.Background(), late)
	if err != nil {
		t.Fatal(err)
	}
	if lossy.lose.Load() > 0 {
		t.Fatal("the reply was not lost: the test did not exercise the retry")
	}
	if r.Outcome == Duplicate {
		t.Errorf("outcome %v", r.Outcome)
	}
	st, _ := storedState(t, connectJS(t, srv.URL()), "GEMBA_INVENTORY", keyOf("S1", "SKU"))
	if got := st.summary().position("S1", "SKU").Produced; got != late.Qty {
		t.Errorf("produced %v after a lost reply, want %v", got, late.Qty)
	}
	if _, _, err := s.MoveAll(context.Background(), []Movement{late}); err != nil {
		t.Fatal(err)
	}
	if p, _ := s.Get("SKU", "S1"); p.Produced != late.Qty {
		t.Errorf("produced %v after the movement was repeated, want %v", p.Produced, late.Qty)
	}
}
