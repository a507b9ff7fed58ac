package backtest

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub/act"
	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/decide"
	"github.com/gemba-io/gemba/hub/decide/guard"
	"github.com/gemba-io/gemba/hub/decide/rules"
	"github.com/gemba-io/gemba/hub/decide/versions"
	"github.com/gemba-io/gemba/hub/state/graph"
	"github.com/gemba-io/gemba/hub/state/inventory"
	"github.com/gemba-io/gemba/internal/natstest"
)

// barrierSKU is a unit no graph has: the engine evaluates it (and decides nothing) in a round of
// its own once every unit marked before it is done.
const barrierSKU = "~barrier"

// engineState is the replay's state as the live engine reads it, counting barrier evaluations.
type engineState struct {
	*state
	barriers atomic.Int64
}

func (s *engineState) Position(sku, site string) (inventory.Position, bool) {
	if sku == barrierSKU {
		s.barriers.Add(1)
		return inventory.Position{}, false
	}
	return s.state.Position(sku, site)
}

// poll waits for cond with a short interval (thousands of steps are synchronised this way) and a
// deadline.
func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Microsecond) // polling interval, not synchronisation
	}
}

// verdictOf is what two runs must agree on for one decision: its id, its outcome as the decision
// log records it, and the guardrail.
func verdictOf(id, outcome, g string) string { return id + " " + outcome + " " + g }

// The same history through the live decide.Engine (its own guard, outbox and decision log on
// another server, the replay clock as its clock) decides the same decision ids with the same
// verdicts as the backtest. The engine is stepped through the replay: after each change (and each
// timer tick) it is told what changed and the test waits until it has decided.
func TestBacktestSameAsLiveEngine(t *testing.T) { sameAsLive(t, testSet(t)) }

// The same with promotions that need approval (15 % against approval above 12 %): the engine asks
// once per rule, SKU and channel while a request is pending (none is answered in a backtest), not
// once per time bucket.
func TestBacktestSameAsLiveEngineWithApprovals(t *testing.T) {
	set, err := rules.Load([]byte(strings.Replace(testRules, "discount: 10,", "discount: 15,", 1)), rules.KnownFeatures("availability", "units"))
	if err != nil {
		t.Fatal(err)
	}
	sameAsLive(t, set)
}

// The same with a holdout: a held-out unit is recorded under the id of the period of its
// promotion's duration (not of the time bucket), once per period.
func TestBacktestSameAsLiveEngineWithHoldout(t *testing.T) {
	src := strings.Replace(testRules, "promote: {channels: [\"*\"], discount: 10, duration: 24h}",
		"promote: {channels: [\"*\"], discount: 10, duration: 24h}\n    experiment: {id: "+holdoutSalt(t)+", holdout: 0.5}", 1)
	set, err := rules.Load([]byte(src), rules.KnownFeatures("availability", "units"))
	if err != nil {
		t.Fatal(err)
	}
	sameAsLive(t, set)
}

func sameAsLive(t *testing.T, set *rules.Set) { sameAsLiveOn(t, testGraph, set) }

// sameAsLiveOn replays the scripted day through set on graphYAML, in the backtest and through the
// live engine, and compares them; it returns the backtest's summary and the live engine's log.
func sameAsLiveOn(t *testing.T, graphYAML string, set *rules.Set) (Summary, *logRecords) {
	cfg, _ := testConfigGraph(t, graphYAML)
	js := hubNATS(t, cfg)
	publishHistory(t, js, cfg)
	from, to := at(9, 0), at(14, 0)

	var bt []string
	sum, err := Run(context.Background(), Options{JS: js, Config: cfg, Rules: set, From: from, To: to, TempDir: t.TempDir(),
		Out: func(d Decision) { bt = append(bt, verdictOf(d.ID, d.Outcome, d.Guardrail)) }})
	if err != nil {
		t.Fatal(err)
	}
	if len(bt) == 0 {
		t.Fatal("the backtest decided nothing")
	}

	// The live side: the engine with the hub's collaborators on their own server.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	live := natstest.JetStream(t)
	_, ljs := natstest.Connect(t, live.URL())
	o := Options{JS: js, Config: cfg, Rules: set, From: from, To: to}
	clk := &clock{now: from.Add(-o.warmup())}
	acfg := audit.Config{Prefix: "gemba"}
	acfg.Defaults()
	alog, err := audit.Open(ctx, ljs, acfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	gcfg := *cfg.Guard
	gcfg.Now = clk.Now
	gd, err := guard.New(ctx, ljs, gcfg, "live", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer gd.Close()
	ocfg := act.Config{Prefix: "gemba", Channels: map[string]act.Channel{"web": {}, "retail": {}}, Now: clk.Now}
	outbox, err := act.Open(ctx, ljs, ocfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := startPrivate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer priv.close()
	icfg := cfg.Inventory
	icfg.Now = clk.Now
	inv, err := inventory.Open(ctx, priv.js, icfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer inv.Close()
	g, err := graph.Load([]byte(graphYAML))
	if err != nil {
		t.Fatal(err)
	}
	st := &engineState{state: newState(clk, cfg.Features, g, cfg.Ingest.Production, inv)}
	elog := &logRecords{}
	ecfg := cfg.Decide
	ecfg.Workers, ecfg.Timer = 1, time.Hour // the replay's ticks come through SetLive, not the wall clock
	eng, err := decide.New(ecfg, decide.Deps{Graph: g, State: st, Features: cfg.Features, Guard: gd, Outbox: outbox,
		Audit: alog, Replica: "live", Log: slog.New(elog), Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	lv := &versions.Live{Change: audit.Change{Op: "activate", Active: set.Version(), By: "test"}, Active: set}
	var wg sync.WaitGroup
	wg.Go(func() { _ = eng.Run(ctx) })
	defer wg.Wait()
	defer cancel()

	ev := decide.NewEvaluator(cfg.Decide, g, st, cfg.Features)
	r := &replay{o: o, clk: clk, st: st.state, ev: ev, decided: idsUntil{}, deferred: idsUntil{}, sum: Summary{ByOutcome: map[string]int{}}}
	// Each step: tell the engine, wait until it has started every unit, then until a barrier
	// unit marked after them has been evaluated (a later round: the earlier ones are done).
	r.evaluate = func(_ context.Context, us []decide.Unit, _ time.Time, all bool) error {
		before := eng.Metrics.Evaluations.Load()
		n := uint64(len(us))
		if all {
			eng.SetLive(lv)
		} else {
			for _, u := range us {
				eng.PositionChanged(u.SKU, u.Site)
			}
		}
		poll(t, fmt.Sprintf("the engine evaluating %d units (all %v) after %d at %s", n, all, before, clk.Now()), func() bool { return eng.Metrics.Evaluations.Load() >= before+n })
		b := st.barriers.Load()
		eng.PositionChanged(barrierSKU, "~")
		poll(t, "the engine's barrier", func() bool { return st.barriers.Load() > b })
		poll(t, "the barrier's evaluation counted", func() bool { return eng.Metrics.Evaluations.Load() >= before+n+1 })
		return nil
	}
	if err := r.run(ctx, js, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if e := eng.Metrics.Errors.Load(); e != 0 {
		t.Fatalf("the engine had %d errors", e)
	}

	recs, err := alog.Recent(ctx, audit.Filter{Limit: audit.MaxLimit})
	if err != nil {
		t.Fatal(err)
	}
	var eg []string
	deferred := map[string]bool{}
	for _, rec := range recs {
		if rec.Event == audit.EventDeferred {
			deferred[rec.DecisionID] = true
		}
		if rec.Event == audit.EventDecided && rec.Outcome == audit.OutcomeHeldOut {
			eg = append(eg, verdictOf(rec.DecisionID, rec.Outcome, ""))
			continue
		}
		if rec.Event != audit.EventDecided || rec.Verdict == nil {
			continue
		}
		eg = append(eg, verdictOf(rec.DecisionID, rec.Outcome, rec.Verdict.Guardrail))
	}
	slices.Sort(bt)
	slices.Sort(eg)
	if !slices.Equal(bt, eg) {
		t.Fatalf("backtest decided:\n%s\nthe live engine:\n%s", strings.Join(bt, "\n"), strings.Join(eg, "\n"))
	}
	if sum.Deferred != len(deferred) {
		t.Fatalf("backtest deferred %d decisions for their inputs, the live engine %d", sum.Deferred, len(deferred))
	}
	t.Logf("%d decisions, the same ids and verdicts; %d deferred by both", len(bt), len(deferred))
	return sum, elog
}

// logRecords keeps the messages of the records logged at error level.
type logRecords struct {
	mu   sync.Mutex
	msgs []string
}

func (l *logRecords) Enabled(_ context.Context, lv slog.Level) bool { return lv >= slog.LevelError }
func (l *logRecords) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs = append(l.msgs, r.Message)
	return nil
}
func (l *logRecords) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecords) WithGroup(string) slog.Handler      { return l }

// count is how many records said msg.
func (l *logRecords) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, m := range l.msgs {
		if m == msg {
			n++
		}
	}
	return n
}
