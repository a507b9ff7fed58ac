package registry

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub/ingest/commerce"
	"github.com/gemba-io/gemba/hub/learn/demand"
	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/sim"
	simcommerce "github.com/gemba-io/gemba/sim/commerce"
)

// A refit reads the simulator's sales from the COMMERCE stream, fits, stores and promotes the first
// set, and shadows the next when told to; it refuses to run while another holds the lock; every
// SKU the simulator sells then has a cover on a following replica.
func TestRefitFromStream(t *testing.T) {
	srv := startServer(t)
	js := connect(t, srv)
	ctx := context.Background()
	ccfg := commerce.DefaultConfig()
	if _, err := commerce.EnsureStream(ctx, js, ccfg); err != nil {
		t.Fatal(err)
	}
	pub, err := commerce.NewPublisher(js, ccfg)
	if err != nil {
		t.Fatal(err)
	}
	plant := sim.DefaultConfig()
	plant.Seed, plant.Speed = 3, 3600
	s, err := simcommerce.New(simcommerce.Config{Plant: plant, Start: monday, DemandScale: 0.02})
	if err != nil {
		t.Fatal(err)
	}
	const days = 60
	for step := range days * 24 {
		s.Step()
		if step%24 == 23 {
			if err := s.Flush(ctx, pub); err != nil {
				t.Fatal(err)
			}
		}
	}
	a := openRegistry(t, js, Options{})
	b := openRegistry(t, connect(t, srv), Options{})
	f, err := b.Follow(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Stop)
	now := monday.AddDate(0, 0, days).Add(time.Hour)
	opts := RefitOptions{Source: demand.Source{Stream: ccfg.Stream, Prefix: ccfg.Prefix}, Promote: PromoteShadow,
		Now: func() time.Time { return now }, Fit: FitOptions{By: "replica-a", Horizon: 14}}

	held, err := b.TryLock(ctx, "replica-b")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Refit(ctx, js, opts); !errors.Is(err, ErrLocked) {
		t.Fatalf("a refit while replica-b holds the lock: %v", err)
	}
	if err := held.Release(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := a.Refit(ctx, js, opts)
	if err != nil {
		t.Fatal(err)
	}
	// No active set yet: the first is promoted although the refit says shadow.
	if res.Change == nil || res.Change.Op != OpPromote || res.Change.Active != res.Version || res.Change.By != "replica-a" {
		t.Fatalf("first refit: %+v", res.Change)
	}
	if res.Set.Days != days || !res.Set.From.Equal(monday) || res.Set.Demand.Sales == 0 || len(res.Set.Series) != len(s.SKUs()) {
		t.Fatalf("first refit's set: %d days from %v, %d sales, %d series for %d SKUs", res.Set.Days, res.Set.From,
			res.Set.Demand.Sales, len(res.Set.Series), len(s.SKUs()))
	}
	testutil.WaitFor(t, 10*time.Second, "the follower takes the refit", func() bool {
		l := f.Live()
		return l != nil && l.Active != nil && l.Active.Set.Version == res.Version
	})
	for _, sku := range s.SKUs() {
		if c, ok := f.Cover(sku.Name, s.Site(), 100, now); !ok || c.DailyMean <= 0 || !(c.Days > 0) {
			t.Errorf("%s: cover %+v, %v", sku.Name, c, ok)
		}
	}
	// A day later, with another day of sales: a new version, shadowed beside the active one.
	for range 24 {
		s.Step()
	}
	if err := s.Flush(ctx, pub); err != nil {
		t.Fatal(err)
	}
	now = now.AddDate(0, 0, 1)
	res2, err := a.Refit(ctx, js, opts)
	if err != nil {
		t.Fatal(err)
	}
	if res2.Version == res.Version || res2.Change == nil || res2.Change.Op != OpShadow || res2.Change.Active != res.Version {
		t.Fatalf("second refit: version %s (first %s), change %+v", res2.Version, res.Version, res2.Change)
	}
	testutil.WaitFor(t, 10*time.Second, "the follower takes the shadow", func() bool {
		l := f.Live()
		return l.Shadow != nil && l.Shadow.Set.Version == res2.Version
	})
	c, ok := f.Cover(s.SKUs()[0].Name, s.Site(), 100, now)
	if !ok || c.Version != res.Version || c.Shadow == nil || c.Shadow.Version != res2.Version {
		t.Fatalf("cover with shadow: %+v", c)
	}
	fresh := opts
	fresh.FreshFor = time.Hour
	if _, err := b.Refit(ctx, js, fresh); !errors.Is(err, ErrFresh) || !strings.Contains(err.Error(), res2.Version) {
		t.Fatalf("a refit right after another with fresh_for 1h: %v", err)
	}
	if h, ok, err := a.LockHolder(ctx); err != nil || ok {
		t.Fatalf("the lock is still held after the refits: %+v, %v", h, err)
	}
	if _, err := a.Refit(ctx, js, RefitOptions{Promote: "sometimes"}); err == nil {
		t.Fatal("an unknown promote mode was accepted")
	}
}

// A holder whose lock expired and was taken by another replica while it fitted must not store its
// set: with the default TTL its refresh does not run again before the store, so the refit has to
// check that the lock is still its own right before storing.
func TestRefitStopsWhenLockTakenBeforeStore(t *testing.T) {
	srv := startServer(t)
	js := connect(t, srv)
	ctx := context.Background()
	ccfg := commerce.DefaultConfig()
	if _, err := commerce.EnsureStream(ctx, js, ccfg); err != nil {
		t.Fatal(err)
	}
	pub, err := commerce.NewPublisher(js, ccfg)
	if err != nil {
		t.Fatal(err)
	}
	var evs []commerce.Event
	for d := range 20 {
		evs = append(evs, commerce.Sale{OrderID: fmt.Sprintf("o%d", d), Line: 1, SKU: "A", Site: "s1", Channel: "web",
			Quantity: float64(1 + d%3), UnitPrice: 1, Currency: "EUR", Time: monday.AddDate(0, 0, d).Add(time.Hour)})
	}
	for _, r := range pub.Publish(ctx, evs) {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	a := openRegistry(t, js, Options{})
	b := openRegistry(t, connect(t, srv), Options{})
	now := monday.AddDate(0, 0, 20).Add(time.Hour)
	calls := 0
	var taken *Lock
	clock := func() time.Time {
		// The second call is the fit's (the set's creation time): the fit is done, the store next.
		// Meanwhile a's lock expired (a stall past its TTL) and b took it.
		if calls++; calls == 2 {
			if err := a.lock.Purge(ctx, lockKey); err != nil {
				t.Error(err)
			}
			l, err := b.TryLock(ctx, "replica-b")
			if err != nil {
				t.Errorf("b could not take the expired lock: %v", err)
			}
			taken = l
		}
		return now
	}
	_, err = a.Refit(ctx, js, RefitOptions{Source: demand.Source{Stream: ccfg.Stream, Prefix: ccfg.Prefix}, Now: clock,
		Fit: FitOptions{By: "replica-a", Horizon: 7}})
	if calls < 2 || taken == nil {
		t.Fatalf("the clock was read %d times; the takeover did not happen", calls)
	}
	t.Cleanup(func() { _ = taken.Release(ctx) })
	if err == nil {
		t.Fatal("the refit stored and promoted its set although replica-b holds the lock")
	}
	if metas, lerr := a.List(ctx); lerr != nil || len(metas) != 0 {
		t.Fatalf("sets stored by a holder that lost the lock: %+v, %v", metas, lerr)
	}
	if h, ok, err := a.LockHolder(ctx); err != nil || !ok || h.By != "replica-b" {
		t.Fatalf("replica-b's lock after a's refit: %+v, %v, %v", h, ok, err)
	}
}

// A refit told to shadow activates its set only when there is no active set: that must be decided on
// the state its change writes, not on one read before. Here a person promotes a set on another
// replica between the refit's read and its write: the refit's set must become the shadow, not
// replace the set the person chose.
func TestRefitShadowDecidedOnTheStateItChanges(t *testing.T) {
	srv := startServer(t)
	js := connect(t, srv)
	ctx := context.Background()
	ccfg := commerce.DefaultConfig()
	if _, err := commerce.EnsureStream(ctx, js, ccfg); err != nil {
		t.Fatal(err)
	}
	pub, err := commerce.NewPublisher(js, ccfg)
	if err != nil {
		t.Fatal(err)
	}
	const days = 50
	var evs []commerce.Event
	for d := range days {
		evs = append(evs, commerce.Sale{OrderID: fmt.Sprintf("o%d", d), Line: 1, SKU: "A", Site: "s1", Channel: "web",
			Quantity: float64(3 + d%4), UnitPrice: 1, Currency: "EUR", Time: monday.AddDate(0, 0, d).Add(10 * time.Hour)})
	}
	for _, r := range pub.Publish(ctx, evs) {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	person := openRegistry(t, connect(t, srv), Options{})
	chosen, err := person.Store(ctx, fitSet(t, synthetic(t, 2, 60, 5), "person"))
	if err != nil {
		t.Fatal(err)
	}
	// The refitting replica's clock: its second reading is its change's timestamp, taken after it
	// read the state it changes. The person's promotion lands right then.
	calls := 0
	var promoted error = errors.New("the person's promotion did not run")
	refitter := openRegistry(t, js, Options{Now: func() time.Time {
		calls++
		if calls == 2 {
			_, promoted = person.Promote(ctx, chosen, "alice", "the set I checked")
		}
		return time.Now()
	}})
	now := monday.AddDate(0, 0, days).Add(time.Hour)
	res, err := refitter.Refit(ctx, js, RefitOptions{Source: demand.Source{Stream: ccfg.Stream, Prefix: ccfg.Prefix},
		Promote: PromoteShadow, Now: func() time.Time { return now }, Fit: FitOptions{By: "replica-a", Horizon: 14}})
	if err != nil {
		t.Fatal(err)
	}
	if promoted != nil {
		t.Fatal(promoted)
	}
	cur, _, err := person.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cur.Active != chosen || cur.Shadow != res.Version || res.Change == nil || res.Change.Op != OpShadow {
		t.Fatalf("the refit (shadow) after alice promoted %s: active %s, shadow %s, its change %+v", chosen, cur.Active, cur.Shadow, res.Change)
	}
}
