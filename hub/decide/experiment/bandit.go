package experiment

import (
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"slices"
	"time"
)

// MaxApplied is how many outcome ids a state remembers to apply each outcome once. Older ids are
// forgotten, and an outcome whose window ended at or before the newest forgotten one is refused
// (ErrOutcomeTooOld) rather than risk applying it twice.
const MaxApplied = 2048

// ErrNoEligibleArm: every arm's expected extra units would breach the unit's cover; do not promote.
var ErrNoEligibleArm = errors.New("no eligible arm: every discount's expected extra units exceed position − safety stock")

// ErrOutcomeTooOld: the outcome is older than the ids the state remembers, so whether it was
// already applied cannot be told; it is refused.
var ErrOutcomeTooOld = errors.New("outcome too old: its window ended before the oldest outcome id remembered")

// AppliedOutcome remembers an applied outcome by id and the end of its window.
type AppliedOutcome struct {
	ID  string    `json:"id"`
	End time.Time `json:"end"`
}

// State is the value of one KV key: a pool's outcomes (pool channel or rule, or the channel
// population of pool unit) or one unit's own (pool unit).
type State struct {
	Version int   `json:"v"`
	Stats   Stats `json:"stats"` // of the curve
	Arms    []Arm `json:"arms"`  // by increasing discount
	// WithinSS and WithinDF sum the squared deviations of units' outcomes from their own arm means
	// and their degrees of freedom: the channel's noise estimate (pool unit, channel key only).
	WithinSS float64          `json:"within_ss,omitempty"`
	WithinDF float64          `json:"within_df,omitempty"`
	Applied  []AppliedOutcome `json:"applied,omitempty"`
	// Horizon is the newest window end among forgotten ids (see MaxApplied).
	Horizon time.Time `json:"horizon,omitzero"`
}

const stateVersion = 1

func newState() State { return State{Version: stateVersion} }

// check reports a state no code of this package could have written: it is refused, never repaired
// silently, since its numbers are what every later choice rests on.
func (s *State) check() error {
	if s.Version != stateVersion {
		return fmt.Errorf("state version %d, want %d", s.Version, stateVersion)
	}
	if err := s.Stats.check(); err != nil {
		return err
	}
	if math.IsNaN(s.WithinSS) || math.IsInf(s.WithinSS, 0) || s.WithinSS < 0 || math.IsNaN(s.WithinDF) || math.IsInf(s.WithinDF, 0) || s.WithinDF < 0 {
		return fmt.Errorf("within-unit sums %v, %v are not sums of squares", s.WithinSS, s.WithinDF)
	}
	for i, a := range s.Arms {
		if err := a.check(); err != nil {
			return fmt.Errorf("arms[%d]: %w", i, err)
		}
		if i > 0 && s.Arms[i-1].Discount >= a.Discount {
			return fmt.Errorf("arms[%d]: discount %v not above the previous arm's %v", i, a.Discount, s.Arms[i-1].Discount)
		}
	}
	if len(s.Applied) > MaxApplied {
		return fmt.Errorf("%d applied ids, at most %d", len(s.Applied), MaxApplied)
	}
	for i, o := range s.Applied {
		if o.ID == "" {
			return fmt.Errorf("applied[%d]: empty id", i)
		}
	}
	return nil
}

// arm returns the state's arm of discount d, adding it when new.
func (s *State) arm(d float64) *Arm {
	i, found := slices.BinarySearchFunc(s.Arms, d, cmpArm)
	if !found {
		s.Arms = slices.Insert(s.Arms, i, Arm{Discount: d})
	}
	return &s.Arms[i]
}

// Unit is what the engine knows of one SKU × channel when a bandit rule decides for it.
type Unit struct {
	SKU     string `json:"sku"`
	Channel string `json:"channel"`
	// Baseline is the units expected over the promotion's duration without it: the forecast's daily
	// rate × the duration in days.
	Baseline float64 `json:"baseline"`
	// Position is the stock the promotion can draw on (on hand + inbound due in the window − reserved);
	// SafetyStock is what must remain. An arm whose expected extra units, Baseline × (lift − 1) with the
	// posterior mean lift, exceed Position − SafetyStock is not eligible.
	Position    float64 `json:"position"`
	SafetyStock float64 `json:"safety_stock"`
	// MaxDiscount is the largest discount the guardrails allow on the channel (0: none known): an
	// arm above it could never run, so never get the outcome its floor waits for, and is not eligible.
	MaxDiscount float64 `json:"max_discount,omitempty"`
}

func (u Unit) check() error {
	bad := func(v float64) bool { return math.IsNaN(v) || math.IsInf(v, 0) }
	switch {
	case u.SKU == "" || u.Channel == "":
		return fmt.Errorf("empty sku %q or channel %q", u.SKU, u.Channel)
	case bad(u.Baseline) || u.Baseline < 0:
		return fmt.Errorf("%s/%s: baseline %v must be a finite number ≥ 0", u.SKU, u.Channel, u.Baseline)
	case bad(u.Position):
		return fmt.Errorf("%s/%s: position %v must be a finite number", u.SKU, u.Channel, u.Position)
	case bad(u.SafetyStock) || u.SafetyStock < 0:
		return fmt.Errorf("%s/%s: safety stock %v must be a finite number ≥ 0", u.SKU, u.Channel, u.SafetyStock)
	case bad(u.MaxDiscount) || u.MaxDiscount < 0:
		return fmt.Errorf("%s/%s: max discount %v must be a finite number ≥ 0", u.SKU, u.Channel, u.MaxDiscount)
	}
	return nil
}

// Reasons a choice was made.
const (
	ReasonThompson = "thompson" // the best draw among eligible arms
	ReasonFloor    = "floor"    // an eligible arm below its floor share, drawn among those
	// ReasonReplayed: the decision's verdict was recorded for the arm an earlier call of it chose
	// (the guard replays it); that arm runs, whatever this call drew.
	ReasonReplayed = "replayed"
)

// ArmDraw is one arm as the choice saw it: its outcomes, its expected lift and eligibility, and
// its lift and value on the drawn curve.
type ArmDraw struct {
	Discount      float64 `json:"discount"`
	PoolN         int     `json:"pool_n"`         // outcomes of this arm in the pool
	UnitN         int     `json:"unit_n"`         // and in the unit's own (pool unit)
	ExpectedLift  float64 `json:"expected_lift"`  // on the posterior mean curve
	ExpectedExtra float64 `json:"expected_extra"` // Baseline × (ExpectedLift − 1)
	Eligible      bool    `json:"eligible"`
	AboveMax      bool    `json:"above_max,omitempty"` // not eligible: above the guardrails' max discount
	Drawn         bool    `json:"drawn"`               // false: not eligible, or the floor chose without drawing
	Sample        float64 `json:"sample"`              // the lift on the drawn curve
	Value         float64 `json:"value"`               // Sample × (1 − d/100 − cost) / (1 − cost)
}

// Choice is the arm a bandit chose for one decision and the posterior it came from; the engine
// records it in the decision as it is.
type Choice struct {
	Experiment string `json:"experiment"`
	Pool       string `json:"pool"`
	// PoolKey and PoolRevision name the pool state read; UnitKey and UnitRevision the unit's own
	// (pool unit). Revision 0: no outcome yet.
	PoolKey      string     `json:"pool_key"`
	PoolRevision uint64     `json:"pool_revision"`
	UnitKey      string     `json:"unit_key,omitempty"`
	UnitRevision uint64     `json:"unit_revision,omitempty"`
	DecisionID   string     `json:"decision_id"`
	Discount     float64    `json:"discount"`
	Reason       string     `json:"reason"`
	Curve        Curve      `json:"curve"`         // the posterior drawn from
	Beta         [2]float64 `json:"beta,omitzero"` // the curve drawn (Thompson only)
	Arms         []ArmDraw  `json:"arms"`          // the configured arms by increasing discount
	// Unit is the stock and demand the arms were judged against: an arm is eligible when its
	// expected extra units fit in Position − SafetyStock.
	Unit Unit `json:"unit"`
}

// choose picks an arm for one decision from the pool's state (and the unit's own, pool unit). The
// draws come from a random stream seeded by the experiment, the keys and the decision id: the same
// decision against the same states chooses the same arm on any replica, and the draws do not depend
// on the order other keys were written in (revisions are the bucket's sequence numbers).
func choose(c Choice, pool, unit *State, b *BanditConfig, u Unit) (Choice, error) {
	h := fnv.New64a()
	h.Write([]byte(c.Experiment + "\x00" + c.PoolKey + "\x00" + c.UnitKey + "\x00" + c.DecisionID))
	rng := rand.New(rand.NewPCG(h.Sum64(), 0x7ea5))
	c.Unit = u
	p := newPrior(b.priorLift())
	if unit == nil {
		c.Curve = poolCurve(p, pool.Stats)
	} else {
		c.Curve = unitCurve(p, pool, unit)
	}
	room := u.Position - u.SafetyStock
	total := 0
	for _, d := range b.sortedArms() {
		lift := c.Curve.Lift(d)
		extra := u.Baseline * (lift - 1)
		above := u.MaxDiscount > 0 && d > u.MaxDiscount
		ad := ArmDraw{Discount: d, PoolN: find(pool.Arms, d).N, ExpectedLift: lift, ExpectedExtra: extra, Eligible: extra <= room && !above, AboveMax: above}
		if unit != nil {
			ad.UnitN = find(unit.Arms, d).N
		}
		if ad.Eligible {
			total += ad.PoolN
		}
		c.Arms = append(c.Arms, ad)
	}
	var eligible, under []int
	for i, a := range c.Arms {
		if !a.Eligible {
			continue
		}
		eligible = append(eligible, i)
		if float64(a.PoolN) < b.Floor*float64(total+1) {
			under = append(under, i)
		}
	}
	if len(eligible) == 0 {
		limit := ""
		if u.MaxDiscount > 0 {
			limit = fmt.Sprintf(", arms above the max discount %v not counted", u.MaxDiscount)
		}
		return c, fmt.Errorf("experiment %s: %s/%s (baseline %v, position %v, safety stock %v%s): %w",
			c.Experiment, u.SKU, u.Channel, u.Baseline, u.Position, u.SafetyStock, limit, ErrNoEligibleArm)
	}
	if len(under) > 0 {
		// Drawn at random among the arms below their floor rather than the least-served one: every
		// unit of a pool decides against the same state before any outcome is back, and would
		// otherwise all pick the same arm.
		i := under[rng.IntN(len(under))]
		c.Discount, c.Reason = c.Arms[i].Discount, ReasonFloor
		return c, nil
	}
	c.Beta = c.Curve.draw(rng.NormFloat64(), rng.NormFloat64())
	best := -1
	margin := 1 - b.CostShare
	for _, i := range eligible {
		a := &c.Arms[i]
		x := basis(a.Discount)
		a.Sample = 1 + c.Beta[0]*x[0] + c.Beta[1]*x[1]
		a.Value = a.Sample * (1 - a.Discount/100 - b.CostShare) / margin
		a.Drawn = true
		if best < 0 || a.Value > c.Arms[best].Value {
			best = i
		}
	}
	c.Discount, c.Reason = c.Arms[best].Discount, ReasonThompson
	return c, nil
}

// Outcome is what a promotion chosen by a bandit sold, measured once its window is over.
type Outcome struct {
	// ID makes the update idempotent: the decision id of the promotion measured.
	ID       string  `json:"id"`
	SKU      string  `json:"sku"`
	Channel  string  `json:"channel"`
	Discount float64 `json:"discount"` // the arm the promotion ran with
	// Units sold over the window, and Baseline, the units expected over it without the promotion
	// (as Unit.Baseline, over the window actually run). The lift observed is Units / Baseline.
	Units    float64   `json:"units"`
	Baseline float64   `json:"baseline"`
	End      time.Time `json:"end"` // the end of the window
}

func (o Outcome) check() error {
	bad := func(v float64) bool { return math.IsNaN(v) || math.IsInf(v, 0) }
	switch {
	case o.ID == "":
		return errors.New("empty outcome id")
	case o.SKU == "" || o.Channel == "":
		return fmt.Errorf("outcome %s: empty sku %q or channel %q", o.ID, o.SKU, o.Channel)
	case bad(o.Units) || o.Units < 0:
		return fmt.Errorf("outcome %s (%s/%s): units %v must be a finite number ≥ 0", o.ID, o.SKU, o.Channel, o.Units)
	case bad(o.Baseline) || o.Baseline <= 0:
		return fmt.Errorf("outcome %s (%s/%s): baseline %v must be a finite number above 0 (no expected sales: no lift to learn from)", o.ID, o.SKU, o.Channel, o.Baseline)
	case bad(o.Discount) || o.Discount <= 0 || o.Discount >= 100:
		return fmt.Errorf("outcome %s (%s/%s): discount %v is not an arm (0 < d < 100)", o.ID, o.SKU, o.Channel, o.Discount)
	case o.End.IsZero():
		return fmt.Errorf("outcome %s (%s/%s): empty window end", o.ID, o.SKU, o.Channel)
	}
	return nil
}

// apply adds outcome o to s unless it was applied already; it reports whether s changed. An arm
// not (or no longer) configured is updated all the same: the outcome happened. within is the
// within-unit increment (sum of squares, degrees of freedom) that a channel state of pool unit
// adds to its noise estimate; zero elsewhere.
func (s *State) apply(o Outcome, within [2]float64) (bool, error) {
	if slices.ContainsFunc(s.Applied, func(a AppliedOutcome) bool { return a.ID == o.ID }) {
		return false, nil
	}
	if !s.Horizon.IsZero() && !o.End.After(s.Horizon) {
		return false, fmt.Errorf("outcome %s (window end %s, remembered from %s): %w", o.ID, o.End.Format(time.RFC3339), s.Horizon.Format(time.RFC3339), ErrOutcomeTooOld)
	}
	y := o.Units / o.Baseline
	s.Stats.add(o.Discount, y)
	s.arm(o.Discount).add(y)
	s.WithinSS += within[0]
	s.WithinDF += within[1]
	s.Applied = append(s.Applied, AppliedOutcome{ID: o.ID, End: o.End.UTC()})
	if len(s.Applied) > MaxApplied {
		slices.SortStableFunc(s.Applied, func(a, b AppliedOutcome) int { return a.End.Compare(b.End) })
		drop := len(s.Applied) - MaxApplied
		for _, a := range s.Applied[:drop] {
			if a.End.After(s.Horizon) {
				s.Horizon = a.End
			}
		}
		s.Applied = slices.Delete(s.Applied, 0, drop)
	}
	return true, nil
}
