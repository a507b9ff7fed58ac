package backtest

import (
	"context"
	"errors"
	"math"
	"path"
	"strconv"
	"sync"
	"time"

	"github.com/gemba-io/gemba/hub/decide"
	"github.com/gemba-io/gemba/hub/ingest/agents"
	"github.com/gemba-io/gemba/hub/ingest/commerce"
	"github.com/gemba-io/gemba/hub/state/features"
	"github.com/gemba-io/gemba/hub/state/graph"
	"github.com/gemba-io/gemba/hub/state/inventory"
	"github.com/gemba-io/gemba/signal"
)

// clock is the replay clock: the latest event time seen (never going back), read by the
// features' staleness, the inventory and the guard.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// advance moves the clock to t if t is later; it reports whether it moved.
func (c *clock) advance(t time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.After(c.now) {
		c.now = t
		return true
	}
	return false
}

// fkey is a feature value's identity: hub feature name and key.
type fkey struct{ name, key string }

// state is what the hub's stores would hold at the replay clock: the features' latest values in
// memory (the feature store's rules: the later window wins, staleness against the reader's
// clock) and the inventory in a real inventory.Store on the private JetStream. It implements
// decide.State.
type state struct {
	clk    *clock
	defs   features.Definitions
	maxAge map[string]time.Duration
	graph  *graph.Graph
	prod   []agents.Production
	inv    *inventory.Store

	mu     sync.RWMutex
	vals   map[fkey]*features.Value
	routes map[[2]string][]route // by (signal, feature name)

	// Counters for the summary.
	applied, older, unplaced, moves, refused int
}

// route is one definition a (signal, feature) pair feeds, with its key unless taken per record (sku).
type route struct {
	def int
	key string
}

var _ decide.State = (*state)(nil)

func newState(clk *clock, defs features.Definitions, g *graph.Graph, prod []agents.Production, inv *inventory.Store) *state {
	s := &state{clk: clk, defs: defs, maxAge: map[string]time.Duration{}, graph: g, prod: prod, inv: inv,
		vals: map[fkey]*features.Value{}, routes: map[[2]string][]route{}}
	for _, d := range defs {
		s.maxAge[d.Name] = d.MaxAge
	}
	return s
}

// Feature implements decide.State as features.Store.Get does, at the replay clock.
func (s *state) Feature(name, key string) (features.Reading, bool) {
	s.mu.RLock()
	v := s.vals[fkey{name, key}]
	s.mu.RUnlock()
	if v == nil {
		return features.Reading{}, false
	}
	now := s.clk.Now()
	r := features.Reading{Value: *v, AgeSeconds: now.Sub(v.WindowEnd).Seconds(), Stale: true}
	if age, ok := s.maxAge[name]; ok {
		r.Stale = v.Stale(now, age)
	}
	return r, true
}

// Position implements decide.State from the inventory store's view.
func (s *state) Position(sku, site string) (inventory.Position, bool) { return s.inv.Get(sku, site) }

// place resolves a signal through the graph (the hub's placer).
func (s *state) place(sig string) (machine, line, site string, ok bool) {
	if s.graph == nil {
		return "", "", "", false
	}
	r, err := s.graph.LineOfSignal(sig)
	if err != nil {
		return "", "", "", false
	}
	for _, st := range r.Path {
		if st.Kind == graph.KindMachine {
			machine = st.ID
		}
	}
	return machine, r.ID, r.Site, true
}

func (s *state) routesOf(f *signal.Feature) []route {
	rk := [2]string{f.Signal, f.Name}
	if rs, ok := s.routes[rk]; ok {
		return rs
	}
	rs := []route{}
	for i := range s.defs {
		d := &s.defs[i]
		if d.Feature != f.Name {
			continue
		}
		if ok, _ := path.Match(d.Signal, f.Signal); !ok {
			continue
		}
		r := route{def: i}
		switch d.Key {
		case features.BySignal:
			r.key = f.Signal
		case features.ByMachine, features.ByLine, features.BySite:
			if m, l, site, ok := s.place(f.Signal); ok {
				r.key = map[features.KeyKind]string{features.ByMachine: m, features.ByLine: l, features.BySite: site}[d.Key]
			}
		}
		rs = append(rs, r)
	}
	s.routes[rk] = rs
	return rs
}

// applyFeature folds one record in as the feature store's Apply does (later decides) and returns
// the (name, key) pairs whose value changed.
func (s *state) applyFeature(h *signal.Header, streamSeq uint64, f *signal.Feature, changed []fkey) []fkey {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.routesOf(f) {
		d := &s.defs[r.def]
		key := r.key
		if d.Key == features.BySKU {
			key, _ = f.Labels.Get("sku")
		}
		if key == "" {
			s.unplaced++
			continue
		}
		if math.IsNaN(f.Value) || math.IsInf(f.Value, 0) {
			continue
		}
		k := fkey{d.Name, key}
		if cur := s.vals[k]; cur != nil && (!later(f.WindowEnd, streamSeq, f.Signal, cur) ||
			cur.WindowEnd.Equal(f.WindowEnd) && cur.Lineage.Signal == f.Signal && cur.Value == f.Value) {
			s.older++ // (or the same window re-sent: the hub's dedup drops its message)
			continue
		}
		v := &features.Value{
			Name: d.Name, Key: key, Value: f.Value, Count: f.Count, WindowStart: f.WindowStart.UTC(),
			WindowEnd: f.WindowEnd.UTC(), Partial: f.Partial, Historical: h.Historical, Updated: s.clk.Now(),
			Lineage: features.Lineage{Agent: h.Agent, Site: h.Site, Incarnation: h.Incarnation, ConfigVersion: h.ConfigVersion,
				Signal: f.Signal, FirstSeq: h.FirstSeq, StreamSeq: streamSeq},
		}
		if len(f.Labels) > 0 {
			v.Labels = make(map[string]string, len(f.Labels))
			for _, l := range f.Labels {
				v.Labels[l.Key] = l.Value
			}
		}
		s.vals[k] = v
		s.applied++
		changed = append(changed, k)
	}
	return changed
}

// later is the feature store's order of values of one key: a later window, or at the same window
// end the later message, then the larger signal (two sources of one key closing a window at the
// same instant).
func later(end time.Time, seq uint64, sig string, cur *features.Value) bool {
	if c := end.Compare(cur.WindowEnd); c != 0 {
		return c > 0
	}
	if seq != cur.Lineage.StreamSeq {
		return seq > cur.Lineage.StreamSeq
	}
	return sig > cur.Lineage.Signal
}

// production is the agents ingest's mapping of a units-per-SKU feature onto produced stock
// (ingest.production), with the same movement id so that a re-sent window is one movement.
func (s *state) production(h *signal.Header, f *signal.Feature) (inventory.Movement, bool) {
	for _, p := range s.prod {
		if p.Feature != f.Name {
			continue
		}
		if ok, _ := path.Match(p.Signal, f.Signal); !ok {
			continue
		}
		sku, _ := f.Labels.Get("sku")
		if sku == "" || f.Value <= 0 {
			return inventory.Movement{}, false
		}
		site := h.Site
		if _, _, ps, ok := s.place(f.Signal); ok && ps != "" {
			site = ps
		}
		id := "prod:" + h.Agent + ":" + f.Signal + ":" + sku + ":" + strconv.FormatInt(f.WindowEnd.UnixNano(), 10)
		return inventory.Movement{ID: id, SKU: sku, Site: site, Kind: inventory.Produced, Qty: f.Value, Time: f.WindowEnd}, true
	}
	return inventory.Movement{}, false
}

// move applies a movement as the hub does (agents' production, commerce sales); it reports
// whether the position was written. A movement the inventory refuses is counted, as the hub's
// consumers terminate it.
func (s *state) move(ctx context.Context, m inventory.Movement) (bool, error) {
	r, err := s.inv.Move(ctx, m)
	w, err := s.written(r, err)
	if m.Kind == inventory.Produced && r.Outcome == inventory.BeforeSnapshot {
		w = false // already in the count: the store writes nothing, so nothing is notified
	}
	return w, err
}

// snapshot applies an ERP count as the hub's commerce sink does.
func (s *state) snapshot(ctx context.Context, e commerce.Snapshot) (bool, error) {
	r, err := s.inv.Snapshot(ctx, e.Count())
	return s.written(r, err)
}

// sale applies a sale (or a return) as the hub's commerce sink does.
func (s *state) sale(ctx context.Context, e commerce.Sale) (bool, error) {
	return s.move(ctx, e.Movement())
}

func (s *state) written(r inventory.Result, err error) (bool, error) {
	if errors.Is(err, inventory.ErrInvalid) {
		s.refused++
		return false, nil
	}
	if err != nil {
		return false, err
	}
	s.moves++
	switch r.Outcome {
	case inventory.Duplicate, inventory.Stale, inventory.BeyondHorizon:
		return false, nil
	}
	return true, nil
}
