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

// The bandit's model. One outcome's lift is L = units sold over the promotion / baseline units
// expected without it; by that definition L = 1 at no discount. The pool's response to a discount d
// is a curve through that point, L(d) = 1 + β₁x + β₂x² with x = d/100, observed with Normal noise
// of unknown variance σ². The conjugate prior is Normal-Inverse-Gamma: σ² ~ InvGamma(a, b),
// β | σ² ~ Normal(μ, σ²Λ⁻¹) (Bayesian linear regression). Thompson sampling draws σ² and β from the
// posterior, evaluates every eligible arm on the drawn curve and picks the arm worth most:
// value = L(d) × (1 − d/100 − cost) / (1 − cost), the margin (revenue when cost is 0) relative to
// an unpromoted day.
//
// Why a curve rather than one independent mean per arm: every outcome then informs every arm (a
// 10 % outcome says much about 5 % and 20 %), and the anchor L(0) = 1 is known for free, so a pool
// learns its best arm in tens of outcomes instead of tens per arm; a quadratic is the least shape
// that can bend over (diminishing returns). Why Normal rather than Gamma-Poisson on units: sales are
// over-dispersed (orders of 200 units on wholesale), so a Poisson posterior would be far too sure of
// itself and stop exploring; the variance here is learnt.
//
// The prior: μ = 0 (no lift), Λ = 10⁻⁴·I (so β's prior spread is about ±10, a lift of 2 at a 10 %
// discount is plausible), a = 1, b = 0.01 (a lift noise around 0.1, soon replaced by the data).
const (
	priorLambda = 1e-4
	priorA      = 1
	priorB      = 0.01
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

// Model is the Normal-Inverse-Gamma posterior of a pool's response curve.
type Model struct {
	N      int        `json:"n"`      // outcomes applied
	Mu     [2]float64 `json:"mu"`     // posterior mean of (β₁, β₂)
	Lambda [3]float64 `json:"lambda"` // posterior precision (Λ₁₁, Λ₁₂, Λ₂₂), symmetric
	A      float64    `json:"a"`
	B      float64    `json:"b"`
}

func priorModel() Model {
	return Model{Lambda: [3]float64{priorLambda, 0, priorLambda}, A: priorA, B: priorB}
}

func basis(d float64) [2]float64 { x := d / 100; return [2]float64{x, x * x} }

// Lift is the posterior mean lift at discount d.
func (m Model) Lift(d float64) float64 {
	x := basis(d)
	return 1 + m.Mu[0]*x[0] + m.Mu[1]*x[1]
}

// Stats are the sufficient statistics of a pool's outcomes (x = basis(d), r = lift − 1): the state
// keeps these rather than a posterior so that one pool's data can be read under another prior (a
// unit's own outcomes under its channel's posterior, see BanditConfig.PoolWeight).
type Stats struct {
	N  int        `json:"n"`
	XX [3]float64 `json:"xx"` // Σxxᵀ: (11, 12, 22)
	XR [2]float64 `json:"xr"` // Σxr
	RR float64    `json:"rr"` // Σr²
}

func (st *Stats) add(d, y float64) {
	x, r := basis(d), y-1
	st.N++
	st.XX[0] += x[0] * x[0]
	st.XX[1] += x[0] * x[1]
	st.XX[2] += x[1] * x[1]
	st.XR[0] += x[0] * r
	st.XR[1] += x[1] * r
	st.RR += r * r
}

func (st Stats) check() error {
	ok := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
	if st.N < 0 || !ok(st.XX[0]) || !ok(st.XX[1]) || !ok(st.XX[2]) || !ok(st.XR[0]) || !ok(st.XR[1]) || !ok(st.RR) ||
		st.XX[0] < 0 || st.XX[2] < 0 || st.RR < 0 {
		return fmt.Errorf("stats %+v are not sums of squares", st)
	}
	return nil
}

// update is the posterior of prior m given the outcomes summed in st (the conjugate update).
func (m Model) update(st Stats) Model {
	l := m.Lambda
	lm := [2]float64{l[0]*m.Mu[0] + l[1]*m.Mu[1], l[1]*m.Mu[0] + l[2]*m.Mu[1]}
	before := m.Mu[0]*lm[0] + m.Mu[1]*lm[1]
	n := [3]float64{l[0] + st.XX[0], l[1] + st.XX[1], l[2] + st.XX[2]}
	rhs := [2]float64{lm[0] + st.XR[0], lm[1] + st.XR[1]}
	det := n[0]*n[2] - n[1]*n[1]
	mu := [2]float64{(n[2]*rhs[0] - n[1]*rhs[1]) / det, (n[0]*rhs[1] - n[1]*rhs[0]) / det}
	after := mu[0]*rhs[0] + mu[1]*rhs[1] // μ'ᵀΛ'μ' = μ'ᵀ(Λμ + Σxr)
	return Model{N: m.N + st.N, Mu: mu, Lambda: n, A: m.A + float64(st.N)/2, B: m.B + 0.5*max(0, st.RR+before-after)}
}

// asPrior turns a channel's posterior into a unit's prior worth at most w outcomes: the same mean
// curve and noise, its precision scaled down to w outcomes' worth (partial pooling: a unit with
// few outcomes of its own follows its channel, one with many follows its own).
func (m Model) asPrior(w float64) Model {
	if m.N == 0 || w <= 0 {
		return priorModel()
	}
	f := min(1, w/float64(m.N))
	p := priorModel()
	p.Mu = m.Mu
	p.Lambda = [3]float64{priorLambda + m.Lambda[0]*f, m.Lambda[1] * f, priorLambda + m.Lambda[2]*f}
	n := min(w, float64(m.N))
	p.A = priorA + n/2
	p.B = priorB + (m.B-priorB)*n/float64(m.N)
	return p
}

// draw samples (β₁, β₂) from the posterior: σ² ~ InvGamma(a, b), β ~ Normal(μ, σ²Λ⁻¹).
func (m Model) draw(rng *rand.Rand) [2]float64 {
	tau := distuv.Gamma{Alpha: m.A, Beta: m.B, Src: rng}.Rand() // 1/σ²
	l := m.Lambda
	det := l[0]*l[2] - l[1]*l[1]
	// Covariance σ²Λ⁻¹ and its Cholesky factor (2×2 by hand).
	c11, c12, c22 := l[2]/det/tau, -l[1]/det/tau, l[0]/det/tau
	a := math.Sqrt(c11)
	b := c12 / a
	c := math.Sqrt(max(0, c22-b*b))
	z1, z2 := rng.NormFloat64(), rng.NormFloat64()
	return [2]float64{m.Mu[0] + a*z1, m.Mu[1] + b*z1 + c*z2}
}

// Arm counts the outcomes of one discount: for the floor and for reading.
type Arm struct {
	Discount float64 `json:"discount"`
	N        int     `json:"n"`
	Sum      float64 `json:"sum"` // of the lifts observed
}

func (a Arm) check() error {
	switch {
	case math.IsNaN(a.Discount) || a.Discount <= 0 || a.Discount >= 100:
		return fmt.Errorf("discount %v", a.Discount)
	case a.N < 0 || math.IsNaN(a.Sum) || math.IsInf(a.Sum, 0) || a.Sum < 0:
		return fmt.Errorf("arm %v: n %d, sum %v", a.Discount, a.N, a.Sum)
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
	Stats   Stats            `json:"stats"`
	Arms    []Arm            `json:"arms"` // by increasing discount
	Applied []AppliedOutcome `json:"applied,omitempty"`
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

// ArmDraw is one arm as the choice saw it: its outcomes, its expected lift and eligibility, and
// its lift and value on the drawn curve.
type ArmDraw struct {
	Discount      float64 `json:"discount"`
	N             int     `json:"n"`              // outcomes of this arm in the pool
	ExpectedLift  float64 `json:"expected_lift"`  // on the posterior mean curve
	ExpectedExtra float64 `json:"expected_extra"` // Baseline × (ExpectedLift − 1)
	Eligible      bool    `json:"eligible"`
	Drawn         bool    `json:"drawn"`  // false: not eligible, or the floor chose without drawing
	Sample        float64 `json:"sample"` // the lift on the drawn curve
	Value         float64 `json:"value"`  // Sample × (1 − d/100 − cost) / (1 − cost)
}

// Choice is the arm a bandit chose for one decision and the posterior it came from; the engine
// records it in the decision as it is.
type Choice struct {
	Experiment string     `json:"experiment"`
	Key        string     `json:"key"`      // the pool's KV key
	Revision   uint64     `json:"revision"` // the pool state's revision (0: no outcome yet)
	DecisionID string     `json:"decision_id"`
	Discount   float64    `json:"discount"`
	Reason     string     `json:"reason"`
	Model      Model      `json:"model"`         // the posterior drawn from
	Beta       [2]float64 `json:"beta,omitzero"` // the curve drawn (Thompson only)
	Arms       []ArmDraw  `json:"arms"`          // the configured arms by increasing discount
}

// choose picks an arm from state s (at revision rev) for one decision. The draws come from a
// random stream seeded by the experiment, pool key, decision id and revision, so the same decision
// against the same state chooses the same arm on any replica.
func choose(s *State, prior Model, b *BanditConfig, exp, key string, rev uint64, decisionID string, u Unit) (Choice, error) {
	h := fnv.New64a()
	h.Write([]byte(exp + "\x00" + key + "\x00" + decisionID))
	rng := rand.New(rand.NewPCG(h.Sum64(), rev))
	model := prior.update(s.Stats)
	c := Choice{Experiment: exp, Key: key, Revision: rev, DecisionID: decisionID, Model: model}
	room := u.Position - u.SafetyStock
	total := 0
	for _, d := range b.sortedArms() {
		n := 0
		if i := slices.IndexFunc(s.Arms, func(a Arm) bool { return a.Discount == d }); i >= 0 {
			n = s.Arms[i].N
		}
		lift := model.Lift(d)
		extra := u.Baseline * (lift - 1)
		ad := ArmDraw{Discount: d, N: n, ExpectedLift: lift, ExpectedExtra: extra, Eligible: extra <= room}
		if ad.Eligible {
			total += n
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
	c.Beta = model.draw(rng)
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
// not (or no longer) configured is updated all the same: the outcome happened.
func (s *State) apply(o Outcome) (bool, error) {
	if slices.ContainsFunc(s.Applied, func(a AppliedOutcome) bool { return a.ID == o.ID }) {
		return false, nil
	}
	if !s.Horizon.IsZero() && !o.End.After(s.Horizon) {
		return false, fmt.Errorf("outcome %s (window end %s, remembered from %s): %w", o.ID, o.End.Format(time.RFC3339), s.Horizon.Format(time.RFC3339), ErrOutcomeTooOld)
	}
	y := o.Units / o.Baseline
	s.Stats.add(o.Discount, y)
	a := s.arm(o.Discount)
	a.N++
	a.Sum += y
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
