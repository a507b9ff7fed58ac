package outcome

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub/decide/experiment"
	"github.com/gemba-io/gemba/internal/testutil"
)

// A round records its due bandit outcomes in the order their windows ended. A posterior remembers
// the ids of its last experiment.MaxApplied outcomes and refuses one whose window ended before the
// newest it forgot (it cannot tell whether it was applied): recorded in any other order, a round
// with more than MaxApplied outcomes of one pool (a busy channel, a measurer catching up after a
// restart) loses new outcomes as "too old" (run once with MaxApplied + 300 of them in map order:
// 12 of 2348 lost). The order is checked on the pool's applied ids, which keep the order of
// application until they overflow.
func TestRoundRecordsInWindowEndOrder(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	js, log, acfg, ccfg, store := setup(ctx, t)
	start := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	history(seller(ctx, t, js), start, "A") // a baseline of 10 over any 2 h window starting in the first hour
	const n = 60
	for i := range n {
		did := id(fmt.Sprint("d", i))
		at := start.Add(time.Duration(i) * time.Second)
		r := fired(did, "A", at, 10, 2*time.Hour)
		if _, err := log.Publish(ctx, r, 0); err != nil {
			t.Fatal(err)
		}
	}
	m := New(js, store, Options{Audit: acfg, Commerce: ccfg.Stream, Prefix: "gemba", Now: func() time.Time { return start.Add(3 * 24 * time.Hour) }})
	f, err := m.follow(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Stop()
	testutil.WaitFor(t, 20*time.Second, "every decision followed", func() bool { return m.Stats.Units.Load() == n })
	if err := m.Round(ctx); err != nil {
		t.Fatal(err)
	}
	cfg := experiment.Config{ID: "b", Bandit: &experiment.BanditConfig{Arms: []float64{5, 10}, Pool: experiment.PoolChannel}}
	pool, _, err := store.Posterior(ctx, cfg, "A", "web")
	if err != nil {
		t.Fatal(err)
	}
	if r := m.Stats.Recorded.Load(); r != n || pool.Stats.N != n || len(pool.Applied) != n {
		t.Fatalf("%d recorded, the posterior holds %d outcomes and %d ids; want %d", r, pool.Stats.N, len(pool.Applied), n)
	}
	for i := 1; i < n; i++ {
		if a, b := pool.Applied[i-1], pool.Applied[i]; b.End.Before(a.End) {
			t.Fatalf("applied[%d] (window end %s) was recorded after applied[%d] (%s): a round records in no particular order",
				i, b.End.Format(time.RFC3339), i-1, a.End.Format(time.RFC3339))
		}
	}
}

// A round whose sales consumer stops delivering (its node lost, or paused) fails after the idle
// bound, naming the stream, and the next round reads again: it held the round, and every later
// one, until shutdown.
func TestRoundGivesUpOnASilentSalesConsumer(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	js, log, acfg, ccfg, store := setup(ctx, t)
	start := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	history(seller(ctx, t, js), start, "A")
	if _, err := log.Publish(ctx, fired(id("A"), "A", start, 10, 24*time.Hour), 0); err != nil {
		t.Fatal(err)
	}
	m := New(js, store, Options{Audit: acfg, Commerce: ccfg.Stream, Prefix: "gemba", Now: func() time.Time { return start.Add(3 * 24 * time.Hour) }})
	m.readIdle = time.Second
	var paused atomic.Bool
	m.onRead = func(c jetstream.Consumer) {
		if paused.CompareAndSwap(false, true) {
			if _, err := js.PauseConsumer(ctx, ccfg.Stream, c.CachedInfo().Name, time.Now().Add(time.Hour)); err != nil {
				t.Error(err)
			}
		}
	}
	f, err := m.follow(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Stop()
	testutil.WaitFor(t, 20*time.Second, "A followed", func() bool { return m.Stats.Units.Load() == 1 })
	done := make(chan error, 1)
	go func() { done <- m.Round(ctx) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), ccfg.Stream) || !strings.Contains(err.Error(), "stopped delivering") {
			t.Fatalf("round on a paused consumer: %v, want an error naming %s and the silent consumer", err, ccfg.Stream)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("round on a paused sales consumer still running after 20s")
	}
	if err := m.Round(ctx); err != nil {
		t.Fatalf("next round: %v", err)
	}
	if m.Stats.Measured.Load() != 1 {
		t.Fatalf("measured %d after the next round, want A", m.Stats.Measured.Load())
	}
}
