package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gemba-io/gemba/hub/act"
	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/decide"
	"github.com/gemba-io/gemba/hub/decide/experiment"
	"github.com/gemba-io/gemba/hub/decide/guard"
	"github.com/gemba-io/gemba/hub/decide/rules"
	"github.com/gemba-io/gemba/hub/decide/versions"
	"github.com/gemba-io/gemba/hub/monitor/outcome"
	"github.com/gemba-io/gemba/hub/state/features"
	"github.com/gemba-io/gemba/hub/state/inventory"
	"github.com/gemba-io/gemba/internal/kvretry"
)

// decisions is the decision room of one replica: the guard, the outbox and its delivery loop, the
// decision log, the rule versions and the engine that ties them to the state.
type decisions struct {
	guard    *guard.Guard
	outbox   *act.Outbox
	log      *audit.Log
	registry *versions.Registry
	engine   *decide.Engine
	approver *decide.Approver
	// experiments are the bandits' posteriors (the engine chooses arms from them); outcomes measures
	// experiment decisions once their windows are over, feeding the posteriors and the holdout lifts.
	experiments *experiment.Store
	outcomes    *outcome.Measurer
	js          jetstream.JetStream
	stop        func() // stops following rule changes

	mu  sync.Mutex
	why map[string]string // loop → why it is not running
}

// hubQuality is the monitor's verdict as the engine reads it; nothing while monitoring is off or
// not open yet.
type hubQuality struct{ h *Hub }

func (q hubQuality) Quality(feature, key string) (decide.FeatureQuality, bool) {
	m := q.h.mon.Load()
	if m == nil || m.quality == nil {
		return decide.FeatureQuality{}, false
	}
	s, ok := m.quality.Status(feature, key)
	if !ok {
		return decide.FeatureQuality{}, false
	}
	return decide.FeatureQuality{Drifting: s.Drifting, Gap: s.Gap, Bad: s.Bad, BadShare: s.BadShare, Reasons: s.Reasons}, true
}

// liveState is the engine's view of the hub's stores.
type liveState struct {
	feats *features.Store
	inv   *inventory.Store
}

func (s liveState) Feature(name, key string) (features.Reading, bool) { return s.feats.Get(name, key) }
func (s liveState) Position(sku, site string) (inventory.Position, bool) {
	return s.inv.Get(sku, site)
}

// openDecisions opens the decision room's state (guard bucket, outbox and actions stream, decision
// log, rule versions) and builds the engine. Nothing runs until runDecisions.
func (h *Hub) openDecisions(ctx context.Context, js jetstream.JetStream) (*decisions, error) {
	cfg, log := h.cfg, h.log.With("component", "decide")
	d := &decisions{js: js}
	var err error
	if d.log, err = audit.Open(ctx, js, cfg.Audit, log); err != nil {
		return nil, err
	}
	names := make([]string, 0, len(cfg.Features))
	for _, f := range cfg.Features {
		names = append(names, f.Name)
	}
	if d.registry, err = versions.Open(ctx, js, cfg.Rules, d.log, log, rules.KnownFeatures(names...)); err != nil {
		return nil, err
	}
	if d.guard, err = guard.New(ctx, js, *cfg.Guard, cfg.Hub.ID, log.With("component", "guard")); err != nil {
		return nil, err
	}
	acfg := *cfg.Act
	if acfg.Owner == "" {
		acfg.Owner = cfg.Hub.ID
	}
	if d.outbox, err = act.Open(ctx, js, acfg, log.With("component", "act")); err != nil {
		_ = d.guard.Close()
		return nil, err
	}
	xcfg := experiment.DefaultStoreConfig()
	xcfg.Replicas = cfg.NATS.Replicas
	if d.experiments, err = experiment.Open(ctx, js, xcfg, log.With("component", "experiment")); err != nil {
		_ = d.guard.Close()
		return nil, err
	}
	d.outcomes = outcome.New(js, d.experiments, outcome.Options{Audit: d.log.Config(), Commerce: cfg.Commerce.Stream,
		Prefix: cfg.Commerce.Prefix, Logger: log})
	d.engine, err = decide.New(cfg.Decide, decide.Deps{
		Graph: h.graph.Load(), State: liveState{h.feats.Load(), h.inv.Load()}, Features: cfg.Features,
		Forecasts: h, Quality: hubQuality{h}, Experiments: d.experiments,
		Guard: d.guard, Outbox: d.outbox, Audit: d.log, Replica: cfg.Hub.ID, Log: log,
	})
	if err != nil {
		_ = d.guard.Close()
		return nil, err
	}
	// Delivery reads the kill switch before any part of a start goes out, and gives back a start it
	// cancelled (a released record, then the guard's Release).
	d.outbox.SetGuard(decide.DeliveryGuard{Guard: d.guard, Audit: d.log, Replica: cfg.Hub.ID})
	d.approver = &decide.Approver{Guard: d.guard, Audit: d.log, Outbox: d.outbox, Replica: cfg.Hub.ID}
	if err := h.initialRules(ctx, d); err != nil {
		_ = d.guard.Close()
		return nil, err
	}
	return d, nil
}

// initialRules activates decide.rules when no version is active yet (a first start). Two replicas
// starting together both try; the decision log's compare-and-set lets one change land.
func (h *Hub) initialRules(ctx context.Context, d *decisions) error {
	file := h.cfg.Decide.Rules
	if file == "" {
		return nil
	}
	cur, err := d.log.Current(ctx)
	if err != nil {
		return err
	}
	if cur.Active != "" {
		return nil
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("decide.rules: %w", err)
	}
	v, err := d.registry.Store(ctx, data, "hub:"+h.cfg.Hub.ID)
	if err != nil {
		return fmt.Errorf("decide.rules %s: %w", file, err)
	}
	if cur, err = d.log.Current(ctx); err == nil && cur.Active != "" {
		return nil // another replica was first
	}
	if _, err := d.registry.Activate(ctx, v, "hub:"+h.cfg.Hub.ID, "first start: decide.rules "+file); errors.Is(err, versions.ErrUnchanged) {
		return nil // another replica starting with the same file was first
	} else if err != nil {
		return fmt.Errorf("decide.rules %s: activate %s: %w", file, v, err)
	}
	h.log.Info("rules activated from decide.rules (first start)", "file", file, "version", v)
	return nil
}

// runDecisions starts the delivery loop, the engine and the rule follower; the returned function
// stops them (engine first: nothing new is decided while the outbox drains).
func (h *Hub) runDecisions(d *decisions, log *slog.Logger) (stop func()) {
	feats, inv := h.feats.Load(), h.inv.Load()
	feats.Notify(d.engine.FeatureChanged)
	inv.Notify(d.engine.PositionChanged)
	var err error
	d.stop, err = d.registry.Follow(d.engine.SetLive)
	if err != nil {
		log.Error("rule versions not followed: decisions wait for the next start", "err", err)
		d.setWhy("rule versions", fmt.Sprintf("rule versions not followed (decisions wait for the next start): %v", err))
		d.stop = func() {}
	}
	ectx, ecancel := context.WithCancel(context.Background())
	octx, ocancel := context.WithCancel(context.Background())
	var ew, ow sync.WaitGroup
	ew.Go(func() {
		if err := d.engine.Run(ectx); err != nil {
			log.Error("decision engine stopped", "err", err)
		}
	})
	ow.Go(func() { d.keepRunning(octx, "action delivery", d.outbox.Run, log) })
	ow.Go(func() { h.sweepDecisions(octx, d, log) })
	ow.Go(func() { h.checkKept(octx, d, log) })
	ow.Go(func() { d.keepRunning(octx, "experiment outcomes", d.outcomes.Run, log) })
	return func() {
		d.stop()
		ecancel()
		ew.Wait()
		ocancel()
		ow.Wait()
		_ = d.guard.Close()
	}
}

// keepRunning runs a loop of the room until ctx ends. Such a loop returns an error only when it
// cannot start (its watch or consumer not created: JetStream not answering, a bucket not there yet):
// it is started again after a pause, and meanwhile the replica is not ready and says why.
func (d *decisions) keepRunning(ctx context.Context, name string, run func(context.Context) error, log *slog.Logger) {
	for wait := time.Second; ; wait = min(2*wait, 30*time.Second) {
		err := run(ctx)
		if err == nil || ctx.Err() != nil {
			return
		}
		log.Error(name+" not running, starting it again", "err", err, "retry_in", wait)
		d.setWhy(name, fmt.Sprintf("%s not running: %v", name, err))
		if kvretry.Sleep(ctx, wait) != nil {
			return
		}
		d.setWhy(name, "")
	}
}

// halt refuses approvals from now on, saying why (the loops are stopped by the caller).
func (d *decisions) setWhy(name, why string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if why == "" {
		delete(d.why, name)
		return
	}
	if d.why == nil {
		d.why = map[string]string{}
	}
	d.why[name] = why
}

// reasons are why the room is not running (nil when it is).
func (d *decisions) reasons() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var r []string
	for _, w := range d.why {
		r = append(r, w)
	}
	slices.Sort(r)
	return r
}

// sweepDecisions removes guardrail and outbox memory that can no longer matter, on a slow timer.
func (h *Hub) sweepDecisions(ctx context.Context, d *decisions, log *slog.Logger) {
	t := time.NewTicker(10 * time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if n, err := d.guard.Sweep(ctx); err != nil {
			log.Warn("guard sweep failed", "err", err)
		} else if n > 0 {
			log.Info("guard memory swept", "keys", n)
		}
		if n, err := d.outbox.Sweep(ctx, h.cfg.Guard.Retention+h.cfg.Decide.Bucket); err != nil {
			log.Warn("outbox sweep failed", "err", err)
		} else if n > 0 {
			log.Info("outbox swept", "records", n)
		}
	}
}

func (h *Hub) registerDecisions(d *decisions) {
	c := func(name, help string, v *atomic.Uint64) {
		h.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "gemba_hub_" + name, Help: help},
			func() float64 { return float64(v.Load()) }))
	}
	m := &d.engine.Metrics
	c("decide_evaluations_total", "SKU × site evaluations of the rules.", &m.Evaluations)
	c("decide_decisions_total", "Decisions taken by this replica (first verdict of a decision id).", &m.Decisions)
	c("decide_acted_total", "Decisions allowed by the guardrails and sent to the outbox.", &m.Acted)
	c("decide_suppressed_total", "Decisions stopped by a guardrail.", &m.Suppressed)
	c("decide_queued_total", "Decisions sent to the approval queue.", &m.Queued)
	c("decide_shadow_total", "Shadow version decisions recorded (never acted on).", &m.Shadow)
	c("decide_fenced_total", "Decisions not recorded nor acted on because a rules change landed first.", &m.Fenced)
	c("decide_errors_total", "Evaluations whose decisions could not be completed (retried).", &m.Errors)
	c("decide_released_total", "Allowed decisions released by reconcile (never recorded, so never acted on).", &m.Released)
	c("decide_undeliverable_total", "Decisions not made because their channel is not in act.channels (logged once per rule version, rule and channel).", &m.Undeliverable)
	c("decide_deferred_total", "Decisions deferred because an input could not be used (stale, partial, historical, bad quality, drifting): made once it can.", &m.Deferred)
	c("decide_held_out_total", "Decisions recorded as held out by their experiment (never acted on).", &m.HeldOut)
	o := &d.outcomes.Stats
	c("outcome_measured_total", "Experiment decisions measured after their window.", &o.Measured)
	c("outcome_recorded_total", "Bandit outcomes this replica applied to the posteriors (first to get there).", &o.Recorded)
	c("outcome_no_baseline_total", "Measured units without sales before their window: not fed to the bandit.", &o.NoBaseline)
	c("outcome_released_total", "Experiment promotions released (allowed, never acted on): not measured.", &o.Released)
	c("outcome_reacquired_total", "Released experiment promotions reserved again for the replay of their dead letter: measured from then on.", &o.Reacquired)
	c("outcome_errors_total", "Measurement rounds that failed (retried next round).", &o.Errors)
	c("outcome_refollows_total", "New consumers made by the outcome measurer's follower of the decision log (the last one's node went away, or it lagged).", &o.Refollows)
	g := &d.guard.Metrics
	c("guard_allowed_total", "Guard verdicts: allow.", &g.Allowed)
	c("guard_suppressed_total", "Guard verdicts: suppress.", &g.Suppressed)
	c("guard_queued_total", "Guard verdicts: needs approval.", &g.Queued)
	c("guard_replayed_total", "Guard checks answered from a recorded verdict.", &g.Replayed)
	c("guard_takeovers_total", "Decisions taken over from a replica whose claim lapsed.", &g.Takeovers)
}
