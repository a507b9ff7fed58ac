package backtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/decide"
	"github.com/gemba-io/gemba/hub/decide/experiment"
	"github.com/gemba-io/gemba/hub/decide/guard"
	"github.com/gemba-io/gemba/hub/decide/rules"
	"github.com/gemba-io/gemba/hub/decide/versions"
	"github.com/gemba-io/gemba/hub/state/features"
)

// replay drives the state through the merged inputs and asks for evaluations as the live engine
// would: the units an input is an input of once it is applied (at its event time), and every
// unit every decide.timer of replay time from From.
type replay struct {
	o        Options
	clk      *clock
	st       *state
	ev       *decide.Evaluator
	live     *versions.Live
	decided  idsUntil // decision ids already judged (the engine's done set)
	deferred idsUntil // decision ids deferred for their inputs
	// undeliverable: decision ids for a channel act does not deliver on (not decided)
	undeliverable idsUntil
	// waitUntil: a rule × SKU × site × channel with a request awaiting approval is not decided
	// again until it expires (none is answered), as the engine's waiting. (A held-out unit is
	// decided once per period by its id: decide.HoldoutPeriod.)
	waitUntil map[string]time.Time
	// featFrom is when the features' read starts (From less the longest max_age and the reorder
	// window, stream time): a record stored earlier is read only for its production.
	featFrom time.Time
	// seen is the range of event times of every input read (in the span or not); inSpan counts
	// those applied in [From, To).
	seen   [2]time.Time
	inSpan int
	sum    Summary

	// evaluate evaluates units at now (the replay clock): the guard in a backtest; the live
	// engine in the equivalence test.
	evaluate func(ctx context.Context, units []decide.Unit, now time.Time, all bool) error

	pending map[decide.Unit]struct{}
	changed []fkey
	// inGraph: the graph's units; others are units the inventory marked (a SKU stocked where the
	// graph has no line of it), evaluated on every tick from then on as the engine's seen units,
	// in a fixed order.
	inGraph map[decide.Unit]bool
	others  []decide.Unit
}

// idsUntil are decision ids, each with the end of the time bucket (or holdout period) it was
// derived from: an evaluation derives it again only before then.
type idsUntil map[string]time.Time

func (s idsUntil) has(id string) bool {
	_, ok := s[id]
	return ok
}

// forget drops the ids that can no longer come again at now (the replay clock never goes back):
// a long span holds only its current buckets' ids.
func (r *replay) forget(now time.Time) {
	for _, s := range []idsUntil{r.decided, r.deferred, r.undeliverable} {
		for id, until := range s {
			if !now.Before(until) {
				delete(s, id)
			}
		}
	}
}

// units is every unit a tick evaluates: the graph's, then those marked that it does not list.
func (r *replay) units() []decide.Unit {
	return append(r.ev.Units(), r.others...)
}

// note remembers a marked unit the graph does not list (before From too: the engine is told of
// every stored position).
func (r *replay) note(u decide.Unit) {
	if r.inGraph == nil {
		r.inGraph = map[decide.Unit]bool{}
		for _, g := range r.ev.Units() {
			r.inGraph[g] = true
		}
	}
	if r.inGraph[u] {
		return
	}
	r.inGraph[u] = true
	i, _ := slices.BinarySearchFunc(r.others, u, cmpUnit)
	r.others = slices.Insert(r.others, i, u)
}

func cmpUnit(a, b decide.Unit) int {
	if c := strings.Compare(a.SKU, b.SKU); c != 0 {
		return c
	}
	return strings.Compare(a.Site, b.Site)
}

// run reads both streams and replays them; it returns once both are read (or on error).
func (r *replay) run(ctx context.Context, js jetstream.JetStream, log *slog.Logger) error {
	cfg := r.o.Config
	var longest time.Duration
	for _, d := range cfg.Features {
		longest = max(longest, d.MaxAge)
	}
	reorder := r.o.reorder()
	stop := r.o.To.Add(reorder)
	bad := func(name string) func(string, uint64, error) {
		warned := map[string]bool{}
		return func(subj string, seq uint64, err error) {
			if !warned[subj] && len(warned) < 1000 {
				warned[subj] = true
				log.Warn("malformed message skipped (the hub terminates it too; logged once per subject)",
					"stream", name, "subject", subj, "stream_seq", seq, "err", err)
			}
		}
	}
	// The features are read from what the hub stored since From less the longest max_age; the
	// production (ingest.production) since the last count before From of every SKU × site, for
	// the positions at From, from earlier when that count is older.
	r.featFrom = r.o.From.Add(-longest - reorder)
	agentsFrom := r.featFrom
	var count time.Time
	if len(cfg.Ingest.Production) > 0 {
		var err error
		if count, err = r.earliestLastCount(ctx, js); err != nil {
			return fmt.Errorf("backtest: %w", err)
		}
		if !count.IsZero() && count.Add(-reorder).Before(agentsFrom) {
			agentsFrom = count.Add(-reorder)
		}
	}
	srcs := []*source{
		{name: "agents", stream: cfg.Ingest.Stream, filter: []string{cfg.NATS.SubjectPrefix + ".*.*.features"},
			start: agentsFrom, batch: 64, decode: featureDecoder(cfg.NATS.SubjectPrefix, 0), badLog: bad(cfg.Ingest.Stream),
			ahead: r.featureFuture()},
		// The COMMERCE stream holds only commerce subjects: all of it is read.
		{name: "commerce", stream: cfg.Commerce.Stream,
			start: r.o.From.Add(-r.o.warmup()), batch: 512, decode: commerceDecoder(1), badLog: bad(cfg.Commerce.Stream),
			ahead: cfg.Inventory.MaxFuture},
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, len(srcs))
	chans := make([]<-chan []item, len(srcs))
	for i, s := range srcs {
		ch := make(chan []item, 4)
		chans[i] = ch
		wg.Go(func() { errs[i] = s.run(rctx, js, func() time.Time { return stop }, ch) })
	}
	err := r.loop(rctx, newMerger(reorder, chans...))
	cancel()
	wg.Wait()
	if a := srcs[0]; agentsFrom.Before(r.featFrom) && !a.gone.IsZero() {
		// Its retention removed production the positions at From count (the hub applied it as it
		// arrived): they are lower than the hub's.
		w := fmt.Sprintf("the agents stream %s no longer holds what it stored before %s (its retention): the stock positions at %s lack the production between the inventory count at %s and then",
			a.stream, a.gone.Format(time.RFC3339), r.o.From.Format(time.RFC3339), count.Format(time.RFC3339))
		log.Warn(w)
		r.sum.Warnings = append(r.sum.Warnings, w)
	}
	for _, s := range srcs {
		r.sum.Malformed += s.bad
		if s.gone.IsZero() || (!s.oldest.IsZero() && !s.oldest.After(r.o.From)) {
			continue
		}
		// Its retention removed what the replay's start needs: say so, not a replay that reads as
		// what the rules would have decided with what the hub had.
		held := "it holds none from then on"
		if !s.oldest.IsZero() {
			held = "its oldest input read is at " + s.oldest.Format(time.RFC3339)
		}
		w := fmt.Sprintf("the %s stream %s no longer holds what it stored before %s (its retention): %s; the replay from %s lacks the inputs the hub had before that",
			s.name, s.stream, s.gone.Format(time.RFC3339), held, r.o.From.Format(time.RFC3339))
		log.Warn(w)
		r.sum.Warnings = append(r.sum.Warnings, w)
	}
	r.sum.Refused = r.st.refused
	if err != nil {
		return err
	}
	for _, e := range errs {
		if e != nil && !errors.Is(e, context.Canceled) {
			return fmt.Errorf("backtest: %w", e)
		}
	}
	return r.beyond()
}

// featureFuture is how far ahead of the hub's clock the feature store takes a window's end
// (ingest.max_future).
func (r *replay) featureFuture() time.Duration {
	if d := r.o.Config.Ingest.MaxFuture; d > 0 {
		return d
	}
	return features.DefaultMaxFuture
}

// beyond refuses a span the streams hold nothing of: entirely after their latest input or before
// their oldest (a replay of it would decide on no data at all, or on what preceded it only). A
// gap inside what they hold (an outage) replays as the engine would have lived it.
func (r *replay) beyond() error {
	if r.inSpan > 0 {
		return nil
	}
	span := fmt.Sprintf("no input in the span %s to %s", r.o.From.Format(time.RFC3339), r.o.To.Format(time.RFC3339))
	switch {
	case r.seen[1].IsZero():
		return fmt.Errorf("backtest: %s: the agents' and COMMERCE streams hold none from %s on", span, r.o.From.Add(-r.o.warmup()).Format(time.RFC3339))
	case r.seen[1].Before(r.o.From):
		return fmt.Errorf("backtest: %s: the latest input the streams hold is at %s", span, r.seen[1].Format(time.RFC3339))
	case !r.seen[0].Before(r.o.To):
		return fmt.Errorf("backtest: %s: the oldest input the streams hold is at %s", span, r.seen[0].Format(time.RFC3339))
	}
	return nil
}

// loop applies the merged inputs in event-time order, evaluating as it goes.
func (r *replay) loop(ctx context.Context, m *merger) error {
	r.pending = map[decide.Unit]struct{}{}
	timer := r.o.Config.Decide.Timer
	tick := r.o.From
	for {
		it, ok, err := m.next(ctx)
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		if it.future {
			// Dated beyond max_future of when it was stored: the hub refuses it (apply counts it),
			// and its date moves no clock.
			if err := r.apply(ctx, &it); err != nil {
				return err
			}
			continue
		}
		if r.seen[0].IsZero() || it.t.Before(r.seen[0]) {
			r.seen[0] = it.t
		}
		if it.t.After(r.seen[1]) {
			r.seen[1] = it.t
		}
		if !it.t.Before(r.o.From) && it.t.Before(r.o.To) {
			r.inSpan++
		}
		if !it.t.Before(r.o.To) {
			continue // after the span; the sources stop soon after
		}
		// Ticks due by this input's time see the state as it was before it (the first, at From, is
		// the first evaluation: what the engine does when it gets its rules).
		for !tick.After(it.t) && tick.Before(r.o.To) {
			if err := r.flush(ctx); err != nil {
				return err
			}
			r.clk.advance(tick)
			r.forget(tick)
			if err := r.evaluate(ctx, r.units(), tick, true); err != nil {
				return err
			}
			tick = tick.Add(timer)
		}
		if it.t.After(r.clk.Now()) {
			// A later time: what the inputs of the earlier one changed is evaluated at that time.
			if err := r.flush(ctx); err != nil {
				return err
			}
			r.clk.advance(it.t)
		}
		if err := r.apply(ctx, &it); err != nil {
			return err
		}
	}
	if err := r.flush(ctx); err != nil {
		return err
	}
	for ; tick.Before(r.o.To); tick = tick.Add(timer) {
		r.clk.advance(tick)
		if err := r.evaluate(ctx, r.units(), tick, true); err != nil {
			return err
		}
	}
	return nil
}

// apply folds one input into the state and marks the units it is an input of.
func (r *replay) apply(ctx context.Context, it *item) error {
	if !it.future { // a refused date is no input's time
		if r.sum.First.IsZero() || it.t.Before(r.sum.First) {
			r.sum.First = it.t
		}
		if it.t.After(r.sum.Last) {
			r.sum.Last = it.t
		}
	}
	mark := func(u decide.Unit) {
		r.pending[u] = struct{}{}
		r.note(u)
	}
	switch it.kind {
	case kindFeature:
		// Stored before the features' read (to count the production since an older inventory
		// count): only its production is applied.
		early := it.recv.Before(r.featFrom)
		if !early {
			r.sum.Features++
		}
		// The hub reads a record when it is stored (recv) and refuses one ending further ahead of
		// its clock than max_future: the feature store and the inventory, each with its own bound.
		switch {
		case early:
		case it.beyond(r.featureFuture()):
			r.sum.Future++
		default:
			r.changed = r.st.applyFeature(it.h, it.seq, it.f, r.changed[:0])
			for _, k := range r.changed {
				for _, u := range r.ev.Affected(k.name, k.key) {
					mark(u)
				}
			}
		}
		if mv, ok := r.st.production(it.h, it.f); ok && it.beyond(r.o.Config.Inventory.MaxFuture) {
			r.st.refused++
		} else if ok {
			w, err := r.st.move(ctx, mv)
			if err != nil {
				return fmt.Errorf("backtest: production %s: %w", mv.ID, err)
			}
			if w {
				mark(decide.Unit{SKU: mv.SKU, Site: mv.Site})
			}
		}
	case kindSale:
		r.sum.Sales++
		if it.beyond(r.o.Config.Inventory.MaxFuture) {
			r.st.refused++ // the inventory's max_future, against the hub's clock when it read it
			return nil
		}
		w, err := r.st.sale(ctx, it.sale)
		if err != nil {
			return fmt.Errorf("backtest: sale %s: %w", it.sale.MsgID(), err)
		}
		if w {
			mark(decide.Unit{SKU: it.sale.SKU, Site: it.sale.Site})
		}
	case kindSnapshot:
		r.sum.Snapshots++
		if it.beyond(r.o.Config.Inventory.MaxFuture) {
			r.st.refused++
			return nil
		}
		w, err := r.st.snapshot(ctx, it.snap)
		if err != nil {
			return fmt.Errorf("backtest: inventory count %s: %w", it.snap.MsgID(), err)
		}
		if w {
			mark(decide.Unit{SKU: it.snap.SKU, Site: it.snap.Site})
		}
	}
	return nil
}

// flush evaluates the marked units at the replay clock; before From they only built the state.
func (r *replay) flush(ctx context.Context) error {
	if len(r.pending) == 0 {
		return nil
	}
	now := r.clk.Now()
	if now.Before(r.o.From) {
		clear(r.pending)
		return nil
	}
	us := make([]decide.Unit, 0, len(r.pending))
	for u := range r.pending {
		us = append(us, u)
	}
	clear(r.pending)
	// A fixed order: the same history replays the same way.
	slices.SortFunc(us, cmpUnit)
	return r.evaluate(ctx, us, now, false)
}

// judge is the backtest's evaluation: each unit through the evaluator, each new decision id
// through the real guard (on the private JetStream, at the replay clock), nothing acted on.
func (r *replay) judge(g *guard.Guard) func(context.Context, []decide.Unit, time.Time, bool) error {
	bucket := r.o.Config.Decide.Bucket
	byName := map[string]rules.Rule{}
	for _, rule := range r.o.Rules.Rules() {
		byName[rule.Name] = rule
	}
	if r.waitUntil == nil {
		r.waitUntil = map[string]time.Time{}
	}
	if r.undeliverable == nil {
		r.undeliverable = idsUntil{}
	}
	return func(ctx context.Context, us []decide.Unit, now time.Time, _ bool) error {
		for _, u := range us {
			ev := r.ev.Evaluate(r.live, u, now, bucket)
			r.sum.Evaluations++
			for i, p := range ev.Proposals {
				held, err := heldOut(byName[p.Rule], p)
				if err != nil {
					return fmt.Errorf("backtest: %w", err)
				}
				// The id comes again only until the end of its bucket (or holdout period).
				until := guard.TimeBucket(now, bucket).Add(bucket)
				if held {
					// As the engine: a held-out unit's id is the period's of its promotion's
					// duration, decided (recorded held out) once per period.
					dur := ev.Actions[i].Duration
					p.ID = guard.DecisionID(p.RuleVersion, p.Rule, p.SKU, p.Channel, decide.HoldoutPeriod(now, dur))
					until = decide.HoldoutPeriod(now, dur).Add(dur)
				}
				if r.decided.has(p.ID) {
					continue
				}
				wkey := strings.Join([]string{p.Rule, p.SKU, p.Site, p.Channel}, "\x00")
				if until, ok := r.waitUntil[wkey]; ok && now.Before(until) {
					continue // as the engine: one request at a time; a holdout recorded once
				}
				if act := r.o.Config.Act; act != nil {
					if _, ok := act.Channels[p.Channel]; !ok {
						// As the engine: a channel act does not deliver on is not decided (it would
						// use up caps, then fail in the outbox for good).
						if !r.undeliverable.has(p.ID) {
							r.undeliverable[p.ID] = until
							r.sum.Undeliverable++
						}
						continue
					}
				}
				if a := guard.InputsAssessment(&p); !a.Passed {
					// As the engine: deferred, not judged; decided once its inputs can be used.
					if !r.deferred.has(p.ID) {
						r.deferred[p.ID] = until
						r.sum.Deferred++
					}
					continue
				}
				d := Decision{ID: p.ID, Time: now, SKU: p.SKU, Site: p.Site, Channel: p.Channel, Rule: p.Rule,
					Version: p.RuleVersion, Action: ev.Actions[i]}
				d.Action.Channels = []string{p.Channel}
				var v guard.Verdict
				var ie *guard.InputError
				if held {
					// As the engine: in the rule's holdout, recorded and never judged nor acted
					// on (no cap or cooldown used up).
					d.Outcome = audit.OutcomeHeldOut
				} else {
					v, err = g.Check(ctx, p)
				}
				switch {
				case held:
				case errors.As(err, &ie):
					// As the engine: refused (it logs it with its rule and SKU; the summary lists it),
					// never recorded, acted on nor counted as a decision (nor a suppression); not
					// asked again in its bucket.
					r.decided[p.ID] = until
					r.sum.Invalid++
					if len(r.sum.InvalidProposals) < MaxInvalidListed {
						r.sum.InvalidProposals = append(r.sum.InvalidProposals, InvalidProposal{ID: p.ID, Time: now,
							SKU: p.SKU, Site: p.Site, Channel: p.Channel, Rule: p.Rule, Error: ie.Error()})
					}
					continue
				case err != nil:
					return fmt.Errorf("backtest: guard: %w", err)
				default:
					// As the engine records it (fired, held, suppressed, awaiting_approval).
					d.Outcome, d.Guardrail, d.Reason = decide.Outcome(d.Action.Kind, v), v.Guardrail, v.Reason
					if v.Outcome == guard.NeedsApproval {
						r.waitUntil[wkey] = now.Add(r.o.Config.Guard.Approval.TTL)
					}
				}
				r.decided[p.ID] = until
				r.sum.Decisions++
				r.sum.ByOutcome[d.Outcome]++
				if d.Outcome == audit.OutcomeSuppressed {
					r.sum.ByGuardrail[d.Guardrail]++
				}
				r.sum.ByRule[d.Rule]++
				r.sum.ByChannel[d.Channel]++
				if r.o.Out != nil {
					r.o.Out(d)
				}
			}
		}
		return nil
	}
}

// heldOut reports whether proposal p of rule falls in the rule's holdout, as the live engine draws it.
func heldOut(rule rules.Rule, p guard.Proposal) (bool, error) {
	x := rule.Experiment
	if x == nil || x.Holdout <= 0 || p.Kind != guard.Promote {
		return false, nil
	}
	a, err := experiment.Assign(x.ID, p.SKU, p.Channel, x.Holdout)
	if err != nil {
		return false, fmt.Errorf("experiment %s: %w", x.ID, err)
	}
	return a.Group == experiment.Held, nil
}
