package rules

import (
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"cel.dev/cel-go/common/types"
)

// ErrStaleFeature is wrapped by the evaluation error of a condition that read the value of a
// stale feature.
var ErrStaleFeature = errors.New("feature is stale")

// ErrNoInput is the error of an evaluation without an input.
var ErrNoInput = errors.New("no input")

// Result is what a rule set decided for one input.
type Result struct {
	Version string    `json:"version"`
	Policy  HitPolicy `json:"policy"`
	// Matches are the deciding rules in evaluation order: at most one under first, every
	// matching rule under collect.
	Matches []Match `json:"matches,omitempty"`
	// Trace is every rule evaluated, in order (under first, evaluation stops at the match).
	Trace []Step `json:"trace"`
	// Errors counts the rules whose condition failed to evaluate (see Step.Err).
	Errors int `json:"errors,omitempty"`
}

// Match is a matching rule and its action, with channels resolved for the input.
type Match struct {
	Rule     string `json:"rule"`
	Index    int    `json:"index"`
	Priority int    `json:"priority,omitempty"`
	Action   Action `json:"action"`
	// ErroredBefore names the rules evaluated before this one whose condition failed. Under
	// first any of them might have matched and decided instead; the caller decides whether to
	// act (the guardrails do not act on it).
	ErroredBefore []string `json:"errored_before,omitempty"`
}

// Step is one rule's evaluation.
type Step struct {
	Rule    string `json:"rule"`
	Matched bool   `json:"matched"`
	// Err is why the condition could not be evaluated: a missing feature ("no such key"), a
	// stale feature's value, the cost limit. A failed condition does not match.
	Err string `json:"error,omitempty"`
}

// Evaluate runs the rules on in, under the set's hit policy. It never panics: a condition that
// fails (or a bug in an extension) is a Step with Err, and does not match.
func (s *Set) Evaluate(in *Input) Result {
	res := Result{Version: s.version, Policy: s.policy, Trace: make([]Step, 0, len(s.order))}
	if in == nil {
		res.Trace = append(res.Trace, Step{Err: ErrNoInput.Error()})
		res.Errors = 1
		return res
	}
	act := newActivation(in, s.adapter)
	var errored []string
	for _, i := range s.order {
		r := s.rules[i]
		ok, err := r.eval(act)
		st := Step{Rule: r.Name, Matched: ok}
		if err != nil {
			st.Err = err.Error()
			res.Errors++
			errored = append(errored, r.Name)
		}
		res.Trace = append(res.Trace, st)
		if !ok {
			continue
		}
		if res.Matches == nil && s.policy != First {
			res.Matches = make([]Match, 0, min(4, len(s.order))) // not 1, 2, 4 as append would
		}
		res.Matches = append(res.Matches, Match{Rule: r.Name, Index: r.Index, Priority: r.Priority,
			Action: r.Action.resolve(in), ErroredBefore: slices.Clone(errored)})
		if s.policy == First {
			break
		}
	}
	return res
}

// eval evaluates the condition; an error is never a match.
func (r *Rule) eval(act *activation) (matched bool, err error) {
	defer func() {
		if p := recover(); p != nil {
			matched, err = false, fmt.Errorf("internal error evaluating the condition: %v", p)
		}
	}()
	prog := r.prog
	if r.fast != nil && act.bounded {
		prog = r.fast
	}
	out, _, err := prog.Eval(act)
	if err != nil {
		return false, err
	}
	switch v := out.(type) {
	case types.Bool:
		return bool(v), nil
	case *types.Err:
		return false, v
	}
	return false, fmt.Errorf("the condition gave %s, not true or false", out.Type().TypeName())
}

// resolve replaces AllChannels with the channels the input's SKU is sold via.
func (a Action) resolve(in *Input) Action {
	if len(a.Channels) == 1 && a.Channels[0] == AllChannels {
		a.Channels = slices.Clone(in.Neighbours.Channels)
	}
	return a
}

// Decision is what a result asks for on one channel.
type Decision struct {
	Channel string `json:"channel"`
	Rule    string `json:"rule"`
	Action  Action `json:"action"` // Channels holds the one channel
}

// PerChannel resolves the matches into one action per channel: the first match in evaluation
// order (highest priority first) that names the channel wins, except that at equal priority a
// hold wins over a promote, since promoting what cannot be supplied is the costlier mistake.
// Channels come out sorted.
func (r Result) PerChannel() []Decision {
	best := map[string]int{} // channel -> index into r.Matches
	for i, m := range r.Matches {
		for _, ch := range m.Action.Channels {
			j, seen := best[ch]
			if !seen || (r.Matches[j].Priority == m.Priority && r.Matches[j].Action.Kind == Promote && m.Action.Kind == Hold) {
				best[ch] = i
			}
		}
	}
	out := make([]Decision, 0, len(best))
	for ch, i := range best {
		a := r.Matches[i].Action
		a.Channels = []string{ch}
		out = append(out, Decision{Channel: ch, Rule: r.Matches[i].Rule, Action: a})
	}
	slices.SortFunc(out, func(a, b Decision) int { return strings.Compare(a.Channel, b.Channel) })
	return out
}

// EvaluateAll evaluates s on every input with up to workers goroutines (GOMAXPROCS when 0), for a
// re-evaluation of every SKU after a version change or a backtest. Results are in input order.
func EvaluateAll(s *Set, ins []*Input, workers int) []Result {
	out := make([]Result, len(ins))
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	workers = min(workers, len(ins))
	var wg sync.WaitGroup
	var next atomic.Int64
	const chunk = 64
	for range workers {
		wg.Go(func() {
			for {
				lo := int(next.Add(chunk)) - chunk
				if lo >= len(ins) {
					return
				}
				for i := lo; i < min(lo+chunk, len(ins)); i++ {
					out[i] = s.Evaluate(ins[i])
				}
			}
		})
	}
	wg.Wait()
	return out
}
