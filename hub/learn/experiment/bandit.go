package experiment

import (
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"gonum.org/v1/gonum/stat/distuv"
)

// The bandit's model. Each arm (discount d) of a pool has an unknown mean lift μ_d, where one
// outcome's lift is L = units sold over the promotion / baseline units expected without it, observed
// as L ~ Normal(μ_d, σ_d²) with σ_d unknown too. The conjugate prior is Normal-Gamma:
// τ = 1/σ² ~ Gamma(α, rate β), μ | τ ~ Normal(m, 1/(κτ)). Thompson sampling draws τ and then μ
// from each eligible arm's posterior and picks the arm whose draw is worth most:
// value = μ × (1 − d/100 − cost) / (1 − cost), the margin (revenue when cost is 0) relative to an
// unpromoted day. The Normal likelihood with a learnt variance is used rather than Gamma-Poisson
// on units because sales are over-dispersed (orders of 200 units on wholesale): a Poisson posterior
// would be far too sure of itself and stop exploring.
//
// The prior: m = 1 (no lift), κ = 0.1 (worth a tenth of an outcome, so the first outcome moves the
// mean almost all the way), α = 1, β = 0.01 (a lift noise around 0.1, quickly replaced by the data).
const (
	priorMean  = 1
	priorKappa = 0.1
	priorAlpha = 1
	priorBeta  = 0.01
)

// MaxApplied is how many outcome ids a pool's state remembers to apply each outcome once. Older ids
// are forgotten, and an outcome whose window ended at or before the newest forgotten one is refused
// (ErrOutcomeTooOld) rather than risk applying it twice.
const MaxApplied = 2048

// ErrNoEligibleArm: every arm's expected extra units would breach the unit's cover; do not promote.
var ErrNoEligibleArm = errors.New("no eligible arm: every discount's expected extra units exceed position − safety stock")

// ErrOutcomeTooOld: the outcome is older than the ids the state remembers, so whether it was
// already applied cannot be told; it is refused.
var ErrOutcomeTooOld = errors.New("outcome too old: its window ended before the oldest outcome id remembered")

// Arm is one arm's posterior: the Normal-Gamma parameters over its lift and how many outcomes
// made it.
type Arm struct {
	Discount float64 `json:"discount"`
	N        int     `json:"n"`
	Mean     float64 `json:"m"`     // posterior mean of μ (the expected lift)
	Kappa    float64 `json:"kappa"` // prior weight + outcomes
	Alpha    float64 `json:"alpha"`
	Beta     float64 `json:"beta"`
}

func priorArm(d float64) Arm {
	return Arm{Discount: d, Mean: priorMean, Kappa: priorKappa, Alpha: priorAlpha, Beta: priorBeta}
}

// observe is the conjugate update with one lift x.
func (a *Arm) observe(x float64) {
	k := a.Kappa + 1
	a.Beta += a.Kappa * (x - a.Mean) * (x - a.Mean) / (2 * k)
	a.Mean = (a.Kappa*a.Mean + x) / k
	a.Kappa = k
	a.Alpha += 0.5
	a.N++
}

func (a Arm) check() error {
	ok := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
	switch {
	case !ok(a.Discount) || a.Discount <= 0 || a.Discount >= 100:
		return fmt.Errorf("discount %v", a.Discount)
	case a.N < 0:
		return fmt.Errorf("arm %v: n %d", a.Discount, a.N)
	case !ok(a.Mean), !ok(a.Kappa) || a.Kappa <= 0, !ok(a.Alpha) || a.Alpha <= 0, !ok(a.Beta) || a.Beta <= 0:
		return fmt.Errorf("arm %v: posterior (m %v, κ %v, α %v, β %v) is not a Normal-Gamma", a.Discount, a.Mean, a.Kappa, a.Alpha, a.Beta)
	}
	return nil
}

// AppliedOutcome remembers an applied outcome by id and the end of its window.
type AppliedOutcome struct {
	ID  string    `json:"id"`
	End time.Time `json:"end"`
}

// State is one pool's posterior, the value of its KV key.
type State struct {
	Version int              `json:"v"`
	Arms    []Arm            `json:"arms"` // by increasing discount
	Applied []AppliedOutcome `json:"applied,omitempty"`
	// Horizon is the newest window end among forgotten ids (see MaxApplied).
	Horizon time.Time `json:"horizon,omitzero"`
}

const stateVersion = 1

// check reports a state no code of this package could have written: it is refused, never repaired
// silently, since its numbers are what every later choice rests on.
func (s *State) check() error {
	if s.Version != stateVersion {
		return fmt.Errorf("state version %d, want %d", s.Version, stateVersion)
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

// arm returns the state's arm of discount d, adding it with the prior when new.
func (s *State) arm(d float64) *Arm {
	i, found := slices.BinarySearchFunc(s.Arms, d, func(a Arm, d float64) int {
		switch {
		case a.Discount < d:
			return -1
		case a.Discount > d:
			return 1
		}
		return 0
	})
	if !found {
		s.Arms = slices.Insert(s.Arms, i, priorArm(d))
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
	}
	return nil
}

// Reasons a choice was made.
const (
	ReasonThompson = "thompson" // the best draw among eligible arms
	ReasonFloor    = "floor"    // an eligible arm below its floor share, drawn among those
)

// ArmDraw is one arm as the choice saw it: its posterior, its eligibility and what was drawn.
type ArmDraw struct {
	Arm
	ExpectedExtra float64 `json:"expected_extra"` // Baseline × (Mean − 1)
	Eligible      bool    `json:"eligible"`
	Drawn         bool    `json:"drawn"`  // false: not eligible, or the floor chose without drawing
	Sample        float64 `json:"sample"` // the lift drawn from the posterior
	Value         float64 `json:"value"`  // Sample × (1 − d/100 − cost) / (1 − cost)
}

// Choice is the arm a bandit chose for one decision and the posterior it came from; the engine
// records it in the decision as it is.
type Choice struct {
	Experiment string    `json:"experiment"`
	Key        string    `json:"key"`      // the pool's KV key
	Revision   uint64    `json:"revision"` // the pool state's revision (0: no outcome yet)
	DecisionID string    `json:"decision_id"`
	Discount   float64   `json:"discount"`
	Reason     string    `json:"reason"`
	Arms       []ArmDraw `json:"arms"` // the configured arms by increasing discount
}

// choose picks an arm from state s (at revision rev) for one decision. The draws come from a
// random stream seeded by the experiment, pool key, decision id and revision, so the same decision
// against the same state chooses the same arm on any replica.
func choose(s *State, b *BanditConfig, exp, key string, rev uint64, decisionID string, u Unit) (Choice, error) {
	h := fnv.New64a()
	h.Write([]byte(exp + "\x00" + key + "\x00" + decisionID))
	rng := rand.New(rand.NewPCG(h.Sum64(), rev))
	c := Choice{Experiment: exp, Key: key, Revision: rev, DecisionID: decisionID}
	room := u.Position - u.SafetyStock
	total := 0
	for _, d := range b.sortedArms() {
		a := priorArm(d)
		if i := slices.IndexFunc(s.Arms, func(a Arm) bool { return a.Discount == d }); i >= 0 {
			a = s.Arms[i]
		}
		extra := u.Baseline * (a.Mean - 1)
		ad := ArmDraw{Arm: a, ExpectedExtra: extra, Eligible: extra <= room}
		if ad.Eligible {
			total += a.N
		}
		c.Arms = append(c.Arms, ad)
	}
	var eligible, under []int
	for i, a := range c.Arms {
		if !a.Eligible {
			continue
		}
		eligible = append(eligible, i)
		if float64(a.N) < b.Floor*float64(total+1) {
			under = append(under, i)
		}
	}
	if len(eligible) == 0 {
		return c, fmt.Errorf("experiment %s: %s/%s (baseline %v, position %v, safety stock %v): %w",
			exp, u.SKU, u.Channel, u.Baseline, u.Position, u.SafetyStock, ErrNoEligibleArm)
	}
	if len(under) > 0 {
		// Drawn at random among the arms below their floor rather than the least-served one: every
		// unit of a pool decides against the same state before any outcome is back, and would
		// otherwise all pick the same arm.
		i := under[rng.IntN(len(under))]
		c.Discount, c.Reason = c.Arms[i].Discount, ReasonFloor
		return c, nil
	}
	best := -1
	margin := 1 - b.CostShare
	for _, i := range eligible {
		a := &c.Arms[i]
		tau := distuv.Gamma{Alpha: a.Alpha, Beta: a.Beta, Src: rng}.Rand()
		a.Sample = a.Mean + rng.NormFloat64()/math.Sqrt(a.Kappa*tau)
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
// not (or no longer) configured is updated all the same: the outcome happened.
func (s *State) apply(o Outcome) (bool, error) {
	if slices.ContainsFunc(s.Applied, func(a AppliedOutcome) bool { return a.ID == o.ID }) {
		return false, nil
	}
	if !s.Horizon.IsZero() && !o.End.After(s.Horizon) {
		return false, fmt.Errorf("outcome %s (window end %s, remembered from %s): %w", o.ID, o.End.Format(time.RFC3339), s.Horizon.Format(time.RFC3339), ErrOutcomeTooOld)
	}
	s.arm(o.Discount).observe(o.Units / o.Baseline)
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
