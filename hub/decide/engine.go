package decide

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gemba-io/gemba/hub/act"
	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/decide/guard"
	"github.com/gemba-io/gemba/hub/decide/rules"
	"github.com/gemba-io/gemba/hub/decide/versions"
	"github.com/gemba-io/gemba/hub/state/features"
	"github.com/gemba-io/gemba/hub/state/graph"
)

// Guard judges a proposal once per decision id (guard.Guard).
type Guard interface {
	Check(ctx context.Context, p guard.Proposal) (guard.Verdict, error)
	Release(ctx context.Context, id string) error
}

// Outbox records an action for delivery, once per decision id (act.Outbox).
type Outbox interface {
	Enqueue(ctx context.Context, a act.Action) (bool, error)
	// Delivers reports whether the outbox delivers on channel (the act config lists it).
	Delivers(channel string) bool
	// Get returns a decision's record (jetstream.ErrKeyNotFound when it has none).
	Get(ctx context.Context, id string) (act.Record, error)
	// Cancel creates a decision's record cancelled, never delivered, unless one exists (false).
	Cancel(ctx context.Context, a act.Action, reason string) (bool, error)
}

// Recorder writes a decision's audit record, fenced on the rules change it was decided under
// (audit.Log).
type Recorder interface {
	Publish(ctx context.Context, rec audit.Record, fence uint64) (uint64, error)
	Append(ctx context.Context, rec audit.Record) (uint64, error)
	History(ctx context.Context, decisionID string) ([]audit.Record, error)
}

// Deps are the engine's collaborators.
type Deps struct {
	Graph *graph.Graph
	State State
	// Forecasts give days of cover from the demand forecast; nil: the inventory's moving average.
	Forecasts Forecasts
	// Quality is the monitor's verdict on feature values (drift, gaps, bad share); nil: none.
	Quality Quality
	// Experiments holds the bandits' posteriors; nil: a bandit rule promotes with its own discount.
	Experiments Experiments
	Features    features.Definitions
	Guard       Guard
	Outbox      Outbox
	Audit       Recorder
	Replica     string
	Log         *slog.Logger
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Metrics count what the engine did; the hub exports them.
type Metrics struct {
	Evaluations, Decisions, Acted, Suppressed, Queued, Shadow atomic.Uint64
	Fenced, Errors, Released, HeldOut, Deferred               atomic.Uint64
	// Undeliverable counts decisions not made because their channel is not one act delivers on.
	Undeliverable atomic.Uint64
}

// Engine is one replica's decision loop. Every replica runs one on the same state: each sees every
// change (the stores' buckets are watched), evaluates, and the guard's claim on the decision id
// makes one replica's decision the decision.
type Engine struct {
	cfg     Config
	deps    Deps
	b       builder
	log     *slog.Logger
	now     func() time.Time
	Metrics Metrics

	live atomic.Pointer[liveSets]

	mu    sync.Mutex
	dirty map[Unit]struct{}
	seen  map[Unit]struct{} // units marked that the graph does not list: evaluated on the timer with its own
	graph map[Unit]bool     // the graph's units (fixed for the engine's life)
	retry map[Unit]struct{} // units whose decisions could not be completed, marked again after a pause
	all   bool
	wake  chan struct{}

	done     *idSet // decision ids fully handled here (recorded, and acted on when allowed)
	deferred *idSet // decision ids recorded here as deferred for their inputs
	killed   *idSet // decision ids recorded here as suppressed by the kill switch (decided again once reset)
	// undeliverable: (rule version, rule, channel) already logged as naming a channel act lacks.
	undeliverable sync.Map

	wmu    sync.Mutex
	queued map[string]queuedReq // requests awaiting a person, by waitKey

	rounds  atomic.Uint64 // completed rounds (tests wait on it)
	running bool          // a round is evaluating what it took (under mu)
}

// liveSets is a versions.Live with each set's rules by name.
type liveSets struct {
	*versions.Live
	byName map[*rules.Set]map[string]rules.Rule
}

func newLiveSets(l *versions.Live) *liveSets {
	ls := &liveSets{Live: l, byName: map[*rules.Set]map[string]rules.Rule{}}
	for _, s := range []*rules.Set{l.Active, l.Shadow, l.Canary} {
		if s == nil {
			continue
		}
		m := map[string]rules.Rule{}
		for _, r := range s.Rules() {
			m[r.Name] = r
		}
		ls.byName[s] = m
	}
	return ls
}

// New returns an engine; Run starts it, SetLive gives it rules.
func New(cfg Config, d Deps) (*Engine, error) {
	if d.State == nil || d.Guard == nil || d.Outbox == nil || d.Audit == nil {
		return nil, errors.New("decide: state, guard, outbox and audit are required")
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	defs := map[string]features.Definition{}
	for _, def := range d.Features {
		defs[def.Name] = def
	}
	topo := newTopology(d.Graph)
	inGraph := make(map[Unit]bool, len(topo.units))
	for _, u := range topo.units {
		inGraph[u] = true
	}
	e := &Engine{
		cfg: cfg, deps: d, log: d.Log.With("component", "decide"), now: d.Now, graph: inGraph,
		b:     builder{cfg: cfg.Lines, topo: topo, state: d.State, fc: d.Forecasts, q: d.Quality, defs: defs},
		dirty: map[Unit]struct{}{}, seen: map[Unit]struct{}{}, retry: map[Unit]struct{}{}, wake: make(chan struct{}, 1),
		done: newIDSet(1 << 16), deferred: newIDSet(1 << 14), killed: newIDSet(1 << 14), queued: map[string]queuedReq{},
	}
	return e, nil
}

// SetLive switches the rules every later evaluation uses, and re-evaluates every SKU under them.
func (e *Engine) SetLive(l *versions.Live) {
	if l == nil {
		return
	}
	e.live.Store(newLiveSets(l))
	e.mu.Lock()
	e.all = true
	e.mu.Unlock()
	e.poke()
}

// Live returns the rules in use (nil before the first SetLive).
func (e *Engine) Live() *versions.Live {
	if l := e.live.Load(); l != nil {
		return l.Live
	}
	return nil
}

func (e *Engine) poke() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

func (e *Engine) mark(us ...Unit) {
	if len(us) == 0 {
		return
	}
	e.mu.Lock()
	for _, u := range us {
		e.dirty[u] = struct{}{}
		if !e.graph[u] {
			e.seen[u] = struct{}{}
		}
	}
	e.mu.Unlock()
	e.poke()
}

// retryLater marks u again after a pause (see Run): a decision that could not be completed now
// (the guard, the log or the outbox did not answer; a rules change not loaded yet) is not retried
// in a loop that would evaluate, call and log as fast as the machine goes.
func (e *Engine) retryLater(u Unit) {
	e.mu.Lock()
	e.retry[u] = struct{}{}
	e.mu.Unlock()
}

// FeatureChanged is the feature store's notice of a stored value: it marks the SKUs the value is an
// input of. It never blocks.
func (e *Engine) FeatureChanged(name, key string) { e.mark(e.b.affected(name, key)...) }

// PositionChanged is the inventory store's notice of a stored position. It never blocks.
func (e *Engine) PositionChanged(sku, site string) { e.mark(Unit{sku, site}) }

// Run evaluates marked SKUs as they come and every SKU every cfg.Timer, until ctx ends. Units
// whose decisions could not be completed are evaluated again after a pause that doubles from
// retryMin up to cfg.Timer while they keep failing.
func (e *Engine) Run(ctx context.Context) error {
	tick := time.NewTicker(e.cfg.Timer)
	defer tick.Stop()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	var pause time.Duration // the current pause before a retry; 0 when nothing failed last
	armed := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-e.wake:
		case <-retry.C:
			armed = false
			e.mu.Lock()
			for u := range e.retry {
				e.dirty[u] = struct{}{}
			}
			clear(e.retry)
			e.mu.Unlock()
		case <-tick.C:
			e.mu.Lock()
			e.all = true
			e.mu.Unlock()
			if n, m, err := e.reconcile(ctx); err != nil && ctx.Err() == nil {
				e.log.Warn("reconcile incomplete, retried next timer", "err", err)
			} else if n+m > 0 {
				e.log.Info("reconciled allowed decisions", "enqueued", n, "released", m)
			}
			if _, err := e.expire(ctx); err != nil && ctx.Err() == nil {
				e.log.Warn("expired approval requests not all recorded, retried next timer", "err", err)
			}
			if rc, ok := e.deps.Guard.(Reconciler); ok {
				if reqs, err := rc.Pending(ctx); err == nil {
					e.refreshQueue(reqs)
				}
			}
		}
		e.round(ctx)
		e.mu.Lock()
		failed := len(e.retry) > 0
		e.mu.Unlock()
		switch {
		case failed && !armed:
			pause = min(max(2*pause, retryMin), e.cfg.Timer)
			retry.Reset(pause)
			armed = true
		case !failed && !armed:
			pause = 0
		}
		e.rounds.Add(1)
	}
}

// retryMin is the first pause before a failed decision is tried again.
const retryMin = time.Second

// settled reports whether nothing is marked and no evaluation is under way: every change handed to
// the engine so far has been evaluated. It is for tests; a round may start right after.
func (e *Engine) settled(after uint64) bool {
	e.mu.Lock()
	idle := len(e.dirty) == 0 && !e.all && !e.running
	e.mu.Unlock()
	return idle && e.rounds.Load() > after && len(e.wake) == 0
}

// round evaluates what is marked. A unit whose decision could not be completed (KV or the stream
// did not answer) is kept for a retry after a pause.
func (e *Engine) round(ctx context.Context) {
	e.mu.Lock()
	// Read under e.mu, after SetLive's store if its "all" is taken here: a round that takes the
	// re-evaluation of every unit a new rules state asked for evaluates under that state.
	ls := e.live.Load()
	var us []Unit
	if e.all {
		us = e.allUnits()
		clear(e.dirty)
		e.all = false
	} else {
		us = make([]Unit, 0, len(e.dirty))
		for u := range e.dirty {
			us = append(us, u)
		}
		clear(e.dirty)
	}
	e.running = true
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		e.running = false
		e.mu.Unlock()
	}()
	if ls == nil || len(us) == 0 {
		return
	}
	workers := e.cfg.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	work := make(chan Unit)
	var wg sync.WaitGroup
	for range min(workers, len(us)) {
		wg.Go(func() {
			for u := range work {
				if err := e.unit(ctx, ls, u); err != nil && ctx.Err() == nil {
					e.Metrics.Errors.Add(1)
					e.log.Warn("decision not completed, retried after a pause", "sku", u.SKU, "site", u.Site, "err", err)
					e.retryLater(u)
				}
			}
		})
	}
	for _, u := range us {
		if ctx.Err() != nil {
			break
		}
		work <- u
	}
	close(work)
	wg.Wait()
}

// allUnits is every SKU × site the graph knows and every one the inventory (or a feature) has
// marked since the engine started, even before any rules were live (under e.mu).
func (e *Engine) allUnits() []Unit {
	us := append([]Unit(nil), e.b.topo.units...)
	for u := range e.seen {
		us = append(us, u)
	}
	return us
}

// evaluate evaluates the acting version on it (the active one, or the
// canary for a unit in its share): what a backtest and the engine both run.
func evaluate(l *versions.Live, ex *explained) (set *rules.Set, mode string, res rules.Result) {
	set, mode = l.Active, audit.ModeActive
	if c := l.Change.Canary; c != nil && l.Canary != nil {
		unit := ex.in.SKU.ID
		if c.By == "site" {
			unit = ex.in.Site
		}
		if versions.InCanary(c.Version, unit, c.Share) {
			set, mode = l.Canary, audit.ModeCanary
		}
	}
	if set == nil {
		return nil, mode, rules.Result{}
	}
	return set, mode, set.Evaluate(&ex.in)
}

// unit evaluates one SKU at one site and takes each decision through guard, audit and outbox.
func (e *Engine) unit(ctx context.Context, ls *liveSets, u Unit) error {
	now := e.now().UTC()
	ex := e.b.input(u, now)
	e.Metrics.Evaluations.Add(1)
	set, mode, res := evaluate(ls.Live, ex)
	var errs []error
	var decs []rules.Decision
	if set != nil {
		decs = res.PerChannel()
		bucket := guard.TimeBucket(now, e.cfg.Bucket)
		for _, d := range decs {
			if err := e.decide(ctx, ls, set, mode, &res, d, ex, bucket, now); err != nil {
				errs = append(errs, fmt.Errorf("%s on %s: %w", d.Rule, d.Channel, err))
			}
		}
	}
	if ls.Shadow != nil {
		if err := e.shadow(ctx, ls, set, decs, ex, now); err != nil {
			errs = append(errs, fmt.Errorf("shadow: %w", err))
		}
	}
	return errors.Join(errs...)
}

// idSet remembers recent decision ids (bounded; the oldest half is forgotten when full, which only
// costs a replayed Check).
type idSet struct {
	mu       sync.Mutex
	cur, old map[string]struct{}
	max      int
}

func newIDSet(n int) *idSet {
	return &idSet{cur: map[string]struct{}{}, old: map[string]struct{}{}, max: n}
}

func (s *idSet) has(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, a := s.cur[id]
	_, b := s.old[id]
	return a || b
}

func (s *idSet) add(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.cur) >= s.max/2 {
		s.old, s.cur = s.cur, map[string]struct{}{}
	}
	s.cur[id] = struct{}{}
}
