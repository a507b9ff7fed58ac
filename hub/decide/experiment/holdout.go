package experiment

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"gonum.org/v1/gonum/stat/distuv"
)

// Group is the arm of a holdout a unit falls in.
type Group string

const (
	// Treated units get the rule's promotion.
	Treated Group = "treated"
	// Held units are eligible but not promoted: the comparison group.
	Held Group = "holdout"
)

// SRMAlpha is the p-value below which a sample-ratio mismatch is flagged: low enough that a correct
// assignment is almost never flagged, while a broken one (a filter applied to one group only, an
// assignment that changed mid-window) shows up with a few hundred units.
const SRMAlpha = 0.001

// Assignment is the holdout draw of one unit; the engine records it in the decision.
type Assignment struct {
	Salt  string  `json:"salt"`  // the experiment id
	Share float64 `json:"share"` // the holdout share in force
	// Bucket is the unit's position in [0, 1): the first 53 bits of
	// SHA-256(salt 0x00 sku 0x00 channel) over 2^53. Held iff Bucket < Share, so raising the share
	// only moves treated units into the holdout, never the reverse.
	Bucket float64 `json:"bucket"`
	Group  Group   `json:"group"`
}

// Assign places a SKU × channel in the holdout or the treated group, deterministically: every
// replica, every restart and every re-evaluation gets the same answer for the same salt.
func Assign(salt, sku, channel string, share float64) (Assignment, error) {
	switch {
	case salt == "":
		return Assignment{}, fmt.Errorf("holdout assignment of %s/%s: empty experiment id (salt)", sku, channel)
	case sku == "" || channel == "":
		return Assignment{}, fmt.Errorf("holdout assignment in %s: empty sku %q or channel %q", salt, sku, channel)
	case math.IsNaN(share) || share <= 0 || share >= 1:
		return Assignment{}, fmt.Errorf("holdout assignment in %s of %s/%s: share %v is not in (0, 1)", salt, sku, channel, share)
	}
	h := sha256.New()
	h.Write([]byte(salt))
	h.Write([]byte{0})
	h.Write([]byte(sku))
	h.Write([]byte{0})
	h.Write([]byte(channel))
	sum := h.Sum(nil)
	u := float64(binary.BigEndian.Uint64(sum[:8])>>11) / (1 << 53)
	g := Treated
	if u < share {
		g = Held
	}
	return Assignment{Salt: salt, Share: share, Bucket: u, Group: g}, nil
}

// SRMResult is a sample-ratio-mismatch check: Pearson's chi-square (1 degree of freedom) of the
// group sizes against the configured share.
type SRMResult struct {
	Treated  int     `json:"treated"`
	Held     int     `json:"holdout"`
	Share    float64 `json:"share"` // the configured holdout share
	ChiSq    float64 `json:"chi_sq"`
	P        float64 `json:"p"`
	Mismatch bool    `json:"mismatch"` // P < SRMAlpha: the assignment is broken; do not trust the lift
}

// SRM checks the group sizes of an experiment against its holdout share.
func SRM(treated, held int, share float64) (SRMResult, error) {
	n := treated + held
	switch {
	case treated < 0 || held < 0:
		return SRMResult{}, fmt.Errorf("srm: negative group size (treated %d, holdout %d)", treated, held)
	case n == 0:
		return SRMResult{}, errors.New("srm: no units")
	case math.IsNaN(share) || share <= 0 || share >= 1:
		return SRMResult{}, fmt.Errorf("srm: share %v is not in (0, 1)", share)
	}
	eh, et := float64(n)*share, float64(n)*(1-share)
	dh, dt := float64(held)-eh, float64(treated)-et
	x := dh*dh/eh + dt*dt/et
	p := distuv.ChiSquared{K: 1}.Survival(x)
	return SRMResult{Treated: treated, Held: held, Share: share, ChiSq: x, P: p, Mismatch: p < SRMAlpha}, nil
}

// UnitOutcome is what one SKU × channel sold over a promotion window, with its own reference.
type UnitOutcome struct {
	SKU     string `json:"sku"`
	Channel string `json:"channel"`
	Group   Group  `json:"group"`
	// Sales are the units sold over the window (≥ 0).
	Sales float64 `json:"sales"`
	// Baseline is the unit's own reference for the same window: its sales over an equally long
	// period before it, or the forecast without promotion. Dividing by it puts units that sell 5 and
	// 5,000 a day on one scale, which narrows the interval far more than raw sales would. A unit whose
	// baseline is 0 says nothing about a ratio and is left out (counted in Excluded).
	Baseline float64 `json:"baseline"`
}

// LiftResult is the measured effect of a promotion on treated units against held-out ones. The
// per-unit response is y = Sales / Baseline; the lift is mean(y | treated) / mean(y | held), whose
// interval comes from the delta method on the log of the ratio (two independent means, variances
// not assumed equal, Welch–Satterthwaite degrees of freedom, Student's t quantile). The difference
// of the means has the plain Welch interval. Both intervals describe the average over units, not any
// one unit's lift.
type LiftResult struct {
	Level       float64 `json:"level"` // confidence level, e.g. 0.95
	Treated     int     `json:"treated"`
	Held        int     `json:"holdout"`
	Excluded    int     `json:"excluded"` // units with no baseline
	MeanTreated float64 `json:"mean_treated"`
	MeanHeld    float64 `json:"mean_holdout"`
	Lift        float64 `json:"lift"` // MeanTreated / MeanHeld
	LiftLo      float64 `json:"lift_lo"`
	LiftHi      float64 `json:"lift_hi"`
	Diff        float64 `json:"diff"` // MeanTreated − MeanHeld
	DiffLo      float64 `json:"diff_lo"`
	DiffHi      float64 `json:"diff_hi"`
	DF          float64 `json:"df"` // Welch–Satterthwaite degrees of freedom
	// SRM checks every unit given (excluded ones too: they were assigned like the others).
	SRM SRMResult `json:"srm"`
}

// Lift measures a holdout experiment of share over units at a confidence level in (0, 1).
func Lift(units []UnitOutcome, share, level float64) (LiftResult, error) {
	if math.IsNaN(level) || level <= 0 || level >= 1 {
		return LiftResult{}, fmt.Errorf("lift: confidence level %v is not in (0, 1)", level)
	}
	var t, h []float64
	var nt, nh, excluded int
	seen := make(map[[2]string]int, len(units))
	for i, u := range units {
		where := fmt.Sprintf("lift: units[%d] (%s/%s)", i, u.SKU, u.Channel)
		if j, dup := seen[[2]string{u.SKU, u.Channel}]; dup {
			return LiftResult{}, fmt.Errorf("%s: also units[%d]", where, j)
		}
		seen[[2]string{u.SKU, u.Channel}] = i
		if math.IsNaN(u.Sales) || math.IsInf(u.Sales, 0) || u.Sales < 0 {
			return LiftResult{}, fmt.Errorf("%s: sales %v must be a finite number ≥ 0", where, u.Sales)
		}
		if math.IsNaN(u.Baseline) || math.IsInf(u.Baseline, 0) || u.Baseline < 0 {
			return LiftResult{}, fmt.Errorf("%s: baseline %v must be a finite number ≥ 0", where, u.Baseline)
		}
		var dst *[]float64
		switch u.Group {
		case Treated:
			nt++
			dst = &t
		case Held:
			nh++
			dst = &h
		default:
			return LiftResult{}, fmt.Errorf("%s: group %q is neither %q nor %q", where, u.Group, Treated, Held)
		}
		if u.Baseline == 0 {
			excluded++
			continue
		}
		*dst = append(*dst, u.Sales/u.Baseline)
	}
	if nt+nh == 0 {
		return LiftResult{}, errors.New("lift: no units")
	}
	srm, err := SRM(nt, nh, share)
	if err != nil {
		return LiftResult{}, fmt.Errorf("lift: %w", err)
	}
	r := LiftResult{Level: level, Treated: len(t), Held: len(h), Excluded: excluded, SRM: srm}
	if len(t) < 2 || len(h) < 2 {
		return r, fmt.Errorf("lift: %d treated and %d held-out units with a baseline: need at least 2 of each", len(t), len(h))
	}
	mt, vt := meanVar(t)
	mh, vh := meanVar(h)
	r.MeanTreated, r.MeanHeld = mt, mh
	if mh <= 0 || mt <= 0 {
		return r, fmt.Errorf("lift: mean response %v (treated) / %v (holdout): no sales in a group, the ratio is undefined", mt, mh)
	}
	ft, fh := float64(len(t)), float64(len(h))
	q := 1 - (1-level)/2

	// Difference of means: Welch.
	st, sh := vt/ft, vh/fh
	r.Diff = mt - mh
	r.DF = welchDF(st, sh, ft, fh)
	tq := tQuantile(q, r.DF)
	se := math.Sqrt(st + sh)
	r.DiffLo, r.DiffHi = r.Diff-tq*se, r.Diff+tq*se

	// Ratio: delta method on log(mt/mh); var(log m) ≈ var(m)/m².
	lt, lh := st/(mt*mt), sh/(mh*mh)
	df := welchDF(lt, lh, ft, fh)
	lse := math.Sqrt(lt + lh)
	ltq := tQuantile(q, df)
	r.Lift = mt / mh
	r.LiftLo, r.LiftHi = r.Lift*math.Exp(-ltq*lse), r.Lift*math.Exp(ltq*lse)
	return r, nil
}

func meanVar(x []float64) (mean, variance float64) {
	for _, v := range x {
		mean += v
	}
	mean /= float64(len(x))
	for _, v := range x {
		variance += (v - mean) * (v - mean)
	}
	return mean, variance / float64(len(x)-1)
}

// welchDF is the Welch–Satterthwaite degrees of freedom of a sum of two variances of means a and b
// from samples of na and nb; a group without spread (both 0) falls back to the pooled count.
func welchDF(a, b, na, nb float64) float64 {
	den := a*a/(na-1) + b*b/(nb-1)
	if den == 0 {
		return na + nb - 2
	}
	return (a + b) * (a + b) / den
}

func tQuantile(p, df float64) float64 {
	return distuv.StudentsT{Mu: 0, Sigma: 1, Nu: df}.Quantile(p)
}
