package features

import (
	"math"
	"slices"

	"github.com/DataDog/sketches-go/ddsketch"
	"github.com/DataDog/sketches-go/ddsketch/store"
)

// sketchAccuracy is the relative accuracy of percentiles (DDSketch): a reported p95 is within 1%
// of a value whose rank is the 95th percentile.
const sketchAccuracy = 0.01

// exactBudget is how many sample values a window keeps for exact percentiles (1 KiB), split
// evenly over its panes. A window whose panes all stayed within their share gets exact Hyndman–Fan
// type 7 percentiles; beyond it, the same definition is applied to the sketch's order statistics.
const exactBudget = 128

// sketchBins bounds a sketch's bins (per sign); with 1% accuracy 2048 bins span 18 orders of
// magnitude before the lowest bins collapse.
const sketchBins = 2048

// pane holds the mergeable statistics of one hop-long slice of a gauge signal. Fields are exported
// for the checkpoint encoder.
type pane struct {
	Idx           int64
	N, Bad, Excl  int64
	Sum, Mean, M2 float64 // M2: Welford's sum of squared deviations
	Min, Max      float64
	FirstT, LastT int64
	FirstV, LastV float64
	TwI           float64 // time-weighted integral (value × seconds) of the held value
	TwD           int64   // ns covered by TwI
	EWMA          float64 // ewma after the pane's last in-order sample
	EWMAT         int64
	EWMAOK        bool
	Vals          []float64 // good values while at most rule.exactCap (percentiles)
	Over          bool      // more than exactCap values: percentiles come from the sketch
	sk            *ddsketch.DDSketch
}

func (e *Engine) newSketch() *ddsketch.DDSketch {
	return ddsketch.NewDDSketch(e.mapping, store.NewCollapsingLowestDenseStore(sketchBins), store.NewCollapsingLowestDenseStore(sketchBins))
}

// pane returns the pane with index p, creating it in order.
func (s *series) pane(e *Engine, p int64) *pane {
	i := len(s.panes) - 1
	for ; i >= 0; i-- {
		if s.panes[i].Idx == p {
			return s.panes[i]
		}
		if s.panes[i].Idx < p {
			break
		}
	}
	var pn *pane
	if n := len(s.free); n > 0 {
		pn = s.free[n-1]
		s.free[n-1] = nil
		s.free = s.free[:n-1]
		sk, vals := pn.sk, pn.Vals[:0]
		*pn = pane{sk: sk, Vals: vals}
	} else {
		pn = &pane{}
	}
	pn.Idx = p
	if s.r.sketch {
		if pn.sk == nil {
			pn.sk = e.newSketch()
		} else {
			pn.sk.Clear()
		}
	}
	s.panes = append(s.panes, nil)
	copy(s.panes[i+2:], s.panes[i+1:])
	s.panes[i+1] = pn
	return pn
}

func (s *series) release(pn *pane) {
	if len(s.free) < 4 {
		s.free = append(s.free, pn)
	}
}

func (s *series) foldGauge(e *Engine, p, t int64, v float64, bad, excl bool) {
	pn := s.pane(e, p)
	if bad || excl {
		if bad {
			pn.Bad++
		} else {
			pn.Excl++
		}
		// A Bad (or excluded) sample carries no value, but it is in-order evidence that the held
		// value lasted until then: add the hold now, or a window closed by this sample (the
		// first one after it) would lose the held tail. The hold then continues to the next good
		// sample, so the position of a Bad sample never changes twa.
		if s.HoldOK && t > s.HoldT {
			if s.r.twa {
				s.hold(e, s.HoldT, t, s.HoldV)
			}
			s.HoldT = t
		}
		return
	}
	pn.N++
	pn.Sum += v
	d := v - pn.Mean
	pn.Mean += d / float64(pn.N)
	pn.M2 += d * (v - pn.Mean)
	if pn.N == 1 {
		pn.Min, pn.Max, pn.FirstT, pn.FirstV, pn.LastT, pn.LastV = v, v, t, v, t, v
	} else {
		pn.Min, pn.Max = min(pn.Min, v), max(pn.Max, v)
		if t < pn.FirstT {
			pn.FirstT, pn.FirstV = t, v
		}
		if t >= pn.LastT {
			pn.LastT, pn.LastV = t, v
		}
	}
	r := s.r
	if r.sketch {
		_ = pn.sk.Add(v) // finite by construction; beyond ±1e308 is refused and ignored
		if !pn.Over {
			if len(pn.Vals) < r.exactCap {
				if pn.Vals == nil {
					// once, at full size: panes are reused with their values' capacity
					pn.Vals = make([]float64, 0, r.exactCap)
				}
				pn.Vals = append(pn.Vals, v)
			} else {
				pn.Over, pn.Vals = true, pn.Vals[:0]
			}
		}
	}
	// ewma and the time-weighted mean follow the signal in time order; an out-of-order sample
	// still counts in every other statistic.
	if s.HoldOK && t < s.HoldT { // HoldT: the newest in-order sample, a Bad one included
		return
	}
	if r.twa && s.HoldOK {
		s.hold(e, s.HoldT, t, s.HoldV)
	}
	s.HoldT, s.HoldV, s.HoldOK, s.LastT = t, v, true, t
	if r.ewma {
		if s.EWMAOK {
			s.EWMA = r.alpha*v + (1-r.alpha)*s.EWMA
		} else {
			s.EWMA, s.EWMAOK = v, true
		}
		pn.EWMA, pn.EWMAT, pn.EWMAOK = s.EWMA, t, true
	}
}

// hold adds value v held over [t0, t1) to the panes it overlaps (sample-and-hold interpolation).
// Panes without samples inside [t0, t1) are created next to either end, within a window's reach
// (at most 2·panes of them): the windows holding t0's or t1's pane also hold the value across those
// empty panes, and a window whose last panes are empty must not lose its held tail.
func (s *series) hold(e *Engine, t0, t1 int64, v float64) {
	if t1 <= t0 {
		return
	}
	hop, m := s.r.hop, s.r.panes
	p0, p1 := floorDiv(t0, hop), floorDiv(t1-1, hop)
	need := s.Closed + 2 - m // the first pane an open window still covers
	for p := max(p0, need); p <= min(p1, p0+m-1); p++ {
		s.pane(e, p)
	}
	for p := max(p1-m+1, p0+m, need); p <= p1; p++ {
		s.pane(e, p)
	}
	for i := len(s.panes) - 1; i >= 0; i-- {
		pn := s.panes[i]
		ps, pe := pn.Idx*hop, (pn.Idx+1)*hop
		if pe <= t0 {
			break
		}
		lo, hi := max(ps, t0), min(pe, t1)
		if hi > lo {
			pn.TwI += v * float64(hi-lo) / 1e9
			pn.TwD += hi - lo
		}
	}
}

// merge folds b into a (Chan et al.'s parallel variance).
func (a *pane) merge(b *pane) {
	a.Bad += b.Bad
	a.Excl += b.Excl
	a.TwI += b.TwI
	a.TwD += b.TwD
	if b.EWMAOK && (!a.EWMAOK || b.EWMAT >= a.EWMAT) {
		a.EWMA, a.EWMAT, a.EWMAOK = b.EWMA, b.EWMAT, true
	}
	if b.N == 0 {
		return
	}
	if a.N == 0 {
		a.N, a.Sum, a.Mean, a.M2, a.Min, a.Max = b.N, b.Sum, b.Mean, b.M2, b.Min, b.Max
		a.FirstT, a.FirstV, a.LastT, a.LastV = b.FirstT, b.FirstV, b.LastT, b.LastV
		return
	}
	n := a.N + b.N
	d := b.Mean - a.Mean
	a.Mean += d * float64(b.N) / float64(n)
	a.M2 += b.M2 + d*d*float64(a.N)*float64(b.N)/float64(n)
	a.N, a.Sum = n, a.Sum+b.Sum
	a.Min, a.Max = min(a.Min, b.Min), max(a.Max, b.Max)
	if b.FirstT < a.FirstT {
		a.FirstT, a.FirstV = b.FirstT, b.FirstV
	}
	if b.LastT >= a.LastT {
		a.LastT, a.LastV = b.LastT, b.LastV
	}
}

// closeGauge emits windows Closed+1..kmax that hold at least one pane and returns how many.
func (s *series) closeGauge(e *Engine, kmax int64, idle bool) int {
	m := s.r.panes
	n, i := 0, 0
	for k := s.Closed + 1; k <= kmax; {
		lo := k - m + 1
		for i < len(s.panes) && s.panes[i].Idx < lo {
			i++
		}
		if i == len(s.panes) {
			break
		}
		if s.panes[i].Idx > k {
			k = s.panes[i].Idx // skip windows without data
			continue
		}
		var a pane
		var sk *ddsketch.DDSketch
		exact := s.r.sketch
		e.vals = e.vals[:0]
		for j := i; j < len(s.panes) && s.panes[j].Idx <= k; j++ {
			a.merge(s.panes[j])
			if exact {
				if s.panes[j].Over {
					exact = false
				}
				e.vals = append(e.vals, s.panes[j].Vals...)
			}
			if s.r.sketch {
				if m == 1 {
					sk = s.panes[j].sk
				} else {
					if sk == nil {
						if e.scratch == nil {
							e.scratch = e.newSketch()
						}
						sk = e.scratch
						sk.Clear()
					}
					_ = sk.MergeWith(s.panes[j].sk)
				}
			}
		}
		start, end := s.window(k)
		var vals []float64
		if exact {
			vals = e.vals
			slices.Sort(vals)
		}
		s.emitGauge(e, &a, sk, vals, start, end, s.partial(start, end, idle))
		n++
		k++
	}
	return n
}

// emitGauge emits the records of one window; vals are its values sorted when the window kept them
// all (exact percentiles), else nil (percentiles from the sketch).
func (s *series) emitGauge(e *Engine, a *pane, sk *ddsketch.DDSketch, vals []float64, start, end int64, partial bool) {
	r := s.r
	if a.N > 0 {
		for _, f := range r.src.Compute {
			var v float64
			switch f {
			case "count":
				v = float64(a.N)
			case "sum":
				v = a.Sum
			case "mean":
				v = a.Mean
			case "min":
				v = a.Min
			case "max":
				v = a.Max
			case "stddev":
				v = math.Sqrt(a.M2 / float64(a.N))
			case "first":
				v = a.FirstV
			case "last":
				v = a.LastV
			case "delta":
				v = a.LastV - a.FirstV
			case "rate":
				if a.LastT == a.FirstT {
					continue
				}
				v = (a.LastV - a.FirstV) / (float64(a.LastT-a.FirstT) / 1e9)
			case "ewma":
				if !a.EWMAOK {
					continue
				}
				v = a.EWMA
			case "twa":
				v = a.Mean
				if a.TwD > 0 {
					v = a.TwI / (float64(a.TwD) / 1e9)
				}
			default:
				q, ok := quantileOf(r, f)
				if !ok {
					continue
				}
				if len(vals) == int(a.N) {
					v = type7(q, len(vals), func(i int) float64 { return vals[i] })
				} else {
					if sk == nil || sk.GetCount() < 1 {
						continue
					}
					v = type7(q, int(sk.GetCount()), func(i int) float64 { return sketchRank(sk, i) })
					v = min(max(v, a.Min), a.Max) // the sketch's bins may lie beyond the exact extremes
				}
			}
			e.emit(s, r.name(f), start, end, v, a.N, partial, nil)
		}
	}
	s.emitQuality(e, a.Bad, a.Excl, start, end, partial)
}

func (s *series) emitQuality(e *Engine, bad, excl, start, end int64, partial bool) {
	if bad > 0 {
		e.emit(s, "bad_count", start, end, float64(bad), bad, partial, nil)
	}
	if excl > 0 {
		e.emit(s, "uncertain_count", start, end, float64(excl), excl, partial, nil)
	}
}

// type7 is the Hyndman–Fan type 7 sample quantile (R's and numpy's default): linear interpolation
// between the order statistics x[floor(h)] and x[floor(h)+1], h = q·(n−1), 0-based; at(i) returns
// the i-th smallest of n values.
func type7(q float64, n int, at func(i int) float64) float64 {
	h := q * float64(n-1)
	lo := math.Floor(h)
	i := int(lo)
	v := at(i)
	if f := h - lo; f > 0 && i+1 < n {
		v += f * (at(i+1) - v)
	}
	return v
}

// sketchRank returns the sketch's estimate of the r-th smallest value (0-based). The sketch looks
// ranks up as "first bin whose cumulative count exceeds q·(n−1)", counting negative values from the
// most negative one: asking for r±0.25 lands on the bin holding element r on either side.
func sketchRank(sk *ddsketch.DDSketch, r int) float64 {
	n := sk.GetCount()
	if n <= 1 {
		v, _ := sk.GetValueAtQuantile(0)
		return v
	}
	rr := float64(r) + 0.25
	if float64(r) < sk.GetNegativeValueStore().TotalCount() {
		rr = float64(r) - 0.25
	}
	q := min(max(rr/(n-1), 0), 1)
	v, _ := sk.GetValueAtQuantile(q)
	return v
}

func quantileOf(r *rule, f string) (float64, bool) {
	for _, q := range r.quantiles {
		if q.name == f {
			return q.q, true
		}
	}
	return 0, false
}
