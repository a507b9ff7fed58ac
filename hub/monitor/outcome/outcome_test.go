package outcome

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/decide/experiment"
	"github.com/gemba-io/gemba/hub/decide/guard"
	"github.com/gemba-io/gemba/hub/decide/rules"
	"github.com/gemba-io/gemba/hub/ingest/commerce"
	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

// setup starts a server with the decision log, the COMMERCE stream and the experiments' bucket.
func setup(ctx context.Context, t *testing.T) (jetstream.JetStream, *audit.Log, audit.Config, commerce.Config, *experiment.Store) {
	t.Helper()
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	acfg := audit.Config{Prefix: "gemba"}
	acfg.Defaults()
	log, err := audit.Open(ctx, js, acfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ccfg := commerce.DefaultConfig()
	if _, err := commerce.EnsureStream(ctx, js, ccfg); err != nil {
		t.Fatal(err)
	}
	store, err := experiment.Open(ctx, js, experiment.DefaultStoreConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return js, log, acfg, ccfg, store
}

// seller publishes sales on web at s1 (copies of the same order line: copies), one order each.
func seller(ctx context.Context, t *testing.T, js jetstream.JetStream) func(sku string, at time.Time, qty float64, copies int) {
	order := 0
	return func(sku string, at time.Time, qty float64, copies int) {
		order++
		b, err := commerce.EncodeSale(commerce.Sale{OrderID: fmt.Sprint("o", order), Line: 1, SKU: sku, Site: "s1", Channel: "web",
			Quantity: qty, UnitPrice: 2, Currency: "EUR", Time: at})
		if err != nil {
			t.Fatal(err)
		}
		for range copies {
			if _, err := js.Publish(ctx, commerce.SalesSubject("gemba", "web"), b); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// running starts a measurer whose clock reads now, rounds every 50 ms, until the test ends.
func running(ctx context.Context, t *testing.T, cancel context.CancelFunc, js jetstream.JetStream, store *experiment.Store,
	acfg audit.Config, ccfg commerce.Config, now time.Time) *Measurer {
	m := New(js, store, Options{Audit: acfg, Commerce: ccfg.Stream, Prefix: "gemba", Every: 50 * time.Millisecond,
		Now: func() time.Time { return now }})
	var wg sync.WaitGroup
	wg.Go(func() { _ = m.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	return m
}

// history sells 10 of sku a day over the 28 days before start, an hour after start's time of day:
// its baseline is 10 a day.
func history(sell func(sku string, at time.Time, qty float64, copies int), start time.Time, sku string) {
	for d := 1; d <= 28; d++ {
		sell(sku, start.Add(-time.Duration(d)*24*time.Hour+time.Hour), 10, 1)
	}
}

func id(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:16])
}

// fired is a fired promotion of SKU sku on web at at, its 10% (or discount) chosen by the bandit
// "b" (pool channel, arms 5 and 10), with its guard verdict: what the measurer waits for.
func fired(did, sku string, at time.Time, discount float64, d time.Duration) audit.Record {
	return audit.Record{DecisionID: did, Event: audit.EventDecided, Outcome: audit.OutcomeFired, Mode: audit.ModeActive, Time: at,
		RuleSet: audit.RuleSetRef{Name: "x", Version: "v1"}, Rule: audit.RuleRef{Name: "b"}, SKU: sku, Site: "s1", Channel: "web",
		Action: rules.Action{Kind: rules.Promote, Channels: []string{"web"}, Discount: discount, Duration: d},
		Experiment: &audit.ExperimentRef{ID: "b", Bandit: &experiment.Choice{Experiment: "b", Pool: experiment.PoolChannel,
			DecisionID: did, Discount: discount, Reason: experiment.ReasonThompson,
			Arms: []experiment.ArmDraw{{Discount: 5}, {Discount: 10}}}},
		Verdict: &guard.Verdict{DecisionID: did, Outcome: guard.Allow, ActionTime: at}}
}

// Four units of one experiment, each with 10 units a day before its window: A (treated, a bandit's
// 10 % arm) sells 25 in its day, C (treated) 20, B and D (held out) 12 and 8. The measurer records A's
// bandit outcome once (lift 2.5 against a baseline of 10), and the holdout's lift is mean(2.5, 2) /
// mean(1.2, 0.8) = 2.25. Sales of other SKUs, a returned line and a second copy of an order line
// count for nothing.
func TestMeasuresBanditAndHoldout(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	js, log, acfg, ccfg, store := setup(ctx, t)
	start := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	sell := seller(ctx, t, js)
	during := map[string]float64{"A": 25, "B": 12, "C": 20, "D": 8}
	for sku, q := range during {
		history(sell, start, sku)
		sell(sku, start.Add(3*time.Hour), q-1, 2) // a second copy of the line counts once
		sell(sku, start.Add(20*time.Hour), 1, 1)
		sell(sku, start.Add(30*time.Hour), 50, 1) // after the window
	}
	sell("X", start.Add(time.Hour), 99, 1)
	sell("A", start.Add(2*time.Hour), -3, 1) // a return is not demand

	arms := []experiment.ArmDraw{{Discount: 5}, {Discount: 10}, {Discount: 20}}
	choice := &experiment.Choice{Experiment: "clear", Pool: experiment.PoolChannel, DecisionID: id("A"), Discount: 10, Arms: arms}
	rec := func(sku, outcome string, g experiment.Group, c *experiment.Choice) {
		r := audit.Record{DecisionID: id(sku), Event: audit.EventDecided, Outcome: outcome, Mode: audit.ModeActive, Time: start,
			RuleSet: audit.RuleSetRef{Name: "x", Version: "v1"}, Rule: audit.RuleRef{Name: "clear"}, SKU: sku, Site: "s1", Channel: "web",
			Action:     rules.Action{Kind: rules.Promote, Channels: []string{"web"}, Discount: 10, Duration: 24 * time.Hour},
			Experiment: &audit.ExperimentRef{ID: "clear", Holdout: &experiment.Assignment{Salt: "clear", Share: 0.5, Group: g}, Bandit: c}}
		if outcome == audit.OutcomeFired {
			r.Verdict = &guard.Verdict{DecisionID: r.DecisionID, Outcome: guard.Allow, ActionTime: start}
		}
		if _, err := log.Publish(ctx, r, 0); err != nil {
			t.Fatal(err)
		}
	}
	rec("A", audit.OutcomeFired, experiment.Treated, choice)
	rec("C", audit.OutcomeFired, experiment.Treated, nil)
	rec("B", audit.OutcomeHeldOut, experiment.Held, nil)
	rec("D", audit.OutcomeHeldOut, experiment.Held, nil)

	m := running(ctx, t, cancel, js, store, acfg, ccfg, start.Add(3*24*time.Hour))
	testutil.WaitFor(t, 20*time.Second, "four units measured", func() bool { return m.Stats.Measured.Load() == 4 })
	if r := m.Stats.Recorded.Load(); r != 1 {
		t.Fatalf("%d bandit outcomes recorded, want 1 (A's)", r)
	}
	cfg := experiment.Config{ID: "clear", Bandit: &experiment.BanditConfig{Arms: []float64{5, 10, 20}, Pool: experiment.PoolChannel}}
	again, err := store.Record(ctx, cfg, experiment.Outcome{ID: id("A"), SKU: "A", Channel: "web", Discount: 10, Units: 25, Baseline: 10, End: start.Add(24 * time.Hour)})
	if err != nil || again {
		t.Fatalf("A's outcome was not in the posterior: applied again %v, %v", again, err)
	}
	lifts, _ := m.Lifts(ctx)
	if len(lifts) != 2 {
		t.Fatalf("lifts %+v, want the holdout's and the 10%% arm's", lifts)
	}
	arm, ho := lifts[0], lifts[1] // sorted by arm: "10%" < "holdout"
	if ho.Rule != "clear" || ho.Arm != "holdout" || ho.Treated != 2 || ho.Held != 2 || math.Abs(ho.Lift-2.25) > 1e-9 {
		t.Errorf("holdout lift %+v, want clear at 2.25 over 2 and 2 units", ho)
	}
	if arm.Rule != "clear" || arm.Arm != "10%" || arm.Treated != 1 || math.Abs(arm.Lift-2.5) > 1e-9 {
		t.Errorf("arm lift %+v, want 2.5 from A's one promotion", arm)
	}
	// Another round measures nothing again.
	rounds := m.Stats.Rounds.Load()
	testutil.WaitFor(t, 10*time.Second, "two more rounds", func() bool { return m.Stats.Rounds.Load() >= rounds+2 })
	if m.Stats.Measured.Load() != 4 || m.Stats.Recorded.Load() != 1 {
		t.Errorf("measured %d, recorded %d after more rounds", m.Stats.Measured.Load(), m.Stats.Recorded.Load())
	}
}

// A unit without sales before its window has no baseline: measured, not fed to the bandit (a lift
// from nothing would be noise). An undecodable message on the decision log is counted and skipped.
func TestNoBaselineAndMalformed(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	js, log, acfg, ccfg, store := setup(ctx, t)
	start := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	if _, err := js.Publish(ctx, "gemba.decisions."+id("junk"), []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	arms := []experiment.ArmDraw{{Discount: 5}, {Discount: 10}}
	r := audit.Record{DecisionID: id("N"), Event: audit.EventDecided, Outcome: audit.OutcomeFired, Mode: audit.ModeActive, Time: start,
		RuleSet: audit.RuleSetRef{Name: "x", Version: "v1"}, Rule: audit.RuleRef{Name: "b"}, SKU: "N", Channel: "web",
		Action:     rules.Action{Kind: rules.Promote, Channels: []string{"web"}, Discount: 5, Duration: 24 * time.Hour},
		Experiment: &audit.ExperimentRef{ID: "b", Bandit: &experiment.Choice{Experiment: "b", Pool: experiment.PoolChannel, Discount: 5, Arms: arms}}}
	if _, err := log.Publish(ctx, r, 0); err != nil {
		t.Fatal(err)
	}
	m := running(ctx, t, cancel, js, store, acfg, ccfg, start.Add(3*24*time.Hour))
	testutil.WaitFor(t, 20*time.Second, "N measured", func() bool { return m.Stats.Measured.Load() == 1 })
	if m.Stats.NoBaseline.Load() != 1 || m.Stats.Recorded.Load() != 0 || m.Stats.Malformed.Load() != 1 {
		t.Errorf("no baseline %d, recorded %d, malformed %d: want 1, 0, 1", m.Stats.NoBaseline.Load(), m.Stats.Recorded.Load(), m.Stats.Malformed.Load())
	}
}

// A promotion that waited for a person is measured from its approval: P, decided (awaiting approval)
// 5 h before start and approved at start, sells 40 while it waits and 30 in its day; its bandit
// outcome is 30 against a baseline of 10. R, rejected, and Q, still waiting, are not measured.
func TestMeasuresApprovedFromTheApproval(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	js, log, acfg, ccfg, store := setup(ctx, t)
	start := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	sell := seller(ctx, t, js)
	for _, sku := range []string{"P", "Q", "R"} {
		history(sell, start, sku)
		sell(sku, start.Add(-3*time.Hour), 40, 1) // while waiting for the approval
		sell(sku, start.Add(2*time.Hour), 30, 1)
	}
	arms := []experiment.ArmDraw{{Discount: 5}, {Discount: 10}}
	rec := func(sku, event, outcome string, at time.Time, v *guard.Verdict) {
		r := audit.Record{DecisionID: id(sku), Event: event, Outcome: outcome, Mode: audit.ModeActive, Time: at,
			RuleSet: audit.RuleSetRef{Name: "x", Version: "v1"}, Rule: audit.RuleRef{Name: "b"}, SKU: sku, Site: "s1", Channel: "web",
			Action: rules.Action{Kind: rules.Promote, Channels: []string{"web"}, Discount: 10, Duration: 24 * time.Hour},
			Experiment: &audit.ExperimentRef{ID: "b", Bandit: &experiment.Choice{Experiment: "b", Pool: experiment.PoolChannel,
				DecisionID: id(sku), Discount: 10, Reason: experiment.ReasonThompson, Arms: arms}},
			Verdict: v}
		var err error
		if event == audit.EventDecided {
			_, err = log.Publish(ctx, r, 0)
		} else {
			_, err = log.Append(ctx, r)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	decided := start.Add(-5 * time.Hour)
	for _, sku := range []string{"P", "Q", "R"} {
		rec(sku, audit.EventDecided, audit.OutcomeAwaitingApproval, decided, &guard.Verdict{DecisionID: id(sku), Outcome: guard.NeedsApproval, ActionTime: decided})
	}
	rec("P", audit.EventApproved, audit.OutcomeFired, start.Add(time.Minute), &guard.Verdict{DecisionID: id("P"), Outcome: guard.Allow, ActionTime: start})
	rec("R", audit.EventRejected, audit.OutcomeRejected, start, &guard.Verdict{DecisionID: id("R"), Outcome: guard.Rejected, ActionTime: start})

	m := running(ctx, t, cancel, js, store, acfg, ccfg, start.Add(3*24*time.Hour))
	testutil.WaitFor(t, 20*time.Second, "P measured", func() bool { return m.Stats.Measured.Load() >= 1 })
	rounds := m.Stats.Rounds.Load()
	testutil.WaitFor(t, 10*time.Second, "two more rounds", func() bool { return m.Stats.Rounds.Load() >= rounds+2 })
	if n, r := m.Stats.Measured.Load(), m.Stats.Recorded.Load(); n != 1 || r != 1 {
		t.Fatalf("measured %d, recorded %d: want P alone", n, r)
	}
	lifts, _ := m.Lifts(ctx)
	if len(lifts) != 1 || lifts[0].Arm != "10%" || lifts[0].Treated != 1 || math.Abs(lifts[0].Lift-3) > 1e-9 {
		t.Fatalf("lifts %+v, want the 10%% arm at 3 (30 sold from the approval against 10), not counting what sold while waiting", lifts)
	}
	cfg := experiment.Config{ID: "b", Bandit: &experiment.BanditConfig{Arms: []float64{5, 10}, Pool: experiment.PoolChannel}}
	again, err := store.Record(ctx, cfg, experiment.Outcome{ID: id("P"), SKU: "P", Channel: "web", Discount: 10, Units: 30, Baseline: 10, End: start.Add(24 * time.Hour)})
	if err != nil || again {
		t.Fatalf("P's outcome was not in the posterior: applied again %v, %v", again, err)
	}
}

// A promotion longer than a week: its baseline is the same window whole weeks earlier, so a window
// one week back would overlap the promotion itself and count promoted sales as the baseline. L sells
// 10 a day for six weeks, then 30 a day over a 14-day promotion: its lift is 3 (420 against 140).
func TestLongWindowBaselineLeavesOutThePromotion(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	js, log, acfg, ccfg, store := setup(ctx, t)
	start := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	sell := seller(ctx, t, js)
	for d := 1; d <= 42; d++ {
		sell("L", start.Add(-time.Duration(d)*24*time.Hour+time.Hour), 10, 1)
	}
	for d := range 14 {
		sell("L", start.Add(time.Duration(d)*24*time.Hour+time.Hour), 30, 1)
	}
	r := fired(id("L"), "L", start, 10, 14*24*time.Hour)
	if _, err := log.Publish(ctx, r, 0); err != nil {
		t.Fatal(err)
	}
	m := running(ctx, t, cancel, js, store, acfg, ccfg, start.Add(16*24*time.Hour))
	testutil.WaitFor(t, 20*time.Second, "L measured", func() bool { return m.Stats.Measured.Load() == 1 })
	lifts, _ := m.Lifts(ctx)
	if len(lifts) != 1 || math.Abs(lifts[0].Lift-3) > 1e-9 {
		t.Fatalf("lifts %+v, want the 10%% arm at 3 (420 sold against 140 the same 14 days earlier)", lifts)
	}
}

// The baseline looks back only as far as the COMMERCE stream holds (commerce.max_age, 30 days by
// default): A's sales older than that are gone from the stream, and one late-uploaded sale of
// another SKU dated ten weeks back must not make the weeks the stream no longer holds read as weeks
// without sales. A sells 10 a day for the 28 days before its window and 25 in it: lift 2.5, not 5.
func TestBaselineOnlyAsFarBackAsTheStreamHolds(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	js, log, acfg, ccfg, store := setup(ctx, t)
	start := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	sell := seller(ctx, t, js)
	history(sell, start, "A")
	sell("A", start.Add(2*time.Hour), 25, 1)
	sell("Z", start.Add(-70*24*time.Hour), 1, 1) // a late upload, dated ten weeks back
	r := fired(id("A"), "A", start, 10, 24*time.Hour)
	if _, err := log.Publish(ctx, r, 0); err != nil {
		t.Fatal(err)
	}
	m := running(ctx, t, cancel, js, store, acfg, ccfg, start.Add(3*24*time.Hour))
	testutil.WaitFor(t, 20*time.Second, "A measured", func() bool { return m.Stats.Measured.Load() == 1 })
	lifts, _ := m.Lifts(ctx)
	if len(lifts) != 1 || math.Abs(lifts[0].Lift-2.5) > 1e-9 {
		t.Fatalf("lifts %+v, want the 10%% arm at 2.5 (25 sold against 10 a day)", lifts)
	}
}

// A measured unit is kept as long as the decision log keeps its record, not for the life of the
// process: a replica running for months would otherwise hold every experiment decision ever made
// (and report lifts over them, which a replica started later, reading the log's retention, would
// not). With a 48 h retention A is forgotten, and its lift with it, once its record has expired.
func TestForgetsUnitsPastTheLogsRetention(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	js, log, acfg, ccfg, store := setup(ctx, t)
	start := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	sell := seller(ctx, t, js)
	history(sell, start, "A")
	sell("A", start.Add(2*time.Hour), 25, 1)
	r := fired(id("A"), "A", start, 10, 24*time.Hour)
	if _, err := log.Publish(ctx, r, 0); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	now := start.Add(26 * time.Hour)
	a := acfg
	a.Retention = 48 * time.Hour
	m := New(js, store, Options{Audit: a, Commerce: ccfg.Stream, Prefix: "gemba", Every: 50 * time.Millisecond,
		Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return now }})
	var wg sync.WaitGroup
	wg.Go(func() { _ = m.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	testutil.WaitFor(t, 20*time.Second, "A measured", func() bool { return m.Stats.Measured.Load() == 1 })
	if lifts, _ := m.Lifts(ctx); len(lifts) != 1 {
		t.Fatalf("lifts %+v, want A's arm", lifts)
	}
	mu.Lock()
	now = start.Add(72 * time.Hour)
	mu.Unlock()
	testutil.WaitFor(t, 20*time.Second, "A forgotten", func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		return len(m.units) == 0 && len(m.lifts) == 0
	})
}

// A held-out unit recorded twice with overlapping windows (two replicas, or a rule changed to a new
// version, in later time buckets: records of the log written before holdouts were recorded once per
// period) is counted over the time it was held out, once: B's second window, 3 h after its first,
// adds only the 3 h beyond the first's end. Counted twice, B's sale in the first window would be
// set against two baselines (12 against 20: 0.6 instead of 1.2) and the lift read 2.81, not 2.05.
func TestHoldoutOverlappingWindowsCountedOnce(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	js, log, acfg, ccfg, store := setup(ctx, t)
	start := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	sell := seller(ctx, t, js)
	for _, sku := range []string{"A", "C", "D"} {
		history(sell, start, sku)
	}
	sell("A", start.Add(2*time.Hour), 25, 1)
	sell("C", start.Add(2*time.Hour), 20, 1)
	sell("D", start.Add(2*time.Hour), 10, 1)
	for d := 1; d <= 28; d++ { // B sells 10 a day at 18:00
		sell("B", start.Add(-time.Duration(d)*24*time.Hour+6*time.Hour), 10, 1)
	}
	sell("B", start.Add(90*time.Minute), 12, 1) // in its first window only
	rec := func(did, sku, outcome string, g experiment.Group, at time.Time) {
		r := audit.Record{DecisionID: id(did), Event: audit.EventDecided, Outcome: outcome, Mode: audit.ModeActive, Time: at,
			RuleSet: audit.RuleSetRef{Name: "x", Version: "v1"}, Rule: audit.RuleRef{Name: "clear"}, SKU: sku, Site: "s1", Channel: "web",
			Action:     rules.Action{Kind: rules.Promote, Channels: []string{"web"}, Discount: 10, Duration: 24 * time.Hour},
			Experiment: &audit.ExperimentRef{ID: "clear", Holdout: &experiment.Assignment{Salt: "clear", Share: 0.5, Group: g}}}
		if outcome == audit.OutcomeFired {
			r.Verdict = &guard.Verdict{DecisionID: r.DecisionID, Outcome: guard.Allow, ActionTime: at}
		}
		if _, err := log.Publish(ctx, r, 0); err != nil {
			t.Fatal(err)
		}
	}
	rec("A", "A", audit.OutcomeFired, experiment.Treated, start)
	rec("C", "C", audit.OutcomeFired, experiment.Treated, start)
	rec("D", "D", audit.OutcomeHeldOut, experiment.Held, start)
	rec("B1", "B", audit.OutcomeHeldOut, experiment.Held, start)
	rec("B2", "B", audit.OutcomeHeldOut, experiment.Held, start.Add(3*time.Hour))

	m := running(ctx, t, cancel, js, store, acfg, ccfg, start.Add(3*24*time.Hour))
	testutil.WaitFor(t, 20*time.Second, "five windows measured", func() bool { return m.Stats.Measured.Load() == 5 })
	lifts, _ := m.Lifts(ctx)
	// Treated: 2.5 and 2; held out: D 1, B 12 against 10 (its first window, and 3 h without sales
	// or baseline after it).
	want := 2.25 / ((1 + 1.2) / 2)
	if len(lifts) != 1 || lifts[0].Treated != 2 || lifts[0].Held != 2 || math.Abs(lifts[0].Lift-want) > 1e-9 {
		t.Fatalf("lifts %+v, want the holdout's at %.4f over 2 and 2 units", lifts, want)
	}
}

// A promotion allowed and then released (the kill switch cancelled its start, its delivery was
// abandoned, or reconcile released it before its decided record was written) never ran: its
// "outcome" is the unit's unpromoted sales, and fed to the bandit as the arm's it would drag that
// arm's posterior towards no lift. A's released promotion is not measured nor recorded, whichever
// of its records the log holds first; B's, which ran, is.
func TestReleasedPromotionNotMeasured(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	js, log, acfg, ccfg, store := setup(ctx, t)
	start := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	sell := seller(ctx, t, js)
	for _, sku := range []string{"A", "B", "C"} {
		history(sell, start, sku)
		sell(sku, start.Add(2*time.Hour), 10, 1)
	}
	released := func(r audit.Record) audit.Record {
		return audit.Record{DecisionID: r.DecisionID, Event: audit.EventReleased, Outcome: audit.OutcomeReleased, Mode: audit.ModeActive,
			Time: start.Add(time.Minute), RuleSet: audit.RuleSetRef{Version: "v1"}, Rule: audit.RuleRef{Name: "b"}, SKU: r.SKU, Site: "s1",
			Channel: "web", Action: r.Action}
	}
	a, b, c := fired(id("A"), "A", start, 10, 24*time.Hour), fired(id("B"), "B", start, 10, 24*time.Hour), fired(id("C"), "C", start, 5, 24*time.Hour)
	if _, err := log.Publish(ctx, a, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := log.Append(ctx, released(a)); err != nil {
		t.Fatal(err)
	}
	// C: released by reconcile first, its decided record written late by a replica the guard
	// replayed the allow to (the outbox record was already cancelled: it never ran).
	if _, err := log.Append(ctx, released(c)); err != nil {
		t.Fatal(err)
	}
	if _, err := log.Publish(ctx, c, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := log.Publish(ctx, b, 0); err != nil {
		t.Fatal(err)
	}
	m := running(ctx, t, cancel, js, store, acfg, ccfg, start.Add(3*24*time.Hour))
	testutil.WaitFor(t, 20*time.Second, "B measured", func() bool { return m.Stats.Recorded.Load() >= 1 })
	rounds := m.Stats.Rounds.Load()
	testutil.WaitFor(t, 10*time.Second, "two more rounds", func() bool { return m.Stats.Rounds.Load() >= rounds+2 })
	if n, r := m.Stats.Measured.Load(), m.Stats.Recorded.Load(); n != 1 || r != 1 {
		t.Fatalf("measured %d, recorded %d: want B alone (A and C were released, never ran)", n, r)
	}
	cfg := experiment.Config{ID: "b", Bandit: &experiment.BanditConfig{Arms: []float64{5, 10}, Pool: experiment.PoolChannel}}
	for _, sku := range []string{"A", "C"} {
		applied, err := store.Record(ctx, cfg, experiment.Outcome{ID: id(sku), SKU: sku, Channel: "web", Discount: 10, Units: 10, Baseline: 10, End: start.Add(24 * time.Hour)})
		if err != nil || !applied {
			t.Errorf("%s's released promotion was in the posterior already (applied %v, %v)", sku, applied, err)
		}
	}
}

// A promotion released when its delivery was dead-lettered and reserved again by the replay of
// that dead letter (reacquired: the decision log's record carries no experiment) acts after all,
// from then on: A is measured from its reacquired record's time, the sale before it left out. B,
// released again when its replay was dead-lettered too, never ran: not measured nor recorded.
func TestReacquiredPromotionMeasuredFromItsReplay(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	js, log, acfg, ccfg, store := setup(ctx, t)
	start := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	sell := seller(ctx, t, js)
	for _, sku := range []string{"A", "B"} {
		for d := 1; d <= 28; d++ {
			sell(sku, start.Add(-time.Duration(d)*24*time.Hour+10*time.Hour), 10, 1) // a baseline of 10 over [start+6h, start+24h)
		}
		sell(sku, start.Add(2*time.Hour), 10, 1) // before the replay: released, it was not running
		sell(sku, start.Add(8*time.Hour), 30, 1)
	}
	later := func(r audit.Record, event, outcome string, replay int, at time.Time) audit.Record {
		v := *r.Verdict
		v.ActionTime = at
		return audit.Record{DecisionID: r.DecisionID, Event: event, Outcome: outcome, Mode: audit.ModeActive, Time: at,
			RuleSet: audit.RuleSetRef{Version: "v1"}, Rule: audit.RuleRef{Name: "b"}, SKU: r.SKU, Site: "s1",
			Channel: "web", Action: r.Action, Verdict: &v, Replay: replay}
	}
	a, b := fired(id("A"), "A", start, 10, 24*time.Hour), fired(id("B"), "B", start, 10, 24*time.Hour)
	for _, r := range []audit.Record{a, b} {
		if _, err := log.Publish(ctx, r, 0); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range []audit.Record{
		later(a, audit.EventReleased, audit.OutcomeReleased, 0, start.Add(time.Minute)),
		later(b, audit.EventReleased, audit.OutcomeReleased, 0, start.Add(time.Minute)),
		later(a, audit.EventReacquired, audit.OutcomeFired, 1, start.Add(6*time.Hour)),
		later(b, audit.EventReacquired, audit.OutcomeFired, 1, start.Add(6*time.Hour)),
		later(b, audit.EventReleased, audit.OutcomeReleased, 1, start.Add(7*time.Hour)),
	} {
		if _, err := log.Append(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	m := running(ctx, t, cancel, js, store, acfg, ccfg, start.Add(3*24*time.Hour))
	rounds := m.Stats.Rounds.Load()
	testutil.WaitFor(t, 20*time.Second, "three rounds", func() bool { return m.Stats.Rounds.Load() >= rounds+3 })
	if n, r := m.Stats.Measured.Load(), m.Stats.Recorded.Load(); n != 1 || r != 1 {
		t.Fatalf("measured %d, recorded %d: want A alone (reacquired; B was released again)", n, r)
	}
	m.mu.Lock()
	u := m.units[id("A")]
	m.mu.Unlock()
	if u == nil || u.sales != 30 || u.baseline != 10 || !u.start.Equal(start.Add(6*time.Hour)) {
		t.Fatalf("A measured as %+v, want 30 sold against 10 from its replay at %s", u, start.Add(6*time.Hour))
	}
	cfg := experiment.Config{ID: "b", Bandit: &experiment.BanditConfig{Arms: []float64{5, 10}, Pool: experiment.PoolChannel}}
	applied, err := store.Record(ctx, cfg, experiment.Outcome{ID: id("B"), SKU: "B", Channel: "web", Discount: 10, Units: 10, Baseline: 10, End: start.Add(24 * time.Hour)})
	if err != nil || !applied {
		t.Errorf("B's promotion, released again, was in the posterior already (applied %v, %v)", applied, err)
	}
}
