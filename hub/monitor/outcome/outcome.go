// Package outcome measures what experiment decisions did: each promoted and held-out unit's sales over
// its promotion window against its own baseline, fed to the bandits' posteriors and to each holdout's lift.
package outcome

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"gonum.org/v1/gonum/stat"
	"gonum.org/v1/gonum/stat/distuv"

	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/decide/experiment"
	"github.com/gemba-io/gemba/hub/ingest/commerce"
	"github.com/gemba-io/gemba/hub/monitor/kpi"
	"github.com/gemba-io/gemba/internal/jsfollow"
)

// Options place the measurer and set its pace.
type Options struct {
	Audit    audit.Config // the decision log (defaults filled)
	Commerce string       // the COMMERCE stream
	Prefix   string       // the commerce subjects' prefix
	// Every is the pace of measurement rounds; Settle is how long after a window's end its sales are
	// taken as complete (late uploads). Weeks is how many weeks back the baseline looks (see
	// baseline). Level is the confidence level of the lift intervals.
	Every, Settle time.Duration
	Weeks         int
	Level         float64
	Logger        *slog.Logger
	Now           func() time.Time
}

func (o *Options) defaults() {
	o.Audit.Defaults()
	if o.Every == 0 {
		o.Every = 10 * time.Minute
	}
	if o.Settle == 0 {
		o.Settle = time.Hour
	}
	if o.Weeks == 0 {
		o.Weeks = 8
	}
	if o.Level == 0 {
		o.Level = 0.95
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// unit is one experiment decision to measure: a promotion (treated, or a bandit's arm) or a holdout.
type unit struct {
	id, exp, sku, channel string
	start, end            time.Time
	group                 experiment.Group // "" without a holdout
	held                  bool             // a held-out decision (not promoted)
	share                 float64
	choice                *experiment.Choice // nil without a bandit
	measured              bool
	sales, baseline       float64 // once measured
}

// Stats count what the measurer did.
type Stats struct {
	Units, Measured, NoBaseline, Recorded, Rounds, Errors, Malformed atomic.Uint64
	// Released counts promotions released (allowed, never acted on): not measured.
	Released atomic.Uint64
	// Reacquired counts released promotions reserved again for the replay of their dead letter:
	// measured from then on.
	Reacquired atomic.Uint64
	// Refollows counts the log follower's new consumers (the last one's node went away, or it lagged).
	Refollows atomic.Uint64
}

// Measurer follows the decision log's experiment decisions and measures each once its window is over.
// Every replica may run one: a bandit outcome is applied once by its decision id (experiment.Store).
type Measurer struct {
	o     Options
	js    jetstream.JetStream
	store *experiment.Store // nil: lifts only
	log   *slog.Logger
	Stats Stats

	mu    sync.Mutex
	units map[string]*unit // by decision id
	// released: decisions released (never acted on), or released and reserved again for the replay
	// of their dead letter, by decision id (see parked).
	released map[string]*parked
	relift   bool // a measured unit was released: the lifts are recomputed next round
	lifts    []kpi.Lift

	readIdle time.Duration              // readSales gives up after this long without a sale message
	onRead   func(c jetstream.Consumer) // tests: the sales consumer, before it is read
}

// readIdle is how long a round waits for the next message of the sales it reads: a consumer that
// stopped delivering (its node lost, or paused) fails the round, retried the next, instead of
// holding it, and every later round, until shutdown.
const readIdle = 30 * time.Second

// New returns a measurer; Run follows and measures until its context ends.
func New(js jetstream.JetStream, store *experiment.Store, o Options) *Measurer {
	o.defaults()
	return &Measurer{o: o, js: js, store: store, log: o.Logger.With("component", "outcome"), units: map[string]*unit{}, released: map[string]*parked{},
		readIdle: readIdle}
}

// Run follows the decision log and runs a measurement round every Options.Every until ctx ends,
// the first once the log is read.
func (m *Measurer) Run(ctx context.Context) error {
	f, err := m.follow(ctx)
	if err != nil {
		return err
	}
	defer f.Stop()
	t := time.NewTicker(m.o.Every)
	defer t.Stop()
	// The first round measures what the log holds once it is read (a round on the part read by then
	// left the rest, and the lifts, to the next round). At most a round's pace later all the same:
	// the newest record may expire unread, and Loaded then waits for the next.
	select {
	case <-ctx.Done():
		return nil
	case <-f.Loaded():
	case <-t.C:
	}
	for {
		if err := m.Round(ctx); err != nil && ctx.Err() == nil {
			m.Stats.Errors.Add(1)
			m.log.Warn("measurement round failed; retried next round", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// follow keeps the experiment decisions of the decision log (from its first retained message),
// through the loss of its consumer's node (see jsfollow: an ordered consumer alone noticed it after
// 10 s, and one its server paused never), each record handed once.
func (m *Measurer) follow(ctx context.Context) (*jsfollow.Follower, error) {
	st, err := m.js.Stream(ctx, m.o.Audit.Stream)
	if err != nil {
		return nil, fmt.Errorf("outcome: decision log %s: %w", m.o.Audit.Stream, err)
	}
	f, err := jsfollow.Follow(ctx, jsfollow.Config{Stream: st, Subject: m.o.Audit.Prefix + ".decisions.*",
		What: "decision log " + m.o.Audit.Stream + " (outcomes)", Log: m.log, Refollows: &m.Stats.Refollows,
	}, func(msg jetstream.Msg, _ *jetstream.MsgMetadata) { m.add(msg.Subject(), msg.Data()) })
	if err != nil {
		return nil, fmt.Errorf("outcome: decision log %s: %w", m.o.Audit.Stream, err)
	}
	return f, nil
}

// add keeps a decision record that an experiment took part in.
func (m *Measurer) add(subject string, data []byte) {
	if subject == m.o.Audit.RulesSubject() || subject == m.o.Audit.MonitorSubject() {
		return
	}
	var r audit.Record
	if err := json.Unmarshal(data, &r); err != nil {
		m.Stats.Malformed.Add(1)
		return
	}
	if (r.Event == audit.EventReleased || r.Event == audit.EventReacquired) && r.Mode != audit.ModeShadow {
		m.release(&r)
		return
	}
	x := r.Experiment
	if x == nil || r.Mode == audit.ModeShadow || (r.Event != audit.EventDecided && r.Event != audit.EventApproved) {
		return
	}
	u := &unit{id: r.DecisionID, exp: x.ID, sku: r.SKU, channel: r.Channel, choice: x.Bandit}
	switch {
	case r.Outcome == audit.OutcomeFired:
		// Fired when decided, or when a person approved it (its window starts at the approval: the
		// verdict's action time, which the outbox's promotion starts at too).
		u.start = r.Time
		if r.Verdict != nil && !r.Verdict.ActionTime.IsZero() {
			u.start = r.Verdict.ActionTime
		}
	case r.Outcome == audit.OutcomeHeldOut && r.Event == audit.EventDecided:
		u.start, u.choice, u.held = r.Time, nil, true
	default:
		return // not acted on and not a holdout: nothing to measure
	}
	u.end = u.start.Add(r.Action.Duration)
	if h := x.Holdout; h != nil {
		u.group, u.share = h.Group, h.Share
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if p, ok := m.released[u.id]; ok {
		if p.step%2 == 1 {
			// Released first (reconcile), its decided record written after: it never ran, unless
			// a replay reserves it again (kept for that).
			if p.u == nil {
				p.u = u
				m.Stats.Released.Add(1)
			}
			return
		}
		if u.start = p.from; !u.start.Before(u.end) {
			return // reacquired before its decided record was read, past its window's end
		}
	}
	if _, ok := m.units[u.id]; !ok {
		m.units[u.id] = u
		m.Stats.Units.Add(1)
	}
}

// parked is what the measurer knows of a decision's releases and reservations again: the latest
// step seen (audit.Record.ReleaseStep: a record of an earlier step, or seen already, changes
// nothing), that record's time, and while released its unit, taken out of the measured ones.
type parked struct {
	step int
	at   time.Time
	from time.Time // reacquired: when it acted again
	u    *unit
}

// release takes out the unit of decision r.DecisionID when r releases it (the kill switch
// cancelled its start, its delivery was abandoned or dead-lettered, reconcile released it): it
// never ran, so its sales measure no promotion, and fed to a bandit they would read as its arm's
// lift. Its decided record may come before or after the released one. A release seen after the
// unit was measured (its bandit outcome recorded already) still takes it out of the lifts. When r
// reserves it again (reacquired: a replay of its dead letter) the promotion acts after all, from
// r's time to its window's end (the outbox keeps its end): the unit is measured over that.
func (m *Measurer) release(r *audit.Record) {
	step := r.ReleaseStep()
	m.mu.Lock()
	defer m.mu.Unlock()
	p := m.released[r.DecisionID]
	if p == nil {
		p = &parked{}
		m.released[r.DecisionID] = p
	} else if step <= p.step {
		return
	}
	p.step, p.at = step, r.Time
	if step%2 == 1 {
		if u, ok := m.units[r.DecisionID]; ok {
			delete(m.units, r.DecisionID)
			m.relift = m.relift || u.measured
			p.u = u
			m.Stats.Released.Add(1)
		}
		return
	}
	p.from = r.Time
	if u := p.u; u != nil {
		// A new unit: a round may still be measuring the one released (outside m.mu).
		p.u = nil
		if r.Time.Before(u.end) {
			m.units[r.DecisionID] = &unit{id: u.id, exp: u.exp, sku: u.sku, channel: u.channel, start: r.Time, end: u.end,
				group: u.group, held: u.held, share: u.share, choice: u.choice}
			m.Stats.Reacquired.Add(1)
		}
	}
}

// Round measures every unit whose window (plus Settle) is over and not measured yet: its sales over
// the window and its baseline (see baseline). Bandit outcomes go to the posteriors; lifts are
// recomputed.
func (m *Measurer) Round(ctx context.Context) error {
	m.Stats.Rounds.Add(1)
	now := m.o.Now()
	m.mu.Lock()
	var due []*unit
	forgot := false
	heldBy := map[heldKey][]*unit{}
	for id, u := range m.units {
		if u.held {
			k := heldKey{u.exp, u.sku, u.channel}
			heldBy[k] = append(heldBy[k], u)
		}
		switch {
		case u.measured && now.Sub(u.start) > m.o.Audit.Retention:
			// Its record has left the decision log: a replica started now would not know it.
			delete(m.units, id)
			forgot = true
		case !u.measured && !u.end.Add(m.o.Settle).After(now):
			due = append(due, u)
		}
	}
	for id, p := range m.released {
		if now.Sub(p.at) > m.o.Audit.Retention {
			delete(m.released, id)
		}
	}
	forgot = forgot || m.relift
	m.relift = false
	from := map[*unit]time.Time{}
	for _, u := range due {
		if u.held {
			from[u] = heldFrom(u, heldBy[heldKey{u.exp, u.sku, u.channel}])
		}
	}
	m.mu.Unlock()
	if len(due) == 0 {
		if forgot {
			m.computeLifts()
		}
		return nil
	}
	// In the order the windows ended: a posterior remembers its last experiment.MaxApplied ids and
	// refuses an outcome that ended before the newest one it forgot, so a round with more outcomes
	// of one pool than that, recorded in map order, would lose new ones as too old.
	sort.Slice(due, func(i, j int) bool {
		if !due[i].end.Equal(due[j].end) {
			return due[i].end.Before(due[j].end)
		}
		return due[i].id < due[j].id
	})
	want := map[[2]string]bool{}
	for _, u := range due {
		want[[2]string{u.sku, u.channel}] = true
	}
	sales, oldest, err := m.readSales(ctx, want, now)
	if err != nil {
		return err
	}
	var errs []error
	for _, u := range due {
		s := sales[[2]string{u.sku, u.channel}]
		start := u.start
		if f, ok := from[u]; ok {
			start = f
		}
		if start.Before(u.end) {
			u.sales = s.sum(start, u.end)
			u.baseline = baseline(s, start, u.end, oldest, m.o.Weeks)
		}
		if u.choice != nil && m.store != nil {
			if u.baseline <= 0 {
				m.Stats.NoBaseline.Add(1)
			} else {
				cfg := experiment.Config{ID: u.exp, Bandit: &experiment.BanditConfig{Pool: u.choice.Pool, Arms: armsOf(u.choice)}}
				ok, err := m.store.Record(ctx, cfg, experiment.Outcome{ID: u.id, SKU: u.sku, Channel: u.channel,
					Discount: u.choice.Discount, Units: u.sales, Baseline: u.baseline, End: u.end})
				switch {
				case err != nil && !errors.Is(err, experiment.ErrOutcomeTooOld):
					errs = append(errs, fmt.Errorf("decision %s: %w", u.id, err))
					continue // measured again next round
				case ok:
					m.Stats.Recorded.Add(1)
				}
			}
		}
		m.mu.Lock()
		u.measured = true
		m.mu.Unlock()
		m.Stats.Measured.Add(1)
	}
	m.computeLifts()
	return errors.Join(errs...)
}

type heldKey struct{ exp, sku, channel string }

// heldFrom is where held-out unit u's window starts once the windows of the same experiment's
// held-out decisions of its SKU × channel that began before it are taken out: the control unit was
// held out once over that time, and its sales count once. The engine records a unit held out once
// per period of the promotion's duration, so a window runs into the next period's at most; records
// from different replicas or rule versions (or written before holdouts were recorded once per
// period) overlap more. Beyond u's end, u adds nothing. (m.mu held.)
func heldFrom(u *unit, held []*unit) time.Time {
	from := u.start
	for _, v := range held {
		if v != u && (v.start.Before(u.start) || (v.start.Equal(u.start) && v.id < u.id)) && v.end.After(from) {
			from = v.end
		}
	}
	return from
}

// computeLifts measures each holdout experiment over its measured units: one outcome per SKU ×
// channel (the assignment is per unit), its sales and baselines summed over every window measured.
func (m *Measurer) computeLifts() {
	m.mu.Lock()
	defer m.mu.Unlock()
	type key struct{ exp, sku, channel string }
	agg := map[key]*experiment.UnitOutcome{}
	share := map[string]float64{}
	for _, u := range m.units {
		if !u.measured || u.group == "" {
			continue
		}
		k := key{u.exp, u.sku, u.channel}
		o := agg[k]
		if o == nil {
			o = &experiment.UnitOutcome{SKU: u.sku, Channel: u.channel, Group: u.group}
			agg[k] = o
		}
		o.Sales += u.sales
		o.Baseline += u.baseline
		share[u.exp] = u.share
	}
	byExp := map[string][]experiment.UnitOutcome{}
	for k, o := range agg {
		byExp[k.exp] = append(byExp[k.exp], *o)
	}
	var lifts []kpi.Lift
	for exp, us := range byExp {
		r, err := experiment.Lift(us, share[exp], m.o.Level)
		if err != nil {
			m.log.Debug("no lift yet", "experiment", exp, "err", err)
			continue
		}
		lifts = append(lifts, kpi.FromHoldout(exp, "holdout", r))
	}
	lifts = append(lifts, m.armLifts()...)
	sort.Slice(lifts, func(i, j int) bool {
		if lifts[i].Rule != lifts[j].Rule {
			return lifts[i].Rule < lifts[j].Rule
		}
		return lifts[i].Arm < lifts[j].Arm
	})
	m.lifts = lifts
}

// armLifts is each bandit arm's observed lift: the mean of its promotions' sales over their
// baselines, with a normal-approximation interval at the configured level once it has two. Unlike
// a holdout's, it is against each unit's own history, not a concurrent control (m.mu held).
func (m *Measurer) armLifts() []kpi.Lift {
	type key struct {
		exp  string
		disc float64
	}
	ys := map[key][]float64{}
	for _, u := range m.units {
		if u.measured && u.choice != nil && u.baseline > 0 {
			k := key{u.exp, u.choice.Discount}
			ys[k] = append(ys[k], u.sales/u.baseline)
		}
	}
	z := distuv.UnitNormal.Quantile(0.5 + m.o.Level/2)
	var out []kpi.Lift
	for k, y := range ys {
		mean, sd := stat.MeanStdDev(y, nil)
		l := kpi.Lift{Rule: k.exp, Arm: fmt.Sprintf("%g%%", k.disc), Lift: mean, Low: mean, High: mean, Level: m.o.Level, Treated: len(y)}
		if len(y) >= 2 {
			half := z * sd / math.Sqrt(float64(len(y)))
			l.Low, l.High = mean-half, mean+half
		}
		out = append(out, l)
	}
	return out
}

// Lifts reports the holdout lift of every experiment measured so far (kpi.LiftSource).
func (m *Measurer) Lifts(context.Context) ([]kpi.Lift, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]kpi.Lift(nil), m.lifts...), nil
}

func armsOf(c *experiment.Choice) []float64 {
	arms := make([]float64, 0, len(c.Arms))
	for _, a := range c.Arms {
		arms = append(arms, a.Discount)
	}
	return arms
}

// timeline is one SKU × channel's sales, by sale time.
type timeline []sale

type sale struct {
	at  time.Time
	qty float64
}

func (tl timeline) sum(from, to time.Time) float64 {
	var n float64
	for _, s := range tl {
		if !s.at.Before(from) && s.at.Before(to) {
			n += s.qty
		}
	}
	return n
}

// readSales reads every sale the COMMERCE stream holds for the wanted SKU × channel pairs, each order
// line once (as the commerce consumer applies it), and the oldest sale time from which on the stream
// holds every sale: its oldest sale's, and no earlier than its max_age before now (an older sale
// uploaded late does not bring back the weeks the stream no longer holds).
// The whole stream is read: sale times need not follow stream times (late uploads, a simulator's
// accelerated clock), and the stream's max_age bounds it.
func (m *Measurer) readSales(ctx context.Context, want map[[2]string]bool, now time.Time) (map[[2]string]timeline, time.Time, error) {
	out := map[[2]string]timeline{}
	var oldest time.Time
	st, err := m.js.Stream(ctx, m.o.Commerce)
	if err != nil {
		return nil, oldest, fmt.Errorf("outcome: read %s: %w", m.o.Commerce, err)
	}
	var floor time.Time
	if age := st.CachedInfo().Config.MaxAge; age > 0 {
		floor = now.Add(-age)
	}
	filter := m.o.Prefix + ".commerce.sales.>"
	cons, err := m.js.OrderedConsumer(ctx, m.o.Commerce, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	if err != nil {
		return nil, oldest, fmt.Errorf("outcome: read %s (%s): %w", m.o.Commerce, filter, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, oldest, fmt.Errorf("outcome: read %s: %w", m.o.Commerce, err)
	}
	if info.NumPending == 0 {
		return out, oldest, nil
	}
	if m.onRead != nil {
		m.onRead(cons)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(1000))
	if err != nil {
		return nil, oldest, fmt.Errorf("outcome: read %s: %w", m.o.Commerce, err)
	}
	defer it.Stop()
	seen := map[string]bool{}
	read := 0
	for {
		msg, err := jsfollow.NextWithin(ctx, it, m.readIdle)
		if err != nil {
			return nil, oldest, fmt.Errorf("outcome: read %s after %d of %d pending: %w", m.o.Commerce, read, info.NumPending, err)
		}
		read++
		md, err := msg.Metadata()
		if err != nil {
			return nil, oldest, fmt.Errorf("outcome: read %s: %w", m.o.Commerce, err)
		}
		if s, err := commerce.DecodeSale(msg.Subject(), msg.Data()); err == nil && s.Quantity > 0 {
			if oldest.IsZero() || s.Time.Before(oldest) {
				oldest = s.Time
			}
			k := [2]string{s.SKU, s.Channel}
			line := fmt.Sprintf("%s\x00%d", s.OrderID, s.Line)
			if want[k] && !seen[line] {
				seen[line] = true
				out[k] = append(out[k], sale{s.Time, s.Quantity})
			}
		}
		if md.NumPending == 0 {
			if !oldest.IsZero() && oldest.Before(floor) {
				oldest = floor
			}
			return out, oldest, nil
		}
	}
}

const week = 7 * 24 * time.Hour

// baseline is what the unit would have sold over [start, end) without the promotion: the mean of its
// sales over the same window 1, 2, … weeks earlier (n, n+1, … for a window of up to n weeks), as many
// whole weeks back as the stream holds (at most weeks windows). The same weekdays and hours, so a
// weekly pattern (a busy Saturday) is not read as lift, which a flat daily rate would (the bandit's
// regret on the simulator: 26 % of a fixed discount's with this baseline, about 60 % with a flat
// 28-day rate; docs/BENCHMARKS.md). 0 with no whole week of history: the unit then says nothing
// about lift.
func baseline(tl timeline, start, end, oldest time.Time, weeks int) float64 {
	// A window longer than a week starts as many whole weeks back as it is long: a window one week
	// back would overlap the promotion itself.
	first := max(1, int(math.Ceil(float64(end.Sub(start))/float64(week))))
	var sum float64
	k := 0
	for i := first; i < first+weeks; i++ {
		from := start.Add(-time.Duration(i) * week)
		if oldest.IsZero() || from.Before(oldest) {
			break
		}
		sum += tl.sum(from, end.Add(-time.Duration(i)*week))
		k++
	}
	if k == 0 {
		return 0
	}
	return sum / float64(k)
}
