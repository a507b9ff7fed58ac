package decide

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/gemba-io/gemba/hub/act"
	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/decide/experiment"
	"github.com/gemba-io/gemba/hub/decide/guard"
	"github.com/gemba-io/gemba/hub/decide/rules"
)

// Outcome names a verdict of the guard on an action of kind as the decision log records it
// (audit.OutcomeFired, OutcomeHeld, ...); the backtest reports its decisions with it.
func Outcome(kind rules.ActionKind, v guard.Verdict) string {
	switch v.Outcome {
	case guard.Allow:
		if kind == rules.Hold {
			return audit.OutcomeHeld
		}
		return audit.OutcomeFired
	case guard.NeedsApproval:
		return audit.OutcomeAwaitingApproval
	case guard.Rejected:
		return audit.OutcomeRejected
	case guard.Expired:
		return audit.OutcomeExpired
	case guard.Released:
		return audit.OutcomeReleased
	}
	return audit.OutcomeSuppressed
}

// decide takes one decision of the acting version through the guard (which claims its id once for
// every replica), the audit (fenced: not recorded, and so never acted on, once a rules change has
// landed since the version was loaded) and the outbox. Every step is idempotent on the decision id,
// so a replica that crashed between two of them is completed by the next evaluation of the same
// SKU in the same time bucket, on any replica.
func (e *Engine) decide(ctx context.Context, ls *liveSets, set *rules.Set, mode string, res *rules.Result,
	d rules.Decision, ex *explained, bucket, now time.Time) error {
	rule := ls.byName[set][d.Rule]
	id := guard.DecisionID(set.Version(), d.Rule, ex.in.SKU.ID, d.Channel, bucket)
	if hid, ok := holdoutID(set.Version(), rule, d, ex.in.SKU.ID, now); ok {
		id = hid // one decision per period of the promotion's duration, on every replica
	}
	if e.done.has(id) {
		return nil
	}
	wkey := waitKey(set.Version(), d.Rule, ex.in.SKU.ID, ex.in.Site, d.Channel)
	if e.waiting(wkey, id) {
		// The same rule already asks a person about this SKU on this channel: one request is
		// enough, a new one per time bucket would bury the queue. A request of this very id goes
		// on: the guard replays it, and its decided record is written should the replica that
		// queued it have stopped first — without it nobody can answer it.
		return nil
	}
	if !e.deps.Outbox.Delivers(d.Channel) {
		// Claimed, it would reserve caps and be recorded fired, then fail in the outbox for good.
		e.Metrics.Undeliverable.Add(1)
		if _, logged := e.undeliverable.LoadOrStore(set.Version()+"\x00"+d.Rule+"\x00"+d.Channel, true); !logged {
			e.log.Error("rule decides for a channel act does not deliver on: not decided (add the channel to act.channels, or change the rule or the graph)",
				"rule", d.Rule, "version", set.Version(), "channel", d.Channel, "sku", ex.in.SKU.ID)
		}
		e.done.add(id)
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, e.cfg.OpTimeout)
	defer cancel()
	p := proposal(set, res, d, rule, ex, bucket, now, requester(ls.Change, mode))
	if a := guard.InputsAssessment(&p); !a.Passed {
		// Not decided on inputs it cannot use, and not claimed either: once they can be used,
		// the decision is made, in this bucket. Recorded once per id here (the log dedups across
		// replicas on id and event). Before the experiment: a unit is not held out (nor an arm
		// drawn) on inputs a treated unit could not act on.
		v := guard.Verdict{Guardrail: guard.GInputs, Reason: a.Detail, Assessments: []guard.Assessment{a}}
		return e.deferDecision(cctx, ls, set, mode, res, d, rule, ex, id, v, nil, now)
	}
	xs, err := e.experiment(cctx, rule, d, ex, id)
	if err != nil {
		return err
	}
	switch {
	case xs.heldOut:
		return e.heldOut(cctx, ls, set, mode, res, d, rule, ex, id, xs, now)
	case xs.noArm != nil:
		// Deferred, not decided: nothing is claimed, so a replica (or this one later in the
		// bucket) that finds an arm on other stock decides the id, and its decided record stands
		// for the decision on the log.
		v := guard.Verdict{Guardrail: GuardExperimentCover, Reason: xs.noArm.Error()}
		return e.deferDecision(cctx, ls, set, mode, res, d, rule, ex, id, v, xs.ref, now)
	}
	d.Action.Discount = xs.discount // the bandit's arm, or the rule's own
	if d.Action.Kind == rules.Promote {
		p.Discount = d.Action.Discount // all the experiment changes of the proposal
	}
	v, err := e.deps.Guard.Check(cctx, p)
	if err != nil {
		var ie *guard.InputError
		if errors.As(err, &ie) {
			// The proposal itself is wrong (a rule asked for what no guardrail can judge): retrying
			// cannot help. Said once per decision.
			e.log.Error("decision refused by the guard", "decision", id, "rule", d.Rule, "sku", p.SKU, "channel", p.Channel, "err", err)
			e.done.add(id)
			return nil
		}
		return fmt.Errorf("guard: %w", err)
	}
	if v.Replayed && v.Judged != nil {
		// Another call decided this id first: act on what the guard judged then (a bandit may draw
		// another arm now that its posterior moved), never on this call's proposal.
		p = *v.Judged
		d.Action.Discount = p.Discount
		if b := xs.bandit(); b != nil && b.Discount != p.Discount {
			// The arm that runs is the judged one: the outcome measured is credited to the
			// choice's discount, so the record must name it.
			b.Discount, b.Reason = p.Discount, experiment.ReasonReplayed
		}
	}
	killed := v.Outcome == guard.Suppress && v.Guardrail == guard.GKillSwitch
	killedKey := id + ":" + strconv.Itoa(v.Round)
	if killed && v.Replayed && e.killed.has(killedKey) {
		// Recorded here already; checked again only to see the switch reset. Recorded again, each
		// evaluation of the unit while the switch stays thrown would re-publish it (stored again
		// once the log's duplicate window has passed).
		return nil
	}
	rec := e.record(ls, set, mode, res, d, rule, ex, now)
	rec.DecisionID, rec.Event, rec.Outcome, rec.Verdict = id, audit.EventDecided, Outcome(d.Action.Kind, v), &v
	rec.Experiment = xs.ref
	// Fenced: what an allow reserved stays reserved (never more promotions than the caps, only
	// possibly fewer); see docs/hub-architecture.md.
	if stored, err := e.publish(cctx, ls, ex, rec); !stored {
		return err
	}
	if v.Acts() {
		if _, err := e.deps.Outbox.Enqueue(cctx, Action(p, d.Action, v)); err != nil {
			return fmt.Errorf("outbox: %w", err)
		}
	}
	if v.Outcome == guard.NeedsApproval {
		e.wait(wkey, id, time.Time{})
	}
	if !v.Replayed {
		e.countDecision(v)
	}
	if killed {
		// Not final: once the switch is reset, the guard decides the id again at its next Check,
		// which the next evaluation of the unit in this bucket makes (not remembered as done).
		e.killed.add(killedKey)
		return nil
	}
	e.done.add(id)
	return nil
}

// countDecision counts a verdict this replica's Check decided (not a replayed one).
func (e *Engine) countDecision(v guard.Verdict) {
	e.Metrics.Decisions.Add(1)
	switch v.Outcome {
	case guard.Allow:
		e.Metrics.Acted.Add(1)
	case guard.NeedsApproval:
		e.Metrics.Queued.Add(1)
	default:
		e.Metrics.Suppressed.Add(1)
	}
}

// publish records rec under the fence of the rules it was decided under. stored is false when it
// was not: err says why, or is nil when a rules change landed since (fenced): then the decision is
// never recorded nor acted on, and its SKU is evaluated again under the new rules.
func (e *Engine) publish(ctx context.Context, ls *liveSets, ex *explained, rec audit.Record) (stored bool, err error) {
	if _, err := e.deps.Audit.Publish(ctx, rec, ls.Change.Seq); err != nil {
		if errors.Is(err, audit.ErrFenced) {
			e.Metrics.Fenced.Add(1)
			// The new rules re-evaluate every unit when they load (SetLive); should they not
			// load, the unit is tried again after a pause rather than refused in a loop.
			e.retryLater(Unit{ex.in.SKU.ID, ex.in.Site})
			return false, nil
		}
		return false, fmt.Errorf("audit: %w", err)
	}
	return true, nil
}

// deferDecision records that decision id waits: suppressed by v's guardrail (inputs that cannot be
// used, no bandit arm that fits the cover), without a claim on the id, once per id here.
func (e *Engine) deferDecision(ctx context.Context, ls *liveSets, set *rules.Set, mode string, res *rules.Result,
	d rules.Decision, rule rules.Rule, ex *explained, id string, v guard.Verdict, xref *audit.ExperimentRef, now time.Time) error {
	if e.deferred.has(id) {
		return nil
	}
	v.DecisionID, v.Outcome, v.ActionTime, v.Decided, v.Replica = id, guard.Suppress, now.UTC(), now.UTC(), e.deps.Replica
	rec := e.record(ls, set, mode, res, d, rule, ex, now)
	rec.DecisionID, rec.Event, rec.Outcome, rec.Verdict, rec.Experiment = id, audit.EventDeferred, audit.OutcomeSuppressed, &v, xref
	if stored, err := e.publish(ctx, ls, ex, rec); !stored {
		return err
	}
	e.Metrics.Deferred.Add(1)
	e.deferred.add(id)
	return nil
}

// requester is who asked for the decisions of mode's version, so that forbid_self_approval refuses
// them as its approvers: who made the active version active, or who started the canary — not the
// author of whatever change came last (a shadow started by someone else).
func requester(c audit.Change, mode string) string {
	switch {
	case mode == audit.ModeCanary && c.Canary != nil && c.Canary.Author != "":
		return c.Canary.Author
	case mode != audit.ModeCanary && c.ActiveBy != "":
		return c.ActiveBy
	}
	return c.By // a rules state recorded before these were kept
}

// proposal is what one decision asks of the guardrails: its id (rule version, rule, SKU, channel,
// time bucket) and the inputs the deciding rule read, with their quality.
func proposal(set *rules.Set, res *rules.Result, d rules.Decision, rule rules.Rule, ex *explained, bucket, now time.Time, requester string) guard.Proposal {
	var errored []string
	for _, m := range res.Matches {
		if m.Rule == d.Rule {
			errored = m.ErroredBefore
		}
	}
	p := guard.Proposal{
		ID:          guard.DecisionID(set.Version(), d.Rule, ex.in.SKU.ID, d.Channel, bucket),
		RuleVersion: set.Version(), Rule: d.Rule, SKU: ex.in.SKU.ID, Site: ex.in.Site, Channel: d.Channel,
		Kind: guard.Kind(d.Action.Kind), Time: now, Requester: requester,
		Inputs: guardInputs(ex, rule.Reads, errored),
	}
	if d.Action.Kind == rules.Promote {
		p.Discount, p.Duration = d.Action.Discount, guard.Duration(d.Action.Duration)
		if r := ex.in.Inventory.DailyRate; r > 0 && !math.IsInf(r, 0) && !math.IsNaN(r) {
			p.ExpectedUnits = r * d.Action.Duration.Hours() / 24
		}
	}
	return p
}

// Action is what the outbox delivers for an allowed decision: a promotion from its action time
// for its duration, or a hold.
func Action(p guard.Proposal, a rules.Action, v guard.Verdict) act.Action {
	start := v.ActionTime
	if start.IsZero() {
		start = p.Time
	}
	out := act.Action{
		DecisionID: p.ID, Kind: act.Kind(p.Kind), SKU: p.SKU, Site: p.Site, Channel: p.Channel,
		Start: start, RuleSetVersion: p.RuleVersion, Rule: p.Rule,
	}
	if p.Kind == guard.Promote {
		out.Discount, out.Audience = p.Discount, a.Audience
		out.End = start.Add(time.Duration(p.Duration))
	} else {
		out.Reason = a.Reason
	}
	return out
}

// record fills what a decision's audit record says about its rules and inputs.
func (e *Engine) record(ls *liveSets, set *rules.Set, mode string, res *rules.Result, d rules.Decision,
	rule rules.Rule, ex *explained, now time.Time) audit.Record {
	rec := audit.Record{
		Mode: mode, Time: now, Replica: e.deps.Replica,
		RuleSet: audit.RuleSetRef{Name: set.Name(), Version: set.Version(), Label: set.Label(), ChangeSeq: ls.Change.Seq},
		Rule:    audit.RuleRef{Name: rule.Name, When: rule.When, Index: rule.Index, Priority: rule.Priority},
		SKU:     ex.in.SKU.ID, Site: ex.in.Site, Channel: d.Channel, Action: d.Action,
		Inputs: ex.inputs, Inventory: ex.inv, Paths: ex.paths, Trace: res.Trace,
	}
	if c := ls.Change.Canary; c != nil && ls.Canary != nil {
		unit := ex.in.SKU.ID
		if c.By == "site" {
			unit = ex.in.Site
		}
		rec.Canary = &audit.CanaryRef{Version: c.Version, Share: c.Share, By: c.By, Unit: unit, In: mode == audit.ModeCanary}
	}
	return rec
}

// shadow evaluates the shadow version on the same input and records each of its decisions that
// differs from what the acting version decided (a channel decided by only one of them counts),
// never acting on any. One record per shadow decision id (version, rule, SKU, channel, bucket).
func (e *Engine) shadow(ctx context.Context, ls *liveSets, acting *rules.Set, actDecs []rules.Decision, ex *explained, now time.Time) error {
	sres := ls.Shadow.Evaluate(&ex.in)
	sdecs := sres.PerChannel()
	byChannel := map[string]*rules.Decision{}
	for i := range actDecs {
		byChannel[actDecs[i].Channel] = &actDecs[i]
	}
	bucket := guard.TimeBucket(now, e.cfg.Bucket)
	var errs []error
	record := func(rule string, sd *rules.Decision, channel string) {
		id := shadowID(ls.Shadow.Version(), rule, ex.in.SKU.ID, channel, bucket)
		if e.done.has(id) {
			return
		}
		ad := byChannel[channel]
		dis := &audit.Disagreement{}
		if acting != nil {
			dis.ActiveVersion = acting.Version()
		}
		if ad != nil {
			a := ad.Action
			dis.ActiveRule, dis.ActiveAction = ad.Rule, &a
		}
		var rec audit.Record
		if sd != nil {
			rec = e.record(ls, ls.Shadow, audit.ModeShadow, &sres, *sd, ls.byName[ls.Shadow][sd.Rule], ex, now)
		} else {
			rec = e.record(ls, ls.Shadow, audit.ModeShadow, &sres, rules.Decision{Channel: channel}, rules.Rule{}, ex, now)
			rec.Note = "the shadow version decides nothing on this channel"
		}
		rec.Canary = nil
		rec.DecisionID, rec.Event, rec.Outcome, rec.Disagreement = id, audit.EventDecided, audit.OutcomeShadow, dis
		cctx, cancel := context.WithTimeout(ctx, e.cfg.OpTimeout)
		defer cancel()
		if stored, err := e.publish(cctx, ls, ex, rec); !stored {
			if err != nil {
				errs = append(errs, err)
			}
			return
		}
		e.Metrics.Shadow.Add(1)
		e.done.add(id)
	}
	seen := map[string]bool{}
	for i := range sdecs {
		sd := &sdecs[i]
		seen[sd.Channel] = true
		if ad := byChannel[sd.Channel]; ad != nil && ad.Action.Kind == sd.Action.Kind && ad.Rule == sd.Rule &&
			ad.Action.Discount == sd.Action.Discount && ad.Action.Duration == sd.Action.Duration {
			continue // agreement: nothing to record
		}
		record(sd.Rule, sd, sd.Channel)
	}
	for _, ad := range actDecs {
		if !seen[ad.Channel] {
			record("", nil, ad.Channel)
		}
	}
	return errors.Join(errs...)
}

// shadowID is a shadow decision's id: never the id the same version decides under once it acts
// (activated in the same bucket, its decisions would otherwise be taken as done here and their
// records deduplicated on the log as the shadow's).
func shadowID(version, rule, sku, channel string, bucket time.Time) string {
	return guard.DecisionID("shadow:"+version, rule, sku, channel, bucket)
}

func ruleKind(k guard.Kind) rules.ActionKind { return rules.ActionKind(k) }

func waitKey(version, rule, sku, site, channel string) string {
	return version + "\x00" + rule + "\x00" + sku + "\x00" + site + "\x00" + channel
}

// queuedReq is a request awaiting a person: its decision id, and until when it waits (zero: until
// the next look at the queue).
type queuedReq struct {
	id  string
	exp time.Time
}

// waiting reports whether a request of the same rule for the same SKU, site and channel, other
// than decision id, awaits a person (as this replica last saw the queue).
func (e *Engine) waiting(key, id string) bool {
	e.wmu.Lock()
	defer e.wmu.Unlock()
	q, ok := e.queued[key]
	return ok && q.id != id && (q.exp.IsZero() || e.now().Before(q.exp))
}

// wait notes a queued request until exp (zero: until the next look at the queue).
func (e *Engine) wait(key, id string, exp time.Time) {
	e.wmu.Lock()
	defer e.wmu.Unlock()
	e.queued[key] = queuedReq{id, exp}
}

// refreshQueue replaces the noted requests with the guard's queue: answered and expired ones
// leave it, other replicas' join it.
func (e *Engine) refreshQueue(reqs []guard.Request) {
	m := make(map[string]queuedReq, len(reqs))
	for _, q := range reqs {
		p := q.Proposal
		m[waitKey(p.RuleVersion, p.Rule, p.SKU, p.Site, p.Channel)] = queuedReq{p.ID, q.Expires}
	}
	e.wmu.Lock()
	e.queued = m
	e.wmu.Unlock()
}
