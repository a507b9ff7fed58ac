package decide

import (
	"context"
	"encoding/json"
	"log/slog"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/gemba-io/gemba/hub/act"
	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/decide/experiment"
	"github.com/gemba-io/gemba/hub/decide/guard"
	"github.com/gemba-io/gemba/hub/decide/versions"
	"github.com/gemba-io/gemba/hub/learn/registry"
	"github.com/gemba-io/gemba/hub/state/features"
	"github.com/gemba-io/gemba/hub/state/graph"
	"github.com/gemba-io/gemba/hub/state/inventory"
	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const testGraph = `version: t1
sites: [{id: s1}]
lines: [{id: l1, site: s1}, {id: l2, site: s1}]
skus: [{id: A}, {id: B}]
channels: [{id: web}, {id: retail}]
edges:
  - {kind: produces, from: l1, to: A}
  - {kind: produces, from: l2, to: B}
  - {kind: sold_via, from: A, to: web}
  - {kind: sold_via, from: A, to: retail}
  - {kind: sold_via, from: B, to: web}
`

// Promote what is over-stocked and made by a running line; hold what a stopped line makes and is short.
const testRules = `name: t
hit_policy: first
rules:
  - name: hold-short
    priority: 10
    when: lines.size() > 0 && !lines.exists(l, l.state == "running") && inventory.days_of_cover < 7.0
    hold: {channels: ["*"], reason: line down and short}
  - name: promote-over
    when: inventory.days_of_cover > 30.0 && lines.exists(l, l.state == "running") && has(features.units) && features.units.value > 0.0
    promote: {channels: ["*"], discount: 10, duration: 24h}
`

var testDefs = features.Definitions{
	{Name: "availability", Signal: "*", Feature: "availability", Key: features.ByLine, MaxAge: time.Minute},
	{Name: "units", Signal: "*", Feature: "units", Key: features.BySKU, MaxAge: time.Minute},
}

// fakeState is the engine's state behind its interface: the stores themselves are tested against
// NATS in their packages.
type fakeState struct {
	mu    sync.Mutex
	feats map[[2]string]features.Reading
	pos   map[[2]string]inventory.Position
}

func newFakeState() *fakeState {
	return &fakeState{feats: map[[2]string]features.Reading{}, pos: map[[2]string]inventory.Position{}}
}

func (s *fakeState) Feature(name, key string) (features.Reading, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.feats[[2]string{name, key}]
	return r, ok
}

func (s *fakeState) Position(sku, site string) (inventory.Position, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.pos[[2]string{sku, site}]
	return p, ok
}

var streamSeq uint64

// setFeature stores a fresh reading of a window that ended at end.
func (s *fakeState) setFeature(name, key string, v float64, end time.Time, mod func(*features.Reading)) {
	s.mu.Lock()
	streamSeq++
	r := features.Reading{Value: features.Value{Name: name, Key: key, Value: v, WindowStart: end.Add(-10 * time.Second), WindowEnd: end,
		Lineage: features.Lineage{Agent: "agent-1", Site: "s1", ConfigVersion: "cfg1", Signal: key + ".sig", FirstSeq: streamSeq, StreamSeq: streamSeq}}}
	if mod != nil {
		mod(&r)
	}
	s.feats[[2]string{name, key}] = r
	s.mu.Unlock()
}

func (s *fakeState) setCover(sku, site string, days float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pos[[2]string{sku, site}] = inventory.Position{SKU: sku, Site: site, OnHand: days * 10, Position: days * 10, DailyRate: 10, DaysOfCover: days}
}

// fakeForecasts stand for the active model set (the registry is tested against NATS in its package).
type fakeForecasts struct {
	mu sync.Mutex
	by map[[2]string]registry.Cover
}

func (f *fakeForecasts) Cover(sku, site string, position float64, now time.Time) (registry.Cover, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.by[[2]string{sku, site}]
	return c, ok
}

func (f *fakeForecasts) set(sku, site string, c registry.Cover) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.by[[2]string{sku, site}] = c
}

// fakeQuality stands for the monitor (tested against NATS in hub/monitor/quality).
type fakeQuality struct {
	mu sync.Mutex
	by map[[2]string]FeatureQuality
}

func (f *fakeQuality) Quality(feature, key string) (FeatureQuality, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	q, ok := f.by[[2]string{feature, key}]
	return q, ok
}

func (f *fakeQuality) set(feature, key string, q FeatureQuality) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.by[[2]string{feature, key}] = q
}

type rig struct {
	t      *testing.T
	fc     *fakeForecasts
	q      *fakeQuality
	exps   *experiment.Store
	ctx    context.Context
	js     jetstream.JetStream
	state  *fakeState
	log    *audit.Log
	reg    *versions.Registry
	guard  *guard.Guard
	outbox *act.Outbox
	eng    *Engine
	now    time.Time
	nowMu  sync.Mutex
}

func (r *rig) clock() time.Time {
	r.nowMu.Lock()
	defer r.nowMu.Unlock()
	return r.now
}

func (r *rig) advance(d time.Duration) {
	r.nowMu.Lock()
	r.now = r.now.Add(d)
	r.nowMu.Unlock()
}

// newRig starts a JetStream server with the decision room on it: a decision log, rule versions,
// a guard (max 20 %, approval above 12 %), an outbox delivering on NATS, and the engine.
func newRig(t *testing.T, gcfg func(*guard.Config)) *rig {
	t.Helper()
	return newRigOn(t, testGraph, gcfg, nil)
}

// newRigOn is newRig on another graph, with the engine's config changed by ecfg.
func newRigOn(t *testing.T, graphYAML string, gcfg func(*guard.Config), ecfg func(*Config)) *rig {
	t.Helper()
	return newRigWith(t, graphYAML, gcfg, ecfg, nil)
}

// newRigWith is newRigOn with the engine's guard wrapped by wrap (nil: the guard itself).
func newRigWith(t *testing.T, graphYAML string, gcfg func(*guard.Config), ecfg func(*Config), wrap func(Guard) Guard) *rig {
	t.Helper()
	logger := testutil.Logger(t, slog.LevelWarn) // what went wrong, in a failing test's report
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	node := natstest.JetStream(t)
	nc, js := natstest.Connect(t, node.URL())
	_ = nc
	r := &rig{t: t, ctx: ctx, js: js, state: newFakeState(), now: time.Now().UTC(), fc: &fakeForecasts{by: map[[2]string]registry.Cover{}},
		q: &fakeQuality{by: map[[2]string]FeatureQuality{}}}
	var err error
	acfg := audit.Config{Prefix: "gemba"}
	acfg.Defaults()
	if r.log, err = audit.Open(ctx, js, acfg, logger); err != nil {
		t.Fatal(err)
	}
	if r.reg, err = versions.Open(ctx, js, versions.Config{Bucket: versions.DefaultBucket}, r.log, logger); err != nil {
		t.Fatal(err)
	}
	gc := guard.DefaultConfig()
	gc.MaxDiscount, gc.Approval.Above, gc.Cooldown, gc.Now = 20, 12, time.Hour, r.clock
	if gcfg != nil {
		gcfg(&gc)
	}
	if r.guard, err = guard.New(ctx, js, gc, "r1", logger); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.guard.Close() })
	oc := act.Config{Prefix: "gemba", Channels: map[string]act.Channel{"web": {}, "retail": {}}, Poll: 50 * time.Millisecond, Now: r.clock}
	oc.Defaults()
	if r.outbox, err = act.Open(ctx, js, oc, logger); err != nil {
		t.Fatal(err)
	}
	g, err := graph.Load([]byte(graphYAML))
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Timer = time.Hour // rounds come from changes in these tests
	if ecfg != nil {
		ecfg(&cfg)
	}
	if r.exps, err = experiment.Open(ctx, js, experiment.DefaultStoreConfig(), nil); err != nil {
		t.Fatal(err)
	}
	var eg Guard = r.guard
	if wrap != nil {
		eg = wrap(r.guard)
	}
	r.eng, err = New(cfg, Deps{Graph: g, State: r.state, Forecasts: r.fc, Quality: r.q, Experiments: r.exps, Features: testDefs, Guard: eg, Outbox: r.outbox,
		Audit: r.log, Replica: "r1", Now: r.clock, Log: logger})
	if err != nil {
		t.Fatal(err)
	}
	r.outbox.SetGuard(DeliveryGuard{Guard: r.guard, Audit: r.log, Replica: "r1", Now: r.clock}) // as the hub wires it
	var wg sync.WaitGroup
	wg.Go(func() { _ = r.eng.Run(ctx) })
	wg.Go(func() { _ = r.outbox.Run(ctx) })
	stop, err := r.reg.Follow(r.eng.SetLive)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop(); cancel(); wg.Wait() })
	return r
}

// activate stores and activates a rule file and waits until the engine runs it.
func (r *rig) activate(data string) string {
	r.t.Helper()
	v, err := r.reg.Store(r.ctx, []byte(data), "alice")
	if err != nil {
		r.t.Fatal(err)
	}
	if _, err := r.reg.Activate(r.ctx, v, "alice", "test"); err != nil {
		r.t.Fatal(err)
	}
	testutil.WaitFor(r.t, 10*time.Second, "engine runs "+v[:8], func() bool {
		l := r.eng.Live()
		return l != nil && l.Active != nil && l.Active.Version() == v
	})
	return v
}

// actions reads every message of the ACTIONS stream.
func (r *rig) actions() []act.Message {
	r.t.Helper()
	s, err := r.js.Stream(r.ctx, "ACTIONS")
	if err != nil {
		r.t.Fatal(err)
	}
	info, err := s.Info(r.ctx)
	if err != nil {
		r.t.Fatal(err)
	}
	var out []act.Message
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(r.ctx, seq)
		if err != nil {
			continue
		}
		var msg act.Message
		if err := json.Unmarshal(m.Data, &msg); err != nil {
			r.t.Fatalf("action %d: %v", seq, err)
		}
		out = append(out, msg)
	}
	return out
}

// records returns the decision log's records (newest first) matching f.
func (r *rig) records(f audit.Filter) []audit.Record {
	r.t.Helper()
	f.Limit = audit.MaxLimit
	recs, err := r.log.Recent(r.ctx, f)
	if err != nil {
		r.t.Fatal(err)
	}
	return recs
}

// running makes line l run (availability 0.9) and SKU sku over-stocked with units being made.
func (r *rig) overstocked(line, sku string) {
	now := r.clock()
	r.state.setFeature("units", sku, 40, now, nil)
	r.state.setCover(sku, "s1", 45)
	r.state.setFeature("availability", line, 0.9, now, nil)
	r.eng.FeatureChanged("availability", line)
}

var _ = math.Inf

// replica starts another replica's engine (its own guard and memory) on the rig's NATS, log,
// outbox, experiments and state, following the rig engine's rules: a second hub process, or the
// rig's own after a restart.
func (r *rig) replica(name string) *Engine {
	r.t.Helper()
	g, err := graph.Load([]byte(testGraph))
	if err != nil {
		r.t.Fatal(err)
	}
	gc := guard.DefaultConfig()
	gc.MaxDiscount, gc.Approval.Above, gc.Cooldown, gc.Now = 20, 12, time.Hour, r.clock
	logger := testutil.Logger(r.t, slog.LevelWarn)
	gd, err := guard.New(r.ctx, r.js, gc, name, logger)
	if err != nil {
		r.t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Timer = time.Hour
	e, err := New(cfg, Deps{Graph: g, State: r.state, Forecasts: r.fc, Quality: r.q, Experiments: r.exps, Features: testDefs,
		Guard: gd, Outbox: r.outbox, Audit: r.log, Replica: name, Now: r.clock, Log: logger})
	if err != nil {
		r.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(r.ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = e.Run(ctx) })
	r.t.Cleanup(func() { cancel(); wg.Wait(); _ = gd.Close() })
	e.SetLive(r.eng.Live())
	return e
}

// settle waits until e has evaluated everything marked so far.
func settle(t *testing.T, e *Engine, what string) {
	t.Helper()
	after := e.rounds.Load()
	e.poke()
	testutil.WaitFor(t, 10*time.Second, what, func() bool { return e.settled(after) })
}
