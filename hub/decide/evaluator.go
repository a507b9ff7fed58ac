package decide

import (
	"sync"
	"time"

	"github.com/gemba-io/gemba/hub/decide/guard"
	"github.com/gemba-io/gemba/hub/decide/rules"
	"github.com/gemba-io/gemba/hub/decide/versions"
	"github.com/gemba-io/gemba/hub/state/features"
	"github.com/gemba-io/gemba/hub/state/graph"
)

// Evaluator is the engine's evaluation without its side effects: rule inputs built from a State,
// the acting version chosen (active or canary), the rules run, and each decision's proposal for
// the guardrails — what a backtest replays history through.
type Evaluator struct {
	b   builder
	idx sync.Map // *rules.Set → map[string]rules.Rule: a set's rules by name, built once per version
}

// NewEvaluator returns an evaluator over st with the engine's input rules (cfg.Lines).
func NewEvaluator(cfg Config, g *graph.Graph, st State, defs features.Definitions) *Evaluator {
	m := map[string]features.Definition{}
	for _, d := range defs {
		m[d.Name] = d
	}
	return &Evaluator{b: builder{cfg: cfg.Lines, topo: newTopology(g), state: st, defs: m}}
}

// Units lists every SKU × site the graph knows.
func (ev *Evaluator) Units() []Unit { return append([]Unit(nil), ev.b.topo.units...) }

// Affected lists the units a new value of feature name for key is an input of.
func (ev *Evaluator) Affected(name, key string) []Unit { return ev.b.affected(name, key) }

// Evaluation is what the acting version decided for one unit.
type Evaluation struct {
	Unit      Unit
	Version   string // the acting version ("" when none is active)
	Mode      string // active or canary
	Result    rules.Result
	Input     rules.Input
	Proposals []guard.Proposal // one per channel decision, as the engine would submit them
	Actions   []rules.Action   // the action of each proposal (same order)
}

// Evaluate evaluates l's acting version on u at now; bucket is the decision time bucket width.
func (ev *Evaluator) Evaluate(l *versions.Live, u Unit, now time.Time, bucket time.Duration) Evaluation {
	ex := ev.b.input(u, now)
	set, mode, res := evaluate(l, ex)
	out := Evaluation{Unit: u, Mode: mode, Result: res, Input: ex.in}
	if set == nil {
		return out
	}
	out.Version = set.Version()
	byName := ev.rules(set)
	b := guard.TimeBucket(now, bucket)
	for _, d := range res.PerChannel() {
		out.Proposals = append(out.Proposals, proposal(set, &res, d, byName[d.Rule], ex, b, now, requester(l.Change, mode)))
		out.Actions = append(out.Actions, d.Action)
	}
	return out
}

func (ev *Evaluator) rules(set *rules.Set) map[string]rules.Rule {
	if m, ok := ev.idx.Load(set); ok {
		return m.(map[string]rules.Rule)
	}
	m := map[string]rules.Rule{}
	for _, r := range set.Rules() {
		m[r.Name] = r
	}
	ev.idx.Store(set, m)
	return m
}
