package experiment

import (
	"fmt"
	"math"
	"slices"
)

// The bandit's model. One outcome's lift is y = units sold over the promotion / baseline units
// expected without it, so y = 1 at no discount by definition. The response to a discount d is a
// saturating curve through that point:
//
//	L(d) = 1 + β₁(1 − e^(−d/10)) + β₂(1 − e^(−d/30))
//
// two diminishing-returns terms, one quick and one slow, whose mix bends anywhere between; an arm's
// value is L(d) × (1 − d/100 − cost) / (1 − cost), the margin (revenue when cost is 0) relative
// to an unpromoted day. A curve, not one mean per arm, because every outcome then informs every arm
// (a 10 % outcome says much about 5 % and 20 %) and the anchor L(0) = 1 comes free, so the best arm
// is found in tens of outcomes rather than tens per arm. The family is the usual
// exponential-saturation response of marketing models; it is also the family sim/commerce draws
// its truth from (1 + a(1 − e^(−d/b)), b from 10 to 30), which flatters the benchmark: on a market
// with another shape the curve is misspecified and learns slower.
//
// The prior on β is Normal with mean (ℓ/2, ℓ/2) and sd ℓsd/√2 each, where ℓ ± ℓsd is the lift
// expected at a saturating discount (BanditConfig.PriorLift, default 0.4 ± 0.35: a deep discount
// lifts sales by 40 % give or take). It matters more than it looks: before any outcome, every unit
// draws its first arms from it, and a promotion at a bad discount on a unit that sells thousands a
// day costs more than weeks of a slightly wrong one, so a vague prior (±2) tripled the benchmark's
// regret.
//
// Pools channel and rule pool completely: all their SKUs share one curve, whose posterior combines
// the prior with the outcomes, their spread around the curve, s², estimated from the residuals
// (with a prior worth priorNoiseN outcomes of priorNoise).
//
// Pool unit pools partially (a hierarchical model, variances by the method of moments): each
// SKU × channel has its own curve, drawn around its channel's, β_u ~ Normal(β_channel, τ²·I), and
// its outcomes scatter around it with the noise σ². σ² is estimated within units (each unit's
// outcomes around its own mean at each arm, pooled over the channel); τ² is what the channel's
// spread s² leaves once σ² is taken out. A unit's posterior then weighs its channel's curve and
// its own outcomes by their precisions: a unit with noisy sales (wholesale: a few orders of 200
// units a day) follows its channel, one with clean sales (web) soon follows its own outcomes.
//
// Normal rather than Gamma-Poisson on units because sales are over-dispersed, so a Poisson
// posterior would be far too sure of itself and stop exploring; here the variances are learnt. They
// are plugged in, not integrated over: the draws are a little too sure while they rest on few
// outcomes, which the priors soften.
const (
	defaultPriorLift   = 0.4
	defaultPriorLiftSD = 0.35
	priorNoise         = 0.01 // prior variance of one outcome's lift (0.1²)
	priorNoiseN        = 2    // outcomes the noise prior is worth
	minTau2            = 1e-6 // floor of τ²: units are never all alike
)

var scales = [2]float64{10, 30}

func basis(d float64) [2]float64 {
	return [2]float64{1 - math.Exp(-d/scales[0]), 1 - math.Exp(-d/scales[1])}
}

// Stats are the sufficient statistics of outcomes for the curve (x = basis(d), r = y − 1).
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
		st.XX[0] < 0 || st.XX[2] < 0 || st.RR < 0 || st.XX[0]*st.XX[2] < st.XX[1]*st.XX[1]*(1-1e-9) {
		return fmt.Errorf("curve statistics %+v are not sums of squares", st)
	}
	return nil
}

// rss is Σ(r − βᵀx)².
func (st Stats) rss(b [2]float64) float64 {
	q := b[0]*b[0]*st.XX[0] + 2*b[0]*b[1]*st.XX[1] + b[1]*b[1]*st.XX[2]
	return max(0, st.RR-2*(b[0]*st.XR[0]+b[1]*st.XR[1])+q)
}

// sym2 is a symmetric 2×2 matrix (11, 12, 22).
type sym2 [3]float64

func (m sym2) inv() sym2 {
	det := m[0]*m[2] - m[1]*m[1]
	return sym2{m[2] / det, -m[1] / det, m[0] / det}
}

func (m sym2) mul(v [2]float64) [2]float64 {
	return [2]float64{m[0]*v[0] + m[1]*v[1], m[1]*v[0] + m[2]*v[1]}
}

// Curve is a posterior of a response curve: β ~ Normal(Mean, Cov).
type Curve struct {
	Mean [2]float64 `json:"mean"`
	Cov  [3]float64 `json:"cov"` // (11, 12, 22)
	// Spread is the variance of one outcome around the pool's curve (s²); Noise the within-unit
	// noise σ² and Tau2 the between-unit variance τ² of a unit's curve (pool unit only).
	Spread float64 `json:"spread"`
	Noise  float64 `json:"noise,omitempty"`
	Tau2   float64 `json:"tau2,omitempty"`
	N      int     `json:"n"` // outcomes behind it (the unit's own, pool unit)
}

// Lift is the curve's mean lift at d.
func (c Curve) Lift(d float64) float64 {
	x := basis(d)
	return 1 + c.Mean[0]*x[0] + c.Mean[1]*x[1]
}

// posterior combines a prior β ~ Normal(m0, p0⁻¹) (p0 the precision) with outcomes st of noise
// variance v.
func posterior(m0 [2]float64, p0 sym2, st Stats, v float64) ([2]float64, sym2) {
	p := sym2{p0[0] + st.XX[0]/v, p0[1] + st.XX[1]/v, p0[2] + st.XX[2]/v}
	rhs := p0.mul(m0)
	rhs[0] += st.XR[0] / v
	rhs[1] += st.XR[1] / v
	cov := p.inv()
	return cov.mul(rhs), cov
}

// prior is the prior on β: mean and precision.
type prior struct {
	mean [2]float64
	prec sym2
	sd2  float64 // the variance of each coefficient
}

func newPrior(lift, sd float64) prior {
	v := sd * sd / 2
	return prior{mean: [2]float64{lift / 2, lift / 2}, prec: sym2{1 / v, 0, 1 / v}, sd2: v}
}

// poolCurve is the complete-pooling posterior of a pool's curve. The spread depends on the curve
// and the curve on the spread: three rounds from the prior's spread settle it well enough.
func poolCurve(p prior, st Stats) Curve {
	s2 := priorNoise
	var m [2]float64
	var cov sym2
	for range 3 {
		m, cov = posterior(p.mean, p.prec, st, s2)
		s2 = (priorNoise*priorNoiseN + st.rss(m)) / (priorNoiseN + float64(st.N))
	}
	return Curve{Mean: m, Cov: cov, Spread: s2, N: st.N}
}

// unitCurve is a unit's posterior under partial pooling: its channel's curve (with that curve's
// own uncertainty) widened by τ² as the prior, and the unit's own outcomes of noise σ².
func unitCurve(p prior, pool *State, unit *State) Curve {
	pc := poolCurve(p, pool.Stats)
	noise := (priorNoise*priorNoiseN + pool.WithinSS) / (priorNoiseN + pool.WithinDF)
	// τ² is per coefficient: the spread left over once the noise is out, divided by the mean |x|²
	// of the pool's outcomes, so that τ²|x|² is the between-unit variance of a lift.
	x2 := 1.0
	if pool.Stats.N > 0 {
		x2 = (pool.Stats.XX[0] + pool.Stats.XX[2]) / float64(pool.Stats.N)
	}
	tau2 := max(minTau2, pc.Spread-noise) / x2
	if pool.Stats.N == 0 {
		tau2 = p.sd2
	}
	prior := sym2{pc.Cov[0] + tau2, pc.Cov[1], pc.Cov[2] + tau2}.inv()
	m, cov := posterior(pc.Mean, prior, unit.Stats, noise)
	return Curve{Mean: m, Cov: cov, Spread: pc.Spread, Noise: noise, Tau2: tau2, N: unit.Stats.N}
}

// draw samples β from the curve's posterior.
func (c Curve) draw(z1, z2 float64) [2]float64 {
	a := math.Sqrt(max(0, c.Cov[0]))
	var b float64
	if a > 0 {
		b = c.Cov[1] / a
	}
	cc := math.Sqrt(max(0, c.Cov[2]-b*b))
	return [2]float64{c.Mean[0] + a*z1, c.Mean[1] + b*z1 + cc*z2}
}

// Arm sums the outcomes of one discount in one pool or unit: for the floor, for the within-unit
// noise and for reading.
type Arm struct {
	Discount float64 `json:"discount"`
	N        int     `json:"n"`
	Sum      float64 `json:"sum"`   // Σy
	SumSq    float64 `json:"sumsq"` // Σy²
}

func (a Arm) check() error {
	ok := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
	switch {
	case !ok(a.Discount) || a.Discount <= 0 || a.Discount >= 100:
		return fmt.Errorf("discount %v", a.Discount)
	case a.N < 0 || !ok(a.Sum) || !ok(a.SumSq) || a.Sum < 0 || a.SumSq < 0 || (a.N == 0 && (a.Sum != 0 || a.SumSq != 0)):
		return fmt.Errorf("arm %v: n %d, sum %v, sum of squares %v are not sums of lifts", a.Discount, a.N, a.Sum, a.SumSq)
	}
	return nil
}

func (a Arm) mean() float64 {
	if a.N == 0 {
		return 0
	}
	return a.Sum / float64(a.N)
}

// add counts one lift y; it returns the within increment of the sum of squares and of the degrees
// of freedom (Welford), for the channel's noise estimate.
func (a *Arm) add(y float64) (ss, df float64) {
	if a.N > 0 {
		d := y - a.mean()
		ss, df = float64(a.N)/float64(a.N+1)*d*d, 1
	}
	a.N++
	a.Sum += y
	a.SumSq += y * y
	return ss, df
}

// find returns the arm of discount d in arms (sorted), or a zero arm of d.
func find(arms []Arm, d float64) Arm {
	if i, ok := slices.BinarySearchFunc(arms, d, cmpArm); ok {
		return arms[i]
	}
	return Arm{Discount: d}
}

func cmpArm(a Arm, d float64) int {
	switch {
	case a.Discount < d:
		return -1
	case a.Discount > d:
		return 1
	}
	return 0
}
