// Package kpi derives the hub's key figures from the decision log: signal-to-action latency,
// decisions by outcome, discount given, quality events and (from the experiments) lift per rule and arm.
package kpi

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/maphash"
	"log/slog"
	"math"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/decide/rules"
	"github.com/gemba-io/gemba/internal/jsfollow"
)

// Why from the decision log: every replica follows the same log, so every replica reports the
// same figures whichever replica decided (aggregate them with max, not sum), and a restarted
// replica recomputes them from the log's retention.

// Lift is one arm's measured lift, as the experiments report it.
type Lift struct {
	Rule string `json:"rule"`
	Arm  string `json:"arm"`
	// Lift is the relative change in sales of treated vs held-out units; Low and High bound its
	// confidence interval at Level. Each is null in JSON when not a finite number (MarshalJSON).
	Lift    float64 `json:"lift"`
	Low     float64 `json:"low"`
	High    float64 `json:"high"`
	Level   float64 `json:"level"`
	Treated int     `json:"treated"`
	Held    int     `json:"held"`
	// SRM: the sample-ratio-mismatch check flagged the assignment (the lift is not to be trusted).
	SRM bool `json:"srm,omitempty"`
}

// MarshalJSON writes a Lift, Low, High or Level that is not a finite number as null (JSON has no
// NaN or infinity, and encoding/json refuses them): a response of sales over a baseline near 0
// overflows to +Inf, and the mean and variance over it to +Inf and NaN, so the lift is +Inf and
// its interval NaN. The other figures are served as they are.
func (l Lift) MarshalJSON() ([]byte, error) {
	type plain Lift // without this method
	finite := func(v float64) *float64 {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil
		}
		return &v
	}
	return json.Marshal(struct {
		plain
		Lift  *float64 `json:"lift"`
		Low   *float64 `json:"low"`
		High  *float64 `json:"high"`
		Level *float64 `json:"level"`
	}{plain(l), finite(l.Lift), finite(l.Low), finite(l.High), finite(l.Level)})
}

// LiftSource is the seam to the experiments (hub/decide/experiment): it reports the lift measured
// per rule and arm. Lifts must be safe to call from any goroutine and return promptly.
type LiftSource interface {
	Lifts(ctx context.Context) ([]Lift, error)
}

// Options are the tracker's collaborators.
type Options struct {
	Audit  audit.Config // the decision log's stream and subjects (defaults filled)
	Lifts  LiftSource   // nil until the experiments are wired
	Logger *slog.Logger
}

// Stats are the tracker's counters.
type Stats struct {
	Records, Events, Malformed atomic.Uint64
	// Refollows counts the log follower's new consumers (the last one's node went away, or it lagged).
	Refollows atomic.Uint64
}

// latencyBuckets of signal-to-action, in seconds.
var latencyBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300}

// Tracker follows the decision log and keeps the figures.
//
// Lifecycle: Open follows the log from its first record and returns once the records that were
// there are counted; Close stops following (idempotent). It follows through the loss of its
// consumer's node (see jsfollow: an ordered consumer alone noticed it after 10 s, and one its server
// paused never), each record read once.
type Tracker struct {
	o     Options
	log   *slog.Logger
	Stats Stats

	mu        sync.RWMutex
	since     time.Time
	outcomes  map[[2]string]uint64 // (outcome, mode)
	byRule    map[string]*RuleFigures
	quality   map[[2]string]uint64 // (kind, state)
	discount  Discount
	latency   []uint64 // per bucket (+Inf last)
	latSum    float64
	latCount  uint64
	latencyH  prometheus.Histogram
	collector *collector

	// What was counted, by record time within dedupSpan (see seen).
	seed    maphash.Seed
	counted map[uint64]time.Time
	given   map[string]given // decision id -> promotion counted as given
	newest  time.Time
	adds    uint64

	stop    func()
	closing atomic.Bool
}

// RuleFigures are one rule's figures.
type RuleFigures struct {
	Rule     string            `json:"rule"`
	Outcomes map[string]uint64 `json:"outcomes"`
	Discount Discount          `json:"discount"`
}

// Discount is what the fired promotions gave: their count and their discounts in percent points
// summed (a per-unit figure: the log does not hold the units sold under them), and the largest.
type Discount struct {
	Promotions  uint64  `json:"promotions"`
	PointsTotal float64 `json:"points_total"`
	Max         float64 `json:"max"`

	given map[float64]uint64 // promotions per discount: a released one is taken back, Max too
}

func (d *Discount) add(a rules.Action) {
	d.Promotions++
	d.PointsTotal += a.Discount
	d.Max = max(d.Max, a.Discount)
	if d.given == nil {
		d.given = map[float64]uint64{}
	}
	d.given[a.Discount]++
}

// remove takes back a promotion add counted (released before it acted).
func (d *Discount) remove(discount float64) {
	if d.given[discount] == 0 {
		return
	}
	d.Promotions--
	d.PointsTotal -= discount
	if d.given[discount]--; d.given[discount] == 0 {
		delete(d.given, discount)
		if discount == d.Max {
			d.Max = 0
			for v := range d.given {
				d.Max = max(d.Max, v)
			}
		}
	}
}

// dedupSpan is how far back (in record time) the tracker remembers the records it counted and the
// promotions it counted as given: a record published again (a replica re-publishing a replayed
// decision after the log's duplicate window) or a release comes within it.
const dedupSpan = 48 * time.Hour

// given is a promotion's state: counted as given (until a release takes it back), and the
// latest of its releases and reservations again after a replay seen (audit.Record.ReleaseStep).
type given struct {
	rule     *RuleFigures
	discount float64
	at       time.Time
	counted  bool
	step     int
}

// seen reports whether the tracker counted r already (same decision, event, outcome, mode and, as
// the log's message id (audit.Record key), round and replay), and remembers it. t.mu must be held.
func (t *Tracker) seen(r *audit.Record) bool {
	if r.DecisionID == "" {
		return false
	}
	round := 0
	if r.Verdict != nil {
		round = r.Verdict.Round
	}
	k := maphash.String(t.seed, fmt.Sprintf("%s\x00%s\x00%s\x00%s\x00%d\x00%d", r.DecisionID, r.Event, r.Outcome, r.Mode, round, r.Replay))
	if _, ok := t.counted[k]; ok {
		return true
	}
	t.counted[k] = r.Time
	if r.Time.After(t.newest) {
		t.newest = r.Time
	}
	if t.adds++; t.adds%1024 == 0 {
		cut := t.newest.Add(-dedupSpan)
		for k, at := range t.counted {
			if at.Before(cut) {
				delete(t.counted, k)
			}
		}
		for id, g := range t.given {
			if g.at.Before(cut) {
				delete(t.given, id)
			}
		}
	}
	return false
}

// Open starts following the decision log.
func Open(ctx context.Context, js jetstream.JetStream, o Options) (*Tracker, error) {
	o.Audit.Defaults()
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	t := &Tracker{o: o, log: o.Logger, outcomes: map[[2]string]uint64{}, byRule: map[string]*RuleFigures{}, seed: maphash.MakeSeed(), counted: map[uint64]time.Time{}, given: map[string]given{},
		quality: map[[2]string]uint64{}, latency: make([]uint64, len(latencyBuckets)+1),
		latencyH: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "gemba_hub_kpi_signal_to_action_seconds",
			Help:    "From the newest input's event time to the action being decided and queued (automatic fired and held decisions).",
			Buckets: latencyBuckets})}
	t.collector = &collector{t: t}
	st, err := js.Stream(ctx, o.Audit.Stream)
	if err != nil {
		return nil, fmt.Errorf("kpi: decision log %s: %w", o.Audit.Stream, err)
	}
	f, err := jsfollow.Follow(ctx, jsfollow.Config{Stream: st, Subject: o.Audit.Prefix + ".decisions.*",
		What: "decision log " + o.Audit.Stream + " (KPIs)", Log: t.log, Refollows: &t.Stats.Refollows,
	}, func(m jetstream.Msg, meta *jetstream.MsgMetadata) { t.add(m.Subject(), m.Data(), meta.Sequence.Stream) })
	if err != nil {
		return nil, fmt.Errorf("kpi: decision log %s: %w", o.Audit.Stream, err)
	}
	select {
	case <-f.Loaded():
	case <-ctx.Done():
		f.Stop()
		return nil, ctx.Err()
	}
	t.stop = f.Stop
	return t, nil
}

// Close stops following.
func (t *Tracker) Close() {
	if t.closing.Swap(true) || t.stop == nil {
		return
	}
	t.stop()
}

// add counts one message of the decision log.
func (t *Tracker) add(subject string, data []byte, seq uint64) {
	switch subject {
	case t.o.Audit.RulesSubject():
		return
	case t.o.Audit.MonitorSubject():
		var e audit.MonitorEvent
		if err := json.Unmarshal(data, &e); err != nil || e.Kind == "" || e.State == "" {
			t.malformed(subject, seq, fmt.Errorf("monitor event: %v", orMissing(err, "kind and state")))
			return
		}
		t.Stats.Events.Add(1)
		t.mu.Lock()
		t.quality[[2]string{e.Kind, e.State}]++
		t.mu.Unlock()
		return
	}
	var r audit.Record
	if err := json.Unmarshal(data, &r); err != nil || r.Outcome == "" || r.Event == "" {
		t.malformed(subject, seq, fmt.Errorf("decision record: %v", orMissing(err, "event and outcome")))
		return
	}
	if d := r.Action.Discount; !(d >= 0 && d <= rules.MaxDiscount) {
		// No rule gives it (rules refuse it at load): counted, it would make the figures
		// meaningless (1e308 twice: the points total +Inf).
		t.malformed(subject, seq, fmt.Errorf("decision record %s: discount %v outside [0, %v]", r.DecisionID, d, rules.MaxDiscount))
		return
	}
	t.Stats.Records.Add(1)
	lat, hasLat := latency(&r)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.seen(&r) {
		return
	}
	if t.since.IsZero() || r.Time.Before(t.since) {
		t.since = r.Time
	}
	t.outcomes[[2]string{r.Outcome, r.Mode}]++
	rf := t.byRule[r.Rule.Name]
	if rf == nil {
		if len(t.byRule) >= maxRules {
			rf = t.rule("(other)")
		} else {
			rf = t.rule(r.Rule.Name)
		}
	}
	rf.Outcomes[r.Outcome]++
	switch {
	case r.Outcome == audit.OutcomeFired && r.Action.Kind == rules.Promote && r.Mode != audit.ModeShadow:
		// Fired when decided or approved, or reserved again for the replay of its dead letter
		// (reacquired): given, once, unless a later release took it back already.
		g, ok := t.given[r.DecisionID]
		if ok && (g.counted || g.step > r.ReleaseStep()) {
			break
		}
		t.discount.add(r.Action)
		rf.Discount.add(r.Action)
		if r.DecisionID != "" {
			t.given[r.DecisionID] = given{rule: rf, discount: r.Action.Discount, at: r.Time, counted: true, step: max(g.step, r.ReleaseStep())}
		}
	case r.Outcome == audit.OutcomeReleased:
		// Allowed, then given back before it acted: no discount was given. Remembered even when
		// nothing was counted yet: its decided record may come after it.
		g := t.given[r.DecisionID]
		if g.step >= r.ReleaseStep() {
			break // this release, or a reacquire after it, seen already
		}
		if g.counted {
			t.discount.remove(g.discount)
			g.rule.Discount.remove(g.discount)
		}
		if r.DecisionID != "" {
			t.given[r.DecisionID] = given{at: r.Time, step: r.ReleaseStep()}
		}
	}
	if hasLat {
		t.latencyH.Observe(lat)
		t.latency[sort.SearchFloat64s(latencyBuckets, lat)]++
		t.latSum += lat
		t.latCount++
	}
}

// maxRules bounds the rules tracked one by one (a label each).
const maxRules = 1000

func (t *Tracker) rule(name string) *RuleFigures {
	rf := t.byRule[name]
	if rf == nil {
		rf = &RuleFigures{Rule: name, Outcomes: map[string]uint64{}}
		t.byRule[name] = rf
	}
	return rf
}

func orMissing(err error, what string) string {
	if err != nil {
		return err.Error()
	}
	return what + " missing"
}

func (t *Tracker) malformed(subject string, seq uint64, err error) {
	t.Stats.Malformed.Add(1)
	t.log.Error("decision log message not counted in the KPIs", "subject", subject, "seq", seq, "err", err)
}

// latency is signal-to-action of an automatic acting decision: from its newest input's event time
// to the decision (recorded as its action is queued). Approvals are left out: they measure a person.
func latency(r *audit.Record) (float64, bool) {
	if r.Event != audit.EventDecided || (r.Outcome != audit.OutcomeFired && r.Outcome != audit.OutcomeHeld) || r.Mode == audit.ModeShadow {
		return 0, false
	}
	var newest time.Time
	for _, in := range r.Inputs {
		if in.EventTime.After(newest) {
			newest = in.EventTime
		}
	}
	if newest.IsZero() || r.Time.IsZero() {
		return 0, false
	}
	return max(r.Time.Sub(newest).Seconds(), 0), true
}

// Latency summarises signal-to-action.
type Latency struct {
	Count uint64  `json:"count"`
	MeanS float64 `json:"mean_s"`
	// P50S, P95S and P99S are bucket upper bounds (the histogram's resolution); +Inf reads as -1.
	P50S float64 `json:"p50_s"`
	P95S float64 `json:"p95_s"`
	P99S float64 `json:"p99_s"`
}

// Figures is the KPI read API's answer.
type Figures struct {
	Since     time.Time         `json:"since,omitzero"`
	Decisions map[string]uint64 `json:"decisions"` // by outcome, every mode but shadow
	Shadow    uint64            `json:"shadow"`
	Rules     []RuleFigures     `json:"rules"`
	Discount  Discount          `json:"discount"`
	Latency   Latency           `json:"signal_to_action"`
	// Quality counts the monitor's events by "kind/state".
	Quality map[string]uint64 `json:"quality_events"`
	Lifts   []Lift            `json:"lifts"`
	// LiftNote says why there is no lift (no experiments wired, or their error).
	LiftNote string `json:"lift_note,omitempty"`
}

// Figures returns the figures now.
func (t *Tracker) Figures(ctx context.Context) Figures {
	f := Figures{Decisions: map[string]uint64{}, Quality: map[string]uint64{}}
	t.mu.RLock()
	f.Since = t.since
	for k, n := range t.outcomes {
		if k[1] == audit.ModeShadow {
			f.Shadow += n
			continue
		}
		f.Decisions[k[0]] += n
	}
	for _, rf := range t.byRule {
		c := RuleFigures{Rule: rf.Rule, Outcomes: map[string]uint64{}, Discount: rf.Discount}
		for o, n := range rf.Outcomes {
			c.Outcomes[o] = n
		}
		f.Rules = append(f.Rules, c)
	}
	f.Discount = t.discount
	for k, n := range t.quality {
		f.Quality[k[0]+"/"+k[1]] = n
	}
	f.Latency = Latency{Count: t.latCount, P50S: t.quantile(0.5), P95S: t.quantile(0.95), P99S: t.quantile(0.99)}
	if t.latCount > 0 {
		f.Latency.MeanS = t.latSum / float64(t.latCount)
	}
	t.mu.RUnlock()
	sort.Slice(f.Rules, func(i, j int) bool { return f.Rules[i].Rule < f.Rules[j].Rule })
	f.Lifts = []Lift{}
	if t.o.Lifts == nil {
		f.LiftNote = "no experiment results wired (hub/decide/experiment)"
		return f
	}
	lifts, err := t.o.Lifts.Lifts(ctx)
	if err != nil {
		f.LiftNote = "experiments: " + err.Error()
		return f
	}
	f.Lifts = append(f.Lifts, lifts...)
	return f
}

// quantile is the upper bound of the bucket holding quantile q. Called with t.mu held.
func (t *Tracker) quantile(q float64) float64 {
	if t.latCount == 0 {
		return 0
	}
	want := uint64(math.Ceil(q * float64(t.latCount)))
	var n uint64
	for i, c := range t.latency {
		n += c
		if n >= want {
			if i == len(latencyBuckets) {
				return -1
			}
			return latencyBuckets[i]
		}
	}
	return -1
}
