package registry

import (
	"bytes"
	"context"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub/ingest/commerce"
	"github.com/gemba-io/gemba/hub/learn/demand"
	"github.com/gemba-io/gemba/internal/testutil"
)

// A stored set is immutable: storing it again changes nothing, its content is checked against its
// version on every load, and a set tampered with or not a set at all is refused naming the version.
func TestVersionsImmutable(t *testing.T) {
	js := connect(t, startServer(t))
	ctx := context.Background()
	r := openRegistry(t, js, Options{})
	s := fitSet(t, synthetic(t, 20, 120, 1), "test")
	v, err := r.Store(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if len(v) != 16 || s.Version != v {
		t.Fatalf("version %q (set says %q): want 16 hex digits", v, s.Version)
	}
	obs, err := js.ObjectStore(ctx, DefaultSetsBucket)
	if err != nil {
		t.Fatal(err)
	}
	info1, err := obs.GetInfo(ctx, v)
	if err != nil {
		t.Fatal(err)
	}
	again, err := r.Store(ctx, s)
	if err != nil || again != v {
		t.Fatalf("storing again: %q, %v", again, err)
	}
	info2, err := obs.GetInfo(ctx, v)
	if err != nil {
		t.Fatal(err)
	}
	if info2.NUID != info1.NUID {
		t.Fatal("storing the same set again rewrote its object")
	}
	got, err := r.Load(ctx, v)
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != v || len(got.Series) != len(s.Series) || got.Series[3].Forecast[5] != s.Series[3].Forecast[5] ||
		!reflect.DeepEqual(got.Series[3].Model, s.Series[3].Model) {
		t.Fatalf("loaded set differs from the stored one")
	}
	other := fitSet(t, synthetic(t, 20, 120, 2), "test")
	v2, err := r.Store(ctx, other)
	if err != nil || v2 == v {
		t.Fatalf("a different set: version %q (first %q), %v", v2, v, err)
	}
	metas, err := r.List(ctx)
	if err != nil || len(metas) != 2 || metas[0].Series != 20 || metas[0].By != "test" || metas[0].MASE <= 0 {
		t.Fatalf("list: %+v, %v", metas, err)
	}
	if rv, err := r.Resolve(ctx, v[:8]); err != nil || rv != v {
		t.Fatalf("resolve %s: %q, %v", v[:8], rv, err)
	}

	// Tampered: another set's bytes under v's name; then bytes that are not gzip at all.
	data2, err := obs.GetBytes(ctx, v2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := obs.PutBytes(ctx, v, data2); err != nil {
		t.Fatal(err)
	}
	_, err = r.Load(ctx, v)
	if !errors.Is(err, errCorrupt) || !strings.Contains(err.Error(), v) {
		t.Fatalf("a tampered set loaded: %v", err)
	}
	if _, err := obs.PutBytes(ctx, v, []byte("not a model set")); err != nil {
		t.Fatal(err)
	}
	_, err = r.Load(ctx, v)
	if !errors.Is(err, errCorrupt) || !strings.Contains(err.Error(), v) {
		t.Fatalf("garbage loaded: %v", err)
	}
	if _, err := r.Promote(ctx, v, "ops", "try"); !errors.Is(err, errCorrupt) {
		t.Fatalf("promoting a corrupt set: %v", err)
	}
	_, err = r.Promote(ctx, "0123456789abcdef", "ops", "try")
	if !errors.Is(err, ErrUnknownVersion) || !strings.Contains(err.Error(), "0123456789abcdef") {
		t.Fatalf("promoting an unknown version: %v", err)
	}
	if _, err := r.Resolve(ctx, "ffffff"); !errors.Is(err, ErrUnknownVersion) {
		t.Fatalf("resolving an unknown prefix: %v", err)
	}
	if c, _, err := r.State(ctx); err != nil || c.Seq != 0 {
		t.Fatalf("refused changes changed the state: %+v, %v", c, err)
	}
}

// Promote, shadow, rollback and clearing the shadow are each recorded with who, why, when and
// from → to, in order, with the pointers after each.
func TestChangesRecorded(t *testing.T) {
	js := connect(t, startServer(t))
	ctx := context.Background()
	r := openRegistry(t, js, Options{})
	var vs []string
	for seed := range uint64(3) {
		v, err := r.Store(ctx, fitSet(t, synthetic(t, 6, 90, seed+10), "test"))
		if err != nil {
			t.Fatal(err)
		}
		vs = append(vs, v)
	}
	if _, err := r.Rollback(ctx, "ops", "nothing yet"); !errors.Is(err, ErrNoPrevious) {
		t.Fatalf("rollback with no previous: %v", err)
	}
	steps := []struct {
		do       func() (Change, error)
		op       string
		from, to string
		active   string
		shadow   string
	}{
		{func() (Change, error) { return r.Promote(ctx, vs[0], "alice", "first") }, OpPromote, "", vs[0], vs[0], ""},
		{func() (Change, error) { return r.Shadow(ctx, vs[1], "bob", "compare") }, OpShadow, "", vs[1], vs[0], vs[1]},
		{func() (Change, error) { return r.Promote(ctx, vs[1], "bob", "better") }, OpPromote, vs[0], vs[1], vs[1], ""},
		{func() (Change, error) { return r.Shadow(ctx, vs[2], "carol", "next") }, OpShadow, "", vs[2], vs[1], vs[2]},
		{func() (Change, error) { return r.Rollback(ctx, "dave", "worse in the field") }, OpRollback, vs[1], vs[0], vs[0], vs[2]},
		{func() (Change, error) { return r.Shadow(ctx, "", "dave", "done") }, OpClearShadow, vs[2], "", vs[0], ""},
	}
	for i, st := range steps {
		c, err := st.do()
		if err != nil {
			t.Fatalf("step %d: %v", i+1, err)
		}
		if c.Seq != uint64(i+1) || c.Op != st.op || c.From != st.from || c.To != st.to || c.Active != st.active || c.Shadow != st.shadow {
			t.Fatalf("step %d: %+v; want op %s from %q to %q active %q shadow %q", i+1, c, st.op, st.from, st.to, st.active, st.shadow)
		}
	}
	log, err := r.Changes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(log) != len(steps) {
		t.Fatalf("%d changes logged, want %d", len(log), len(steps))
	}
	for i, c := range log {
		if c.Seq != uint64(i+1) || c.By == "" || c.Why == "" || c.At.IsZero() || c.Op != steps[i].op {
			t.Fatalf("change %d logged as %+v", i+1, c)
		}
	}
	if _, err := r.Rollback(ctx, "dave", "again"); !errors.Is(err, ErrNoPrevious) {
		t.Fatalf("a second rollback past the first version: %v", err)
	}
}

// Concurrent changes from two replicas never lose one: each applies to the state the other left.
func TestConcurrentChangesSerialise(t *testing.T) {
	srv := startServer(t)
	ctx := context.Background()
	a := openRegistry(t, connect(t, srv), Options{})
	b := openRegistry(t, connect(t, srv), Options{})
	v, err := a.Store(ctx, fitSet(t, synthetic(t, 4, 60, 3), "test"))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for i := range 10 {
		r := a
		if i%2 == 1 {
			r = b
		}
		wg.Go(func() {
			if _, err := r.Shadow(ctx, v, "replica", "race"); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	log, err := a.Changes(ctx)
	if err != nil || len(log) != 10 {
		t.Fatalf("%d changes logged (%v), want 10", len(log), err)
	}
}

// Two replicas follow the state: a promotion on one is in force on both, with the same cover, and a
// shadow set's cover comes beside the active one's.
func TestTwoReplicasFollow(t *testing.T) {
	srv := startServer(t)
	ctx := context.Background()
	a := openRegistry(t, connect(t, srv), Options{})
	b := openRegistry(t, connect(t, srv), Options{})
	var followers []*Follower
	for _, r := range []*Registry{a, b} {
		f, err := r.Follow(nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(f.Stop)
		followers = append(followers, f)
	}
	if _, ok := followers[0].Cover("sku-00001", "s1", 50, monday); ok {
		t.Fatal("a cover before any promotion")
	}
	v1, err := a.Store(ctx, fitSet(t, synthetic(t, 10, 120, 4), "test"))
	if err != nil {
		t.Fatal(err)
	}
	v2, err := a.Store(ctx, fitSet(t, synthetic(t, 10, 120, 5), "test"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Promote(ctx, v1, "alice", "first"); err != nil {
		t.Fatal(err)
	}
	now := monday.AddDate(0, 0, 121).Add(6 * time.Hour)
	for i, f := range followers {
		testutil.WaitFor(t, 10*time.Second, "replica sees the promotion", func() bool {
			l := f.Live()
			return l != nil && l.Active != nil && l.Active.Set.Version == v1
		})
		c, ok := f.Cover("sku-00001", "s1", 50, now)
		if !ok || c.Version != v1 || c.Shadow != nil || !(c.Days > 0) || c.DailyMean <= 0 {
			t.Fatalf("replica %d: cover %+v, %v", i, c, ok)
		}
	}
	if _, err := b.Shadow(ctx, v2, "bob", "compare"); err != nil {
		t.Fatal(err)
	}
	for i, f := range followers {
		testutil.WaitFor(t, 10*time.Second, "replica sees the shadow", func() bool {
			l := f.Live()
			return l.Shadow != nil && l.Shadow.Set.Version == v2
		})
		c, ok := f.Cover("sku-00001", "s1", 50, now)
		if !ok || c.Version != v1 || c.Shadow == nil || c.Shadow.Version != v2 || c.Shadow.Days == c.Days {
			t.Fatalf("replica %d: cover with shadow %+v", i, c)
		}
	}
	if _, ok := followers[1].Cover("no-such-sku", "s1", 50, now); ok {
		t.Fatal("a cover for a SKU without a forecast")
	}
}

// A corrupt active set is not followed: the replica keeps the sets it had.
func TestFollowKeepsStateOnCorruptSet(t *testing.T) {
	srv := startServer(t)
	js := connect(t, srv)
	ctx := context.Background()
	r := openRegistry(t, js, Options{})
	var mu sync.Mutex
	var applied []uint64
	f, err := r.Follow(func(l *Live) {
		mu.Lock()
		applied = append(applied, l.Change.Seq)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Stop)
	v1, err := r.Store(ctx, fitSet(t, synthetic(t, 4, 60, 6), "test"))
	if err != nil {
		t.Fatal(err)
	}
	v2, err := r.Store(ctx, fitSet(t, synthetic(t, 4, 60, 7), "test"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Promote(ctx, v1, "a", "b"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "v1 followed", func() bool { l := f.Live(); return l != nil && l.Change.Seq == 1 })
	if _, err := r.Promote(ctx, v2, "a", "b"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "v2 followed", func() bool { return f.Live().Change.Seq == 2 })
	// v1 is corrupted in the store: a rollback to it is refused; a state naming it anyway (written by
	// hand, as a writer that did not check would) is not applied, and the follower keeps v2.
	obs, _ := js.ObjectStore(ctx, DefaultSetsBucket)
	if _, err := obs.PutBytes(ctx, v1, []byte("junk")); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Rollback(ctx, "a", "b"); !errors.Is(err, errCorrupt) || !strings.Contains(err.Error(), v1) {
		t.Fatalf("a rollback to a corrupt set: %v", err)
	}
	kv, err := js.KeyValue(ctx, DefaultStateBucket)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, stateKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Update(ctx, stateKey, []byte(`{"seq":3,"op":"rollback","active":"`+v1+`","by":"x","at":"2026-12-01T00:00:00Z"}`), e.Revision()); err != nil {
		t.Fatal(err)
	}
	v3, err := r.Store(ctx, fitSet(t, synthetic(t, 4, 60, 8), "test"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Promote(ctx, v3, "a", "recover"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "v3 followed", func() bool { return f.Live().Change.Seq == 4 })
	if f.Live().Active.Set.Version != v3 {
		t.Fatal("not v3 after recovering")
	}
	mu.Lock()
	defer mu.Unlock()
	// 3 (naming the corrupt v1) was never in force.
	if len(applied) != 3 || applied[0] != 1 || applied[1] != 2 || applied[2] != 4 {
		t.Fatalf("states in force: %v, want [1 2 4]", applied)
	}
}

// One refit at a time: of two replicas taking the lock at once exactly one gets it, the other is
// told who holds it; once released the other can take it; a holder that dies loses it at the TTL.
func TestRefitLock(t *testing.T) {
	srv := startServer(t)
	ctx := context.Background()
	// 2 s: the holder refreshes every 667 ms, so only a stall of over a second on a loaded machine
	// could lose it.
	a := openRegistry(t, connect(t, srv), Options{LockTTL: 2 * time.Second})
	b := openRegistry(t, connect(t, srv), Options{LockTTL: 2 * time.Second})
	type res struct {
		l   *Lock
		err error
	}
	out := make(chan res, 2)
	for i, r := range []*Registry{a, b} {
		go func() {
			l, err := r.TryLock(ctx, []string{"replica-a", "replica-b"}[i])
			out <- res{l, err}
		}()
	}
	r1, r2 := <-out, <-out
	if (r1.err == nil) == (r2.err == nil) {
		t.Fatalf("both or neither got the lock: %v / %v", r1.err, r2.err)
	}
	held, refused := r1, r2
	if r1.err != nil {
		held, refused = r2, r1
	}
	if !errors.Is(refused.err, ErrLocked) || !strings.Contains(refused.err.Error(), "replica-") {
		t.Fatalf("refused with %v", refused.err)
	}
	// Held past two and a half TTLs: the refresh keeps it.
	deadline := time.Now().Add(5 * time.Second)
	testutil.WaitFor(t, 15*time.Second, "two and a half TTLs pass", func() bool { return time.Now().After(deadline) })
	if _, err := b.TryLock(ctx, "late"); !errors.Is(err, ErrLocked) {
		t.Fatalf("the held lock expired while refreshed: %v", err)
	}
	select {
	case <-held.l.Lost():
		t.Fatal("lock reported lost while held")
	default:
	}
	if err := held.l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	l, err := b.TryLock(ctx, "next")
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	// A dead holder: stop refreshing without deleting (what a killed process leaves).
	l.cancel()
	l.wg.Wait()
	testutil.WaitFor(t, 30*time.Second, "the dead holder's lock expires", func() bool {
		l2, err := a.TryLock(ctx, "after-ttl")
		if err != nil {
			return false
		}
		_ = l2.Release(ctx)
		return true
	})
}

// Fitting refuses empty series and an empty set, naming them.
func TestFitBadInput(t *testing.T) {
	ds, err := demand.New(demand.Options{From: monday, To: monday.AddDate(0, 0, 30)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = Fit(context.Background(), ds, FitOptions{})
	if !errors.Is(err, ErrNoSeries) || !strings.Contains(err.Error(), "no sales") {
		t.Fatalf("no series: %v", err)
	}
	// Three days of data: too few values for any method.
	short, err := demand.New(demand.Options{From: monday, To: monday.AddDate(0, 0, 3)})
	if err != nil {
		t.Fatal(err)
	}
	for d := range 3 {
		short.Add(commerce.Sale{OrderID: "o" + string(rune('a'+d)), Line: 1, SKU: "x", Site: "s1", Channel: "web", Quantity: 2,
			UnitPrice: 1, Currency: "EUR", Time: monday.AddDate(0, 0, d)})
	}
	_, err = Fit(context.Background(), short, FitOptions{})
	if !errors.Is(err, ErrNoSeries) || !strings.Contains(err.Error(), "x @ s1") {
		t.Fatalf("a series too short: %v", err)
	}
	// An empty series among good ones is listed as failed, naming it; the rest is fitted.
	ds = synthetic(t, 3, 60, 9)
	ds.Series[demand.Key{SKU: "empty", Site: "s1"}] = &demand.Series{Key: demand.Key{SKU: "empty", Site: "s1"}}
	s, err := Fit(context.Background(), ds, FitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Series) != 3 || len(s.Failed) != 1 || s.Failed[0].Key.SKU != "empty" || !strings.Contains(s.Failed[0].Err, "empty") {
		t.Fatalf("fitted %d, failed %+v", len(s.Series), s.Failed)
	}
}

// decode refuses stored bytes that are not the set they claim to be.
func TestDecodeRefuses(t *testing.T) {
	s := fitSet(t, synthetic(t, 2, 60, 11), "test")
	data, err := s.encode()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decode(s.Version, data); err != nil {
		t.Fatal(err)
	}
	if _, err := decode("aaaaaaaaaaaaaaaa", data); !errors.Is(err, errCorrupt) || !strings.Contains(err.Error(), "aaaaaaaaaaaaaaaa") {
		t.Fatalf("under another version: %v", err)
	}
	if _, err := decode(s.Version, bytes.Repeat([]byte{0x1f}, 10)); !errors.Is(err, errCorrupt) {
		t.Fatalf("truncated: %v", err)
	}
	bad := *s
	bad.Series = append([]Model(nil), s.Series...)
	bad.Series[0].Forecast = nil
	data, err = bad.encode()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decode(bad.Version, data); !errors.Is(err, errCorrupt) || !strings.Contains(err.Error(), "no forecast") {
		t.Fatalf("a series without forecast: %v", err)
	}
}

// Two operators rolling back at once go back one set, not two: the rollback that loses the race
// finds the active set it read replaced, and records nothing.
func TestConcurrentRollbackGoesBackOnce(t *testing.T) {
	srv := startServer(t)
	ctx := context.Background()
	other := openRegistry(t, connect(t, srv), Options{})
	var vs []string
	for seed := range uint64(3) {
		v, err := other.Store(ctx, fitSet(t, synthetic(t, 4, 60, seed+20), "test"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := other.Promote(ctx, v, "ops", "next"); err != nil {
			t.Fatal(err)
		}
		vs = append(vs, v)
	}
	// Bob's rollback lands between Alice's read of the state and her write (the registry reads its
	// clock right between the two).
	var once sync.Once
	alice := openRegistry(t, connect(t, srv), Options{Now: func() time.Time {
		once.Do(func() {
			if c, err := other.Rollback(ctx, "bob", "worse"); err != nil || c.Active != vs[1] {
				t.Errorf("bob's rollback: %+v %v", c, err)
			}
		})
		return time.Now()
	}})
	if c, err := alice.Rollback(ctx, "alice", "worse"); !errors.Is(err, ErrConflict) {
		t.Errorf("alice's rollback from the same set: %+v %v, want ErrConflict", c, err)
	}
	if cur, _, err := other.State(ctx); err != nil || cur.Active != vs[1] {
		t.Fatalf("after two rollbacks at once: %+v %v, want active %s", cur, err, vs[1])
	}
}

// A shadow set that no longer loads must not hold back the active one: the shadow only compares, the
// active set is what decisions use. A replica starting while the state names a corrupt shadow follows
// the active set (without a shadow) instead of having no cover at all.
func TestFollowAppliesActiveWhenShadowDoesNotLoad(t *testing.T) {
	srv := startServer(t)
	js := connect(t, srv)
	ctx := context.Background()
	r := openRegistry(t, js, Options{})
	v1, err := r.Store(ctx, fitSet(t, synthetic(t, 4, 60, 6), "test"))
	if err != nil {
		t.Fatal(err)
	}
	v2, err := r.Store(ctx, fitSet(t, synthetic(t, 4, 60, 7), "test"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Promote(ctx, v1, "a", "b"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Shadow(ctx, v2, "a", "compare"); err != nil {
		t.Fatal(err)
	}
	obs, err := js.ObjectStore(ctx, DefaultSetsBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := obs.PutBytes(ctx, v2, []byte("junk")); err != nil {
		t.Fatal(err)
	}
	// A replica starting now.
	f, err := openRegistry(t, connect(t, srv), Options{}).Follow(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Stop)
	testutil.WaitFor(t, 10*time.Second, "the active set followed although the shadow does not load", func() bool {
		l := f.Live()
		return l != nil && l.Active != nil && l.Active.Set.Version == v1
	})
	if l := f.Live(); l.Shadow != nil || l.Change.Seq != 2 {
		t.Fatalf("state %d in force with shadow %v; want 2 without the corrupt shadow", l.Change.Seq, l.Shadow)
	}
	if c, ok := f.Cover("sku-00001", "s1", 10, monday.AddDate(0, 0, 60)); !ok || c.Version != v1 || c.Shadow != nil {
		t.Fatalf("cover %+v, %v", c, ok)
	}
}
