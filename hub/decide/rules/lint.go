package rules

import (
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/types"

	"github.com/gemba-io/gemba/config"
)

// Severity of a finding.
type Severity string

// Severities. Info findings are normal under some policies and never become errors.
const (
	Info    Severity = "info"
	Warning Severity = "warning"
	Error   Severity = "error"
)

// Finding is one lint result, placed at a rule (overlap_search: at the set, Rule empty).
type Finding struct {
	Severity Severity `json:"severity"`
	Code     string   `json:"code"` // unreachable, never, duplicate, overlap, overlap_search, conflict
	Rule     string   `json:"rule"`
	Other    string   `json:"other,omitempty"` // the other rule of a pair
	Path     string   `json:"path"`
	Line     int      `json:"line"`
	Msg      string   `json:"msg"`
	Witness  *Input   `json:"witness,omitempty"` // an input on which both rules of an overlap match
}

// String prints the finding as LINE: PATH: SEVERITY: CODE: MESSAGE.
func (f Finding) String() string {
	return fmt.Sprintf("%d: %s: %s: %s: %s", f.Line, f.Path, f.Severity, f.Code, f.Msg)
}

// Format prints the finding for a terminal as FILE:LINE: PATH: SEVERITY: CODE: MESSAGE.
func (f Finding) Format(file string) string { return file + ":" + f.String() }

// LintSamples is how many generated inputs the overlap lint evaluates every rule on, and at
// most how many it generates for one pair not found among them.
const LintSamples = 4000

// focusedBudget bounds the samples of the pairs not found in the common sample, all together
// (a few seconds): each pair gets an equal share, at most LintSamples and at least one. Below
// focusedFull samples a pair, the search is thinned and an info finding says so.
const (
	focusedBudget = 1_000_000
	focusedFull   = 200
)

// Lint checks the rule set for rules that cannot decide and pairs that disagree:
//
//   - unreachable (warning, first only): a rule after one whose condition is always true, or
//     whose condition is the same as an earlier rule's (compared after constant folding, in
//     CEL's canonical form);
//   - never (warning): a condition that folds to false;
//   - overlap: two rules with different actions that both match a generated input (the input is
//     the finding's witness). A warning under collect when the actions share a channel at the
//     same priority (two decisions for one channel, nothing saying which wins); info otherwise,
//     and under first, where the earlier rule wins by design. Found by sampling (see sampler): every overlap reported is real, but
//     finding none does not prove the conditions disjoint.
//   - conflict (warning): a promote and a hold of the same channel ("*" is every channel) at the
//     same priority: give the one that must win a higher priority.
//
// The result is deterministic for a version: the sample is seeded from it.
func (s *Set) Lint() []Finding {
	var out []Finding
	always, canon := s.foldedConditions()
	seen := map[string]string{} // canonical condition -> first rule
	var alwaysBefore string
	for _, i := range s.order {
		r := s.rules[i]
		switch {
		case s.policy == First && alwaysBefore != "":
			out = append(out, s.finding(Warning, "unreachable", r, alwaysBefore,
				fmt.Sprintf("never evaluated: rule %q before it always matches", alwaysBefore)))
		case s.policy == First && seen[canon[i]] != "":
			out = append(out, s.finding(Warning, "unreachable", r, seen[canon[i]],
				fmt.Sprintf("never decides: its condition is the same as rule %q's, which comes first", seen[canon[i]])))
		case s.policy == Collect && seen[canon[i]] != "":
			out = append(out, s.finding(Info, "duplicate", r, seen[canon[i]],
				fmt.Sprintf("same condition as rule %q: they always match together", seen[canon[i]])))
		}
		if v, ok := always[i]; ok && !v {
			out = append(out, s.finding(Warning, "never", r, "", "never matches: its condition is always false"))
		}
		if seen[canon[i]] == "" {
			seen[canon[i]] = r.Name
		}
		if v, ok := always[i]; ok && v && alwaysBefore == "" {
			alwaysBefore = r.Name
		}
	}
	out = append(out, s.overlaps()...)
	out = append(out, s.conflicts()...)
	slices.SortStableFunc(out, func(a, b Finding) int { return cmp.Compare(a.Line, b.Line) })
	return out
}

// AsErrors turns findings into config.Problems when any is at least min severity (a validate
// run with warnings as errors passes Warning), or nil.
func AsErrors(fs []Finding, minSeverity Severity) error {
	rank := map[Severity]int{Info: 0, Warning: 1, Error: 2}
	var ps config.Problems
	for _, f := range fs {
		if rank[f.Severity] >= rank[minSeverity] && f.Severity != Info {
			ps = append(ps, config.Problem{Path: f.Path, Line: f.Line, Msg: f.Code + ": " + f.Msg})
		}
	}
	if len(ps) == 0 {
		return nil
	}
	return ps
}

func (s *Set) finding(sev Severity, code string, r *Rule, other, msg string) Finding {
	return Finding{Severity: sev, Code: code, Rule: r.Name, Other: other, Path: r.Path, Line: r.line, Msg: msg}
}

// foldedConditions constant-folds every condition: always holds the rules whose condition is a
// constant, canon every condition's canonical text.
func (s *Set) foldedConditions() (always map[int]bool, canon []string) {
	always = map[int]bool{}
	canon = make([]string, len(s.rules))
	env, err := permissiveEnv()
	if err != nil {
		return always, canon
	}
	folder, err := cel.NewConstantFoldingOptimizer()
	if err != nil {
		return always, canon
	}
	opt, err := cel.NewStaticOptimizer(folder)
	if err != nil {
		return always, canon
	}
	for i, r := range s.rules {
		a := r.ast
		if folded, iss := opt.Optimize(env, r.ast); iss == nil || iss.Err() == nil {
			a = folded
		}
		if text, err := cel.AstToString(a); err == nil {
			canon[i] = text
		} else {
			canon[i] = strings.TrimSpace(r.When)
		}
		if e := a.NativeRep().Expr(); e.Kind() == ast.LiteralKind {
			if b, ok := e.AsLiteral().(types.Bool); ok {
				always[i] = bool(b)
			}
		}
	}
	return always, canon
}

// overlaps evaluates every rule on generated inputs and reports, for each pair of rules with
// different actions, the first input on which both match.
func (s *Set) overlaps() []Finding {
	n := len(s.rules)
	type pair struct{ a, b int }
	var pending []pair
	open := make([]bool, n*n) // open[a*n+b]: a pair with different actions, no witness yet
	for i := range n {
		for j := i + 1; j < n; j++ {
			if !s.rules[i].Action.equal(s.rules[j].Action) {
				pending = append(pending, pair{i, j})
				open[i*n+j] = true
			}
		}
	}
	if len(pending) == 0 {
		return nil
	}
	facts := make([]exprFacts, n)
	for i, r := range s.rules {
		facts[i] = factsOf(r.ast)
	}
	smp := newSampler(s, facts, s.rules...)
	witness := map[pair]*Input{}
	var matched []int
	// Only the pairs among the rules a sample matched are looked at: a set of hundreds of rules
	// has tens of thousands of pairs, few of which any one input matches.
	for k := 0; k < LintSamples && len(witness) < len(pending); k++ {
		in := smp.input()
		act := newActivation(in, s.adapter)
		matched = matched[:0]
		for i, r := range s.rules {
			if ok, _ := r.eval(act); ok {
				matched = append(matched, i)
			}
		}
		for x, a := range matched {
			for _, b := range matched[x+1:] {
				if open[a*n+b] {
					open[a*n+b] = false
					witness[pair{a, b}] = in
				}
			}
		}
	}
	// A pair not found yet gets samples of its own, built from its two conditions' constants
	// only: a conjunction of several exact values is rare among every rule's constants.
	var left []pair
	for _, p := range pending {
		if witness[p] == nil {
			left = append(left, p)
		}
	}
	var out []Finding
	perPair := 0
	if len(left) > 0 {
		perPair = min(max(focusedBudget/len(left), 1), LintSamples)
	}
	if perPair > 0 && perPair < focusedFull {
		first := s.rules[0]
		out = append(out, Finding{Severity: Info, Code: "overlap_search", Path: "rules", Line: first.line,
			Msg: fmt.Sprintf("%d pairs of rules with different actions were searched for a shared input with %d generated inputs each (%d for a full search): in a set this large, overlaps may go unreported",
				len(left), perPair, focusedFull)})
	}
	for _, p := range left {
		a, b := s.rules[p.a], s.rules[p.b]
		fs := newSampler(s, facts, a, b)
		for range perPair {
			in := fs.input()
			act := newActivation(in, s.adapter)
			if ok, _ := a.eval(act); !ok {
				continue
			}
			if ok, _ := b.eval(act); ok {
				witness[p] = in
				break
			}
		}
	}
	for _, p := range pending {
		in := witness[p]
		if in == nil {
			continue
		}
		// Report on the rule evaluated later, naming the one before it.
		first, second := s.rules[p.a], s.rules[p.b]
		if s.rank(p.b) < s.rank(p.a) {
			first, second = second, first
		}
		sev, what := Info, "both act, on different channels"
		if ch, shared := sharedChannel(first.Action.Channels, second.Action.Channels); shared {
			sev, what = Warning, "both act on channel "+ch
			if first.Priority != second.Priority {
				sev, what = Info, fmt.Sprintf("%q wins channel %s by priority", first.Name, ch)
			}
		}
		if s.policy == First {
			sev, what = Info, fmt.Sprintf("%q wins there", first.Name)
		}
		w, _ := json.Marshal(in)
		f := s.finding(sev, "overlap", second, first.Name,
			fmt.Sprintf("overlaps rule %q with a different action (%s), e.g. for %s", first.Name, what, w))
		f.Witness = in
		out = append(out, f)
	}
	return out
}

// rank is a rule's place in evaluation order.
func (s *Set) rank(i int) int { return slices.Index(s.order, i) }

// conflicts reports a promote and a hold of the same channel at the same priority.
func (s *Set) conflicts() []Finding {
	var out []Finding
	for _, i := range s.order {
		for _, j := range s.order {
			a, b := s.rules[i], s.rules[j]
			if a.Action.Kind != Promote || b.Action.Kind != Hold || a.Priority != b.Priority {
				continue
			}
			if ch, ok := sharedChannel(a.Action.Channels, b.Action.Channels); ok {
				later, earlier := b, a
				if s.rank(i) > s.rank(j) {
					later, earlier = a, b
				}
				out = append(out, s.finding(Warning, "conflict", later, earlier.Name,
					fmt.Sprintf("promote (rule %q) and hold (rule %q) of channel %s at the same priority %d: give the one that must win a higher priority",
						a.Name, b.Name, ch, a.Priority)))
			}
		}
	}
	return out
}

func sharedChannel(a, b []string) (string, bool) {
	for _, x := range a {
		for _, y := range b {
			switch {
			case x == y:
				return x, true
			case x == AllChannels:
				return y, true
			case y == AllChannels:
				return x, true
			}
		}
	}
	return "", false
}

// sampler generates inputs for the overlap lint. Random values alone rarely land on the
// boundaries rules test, so it builds values from the conditions' own constants: every number
// a condition mentions, just below, at and just above it, and every string as an id, a state or
// a channel; plus typical values (0, small and large counts, +Inf days of cover, the usual line
// states). Features a condition names are present, absent, stale, historical or partial in turn.
// Limits: a condition that needs a computed relation (a + b > c with no constant near the
// answer), a long list, or a value no constant suggests may have overlaps this does not find.
type sampler struct {
	rng      *rand.Rand
	numbers  []float64
	strs     []string
	features []string
	base     time.Time
}

// newSampler builds a sampler from the constants of rules (facts holds each rule's, by index),
// seeded from the set's version (and the rules, so that each pair's focused samples differ).
func newSampler(s *Set, facts []exprFacts, rules ...*Rule) *sampler {
	var seed [2]uint64
	for i := range 16 {
		seed[i/8] = seed[i/8]<<8 | uint64(s.version[i])
	}
	for _, r := range rules {
		seed[1] = seed[1]*31 + uint64(r.Index)
	}
	smp := &sampler{rng: rand.New(rand.NewPCG(seed[0], seed[1])),
		numbers: []float64{0, 0.5, 1, 2, 10, 100, 1000},
		base:    time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC)}
	feats := map[string]bool{}
	for _, r := range rules {
		f := facts[r.Index]
		for _, x := range f.numbers {
			smp.numbers = append(smp.numbers, x-1, x-0.01, x, x+0.01, x+1)
		}
		smp.strs = append(smp.strs, f.strings...)
		for _, fr := range f.features {
			if !feats[fr.name] {
				feats[fr.name] = true
				smp.features = append(smp.features, fr.name)
			}
		}
	}
	if len(smp.strs) == 0 || len(rules) > 2 {
		// Typical ids and states: the conditions name none, or the sample serves every rule.
		smp.strs = append(smp.strs, "running", "idle", "down", "changeover", "web", "retail")
	}
	return smp
}

func (p *sampler) num() float64 {
	if p.rng.IntN(8) == 0 {
		return p.rng.Float64() * 2000
	}
	return p.numbers[p.rng.IntN(len(p.numbers))]
}

func (p *sampler) str() string { return p.strs[p.rng.IntN(len(p.strs))] }

func (p *sampler) strList() []string {
	out := make([]string, p.rng.IntN(4))
	for i := range out {
		out[i] = p.str()
	}
	return out
}

func (p *sampler) input() *Input {
	in := &Input{
		SKU:  SKU{ID: p.str(), Name: p.str()},
		Site: p.str(),
		Inventory: Inventory{OnHand: p.num(), Position: p.num(), DaysOfCover: p.num(), DailyRate: p.num(),
			Produced: p.num(), Sold: p.num()},
		Neighbours: Neighbours{Substitutes: p.strList(), Complements: p.strList(), Channels: p.strList()},
		Now:        p.base.Add(time.Duration(p.rng.IntN(7*24*60)) * time.Minute),
		Features:   map[string]Feature{},
	}
	if p.rng.IntN(6) == 0 {
		in.Inventory.DaysOfCover = math.Inf(1)
	}
	for range p.rng.IntN(4) {
		in.Lines = append(in.Lines, Line{ID: p.str(), Availability: p.num(), State: p.str(), UnitsPerHour: p.num(),
			Stale: p.rng.IntN(5) == 0})
	}
	for _, name := range p.features {
		if p.rng.IntN(8) == 0 {
			continue
		}
		in.Features[name] = Feature{Value: p.num(), Stale: p.rng.IntN(6) == 0, Historical: p.rng.IntN(8) == 0,
			Partial: p.rng.IntN(8) == 0, AgeS: p.rng.Float64() * 300}
	}
	return in
}
