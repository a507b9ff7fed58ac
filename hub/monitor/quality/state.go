package quality

import (
	"cmp"
	"math"
	"slices"
	"time"

	"github.com/gemba-io/gemba/signal"
)

// slice holds what one slice of event time contributed to a key: counts, the histogram over the
// configured edges (if any) and a bounded reservoir of values for KS.
type slice struct {
	idx        int64 // slice number (unix ns / slice width); -1: unused
	total, bad uint32
	seen       uint32 // finite values seen (the reservoir's n)
	hist       []uint32
	res        []float32
}

// keyState is the monitor's state of one hub feature × key. It is changed only by the fold (in
// log order, identically on every replica) and read under the monitor's lock.
type keyState struct {
	feature, key string
	seed         uint64
	width        int64       // slice width, ns
	resCap       int         // reservoir per slice
	th           *Thresholds // shared by the feature's keys
	maxAge       time.Duration

	newest time.Time // newest event time of a value or sample
	fed    time.Time // log time of the last value or sample (keys not fed for the retention go first)
	feeder streamRef // the agent stream of the newest value
	count  uint64
	cur    int64   // newest slice number seen
	span   int     // slices kept: the reference window, the lag and the current slice
	ring   []slice // the slices holding data, by ascending idx (a key fed rarely holds few)

	// the last evaluation
	psi, ks, ksP, badShare float64
	curN, refN             int
	drifting, bad          bool
	sameWindows            bool // both windows held one and the same value: the drift verdict stood
	driftSince, badSince   time.Time
	driftV, badV           verdict
	// the run of one value (event time): the stuck verdict, from the values alone (not the windows),
	// so that a replica whose log starts with the value already stuck judges it as the others do
	stuckAfter     time.Duration // 0: not judged
	runV           float64
	runFrom, runTo time.Time // event times of the run's first and newest values
	runBreak       time.Time // the newest different value before the run: it reaches back no further
	runN           uint64
	stuck          bool
	stuckSince     time.Time
	// stale is the last staleness this replica reported (clock-driven, by the ticker)
	stale      bool
	staleSince time.Time
}

// streamRef names one agent's buffer stream in one incarnation.
type streamRef struct {
	Agent       string
	Stream      signal.Stream
	Incarnation string
}

func newKeyState(feature, key string, th *Thresholds, maxAge time.Duration, span int, width time.Duration, resCap int) *keyState {
	return &keyState{feature: feature, key: key, seed: hashString(feature + "\x00" + key), th: th, maxAge: maxAge,
		width: int64(width), resCap: resCap, span: span, cur: math.MinInt64, psi: math.NaN(), ks: math.NaN(), ksP: math.NaN()}
}

// entry returns the slice s, added if new; nil when s is older than the span reaches (a late
// value past the reference window: ignored). Slices that fall out of the span are dropped.
func (k *keyState) entry(s int64) *slice {
	cur := max(k.cur, s)
	if s <= cur-int64(k.span) {
		return nil
	}
	// Values mostly arrive in time order: look from the newest end.
	i := len(k.ring)
	for i > 0 && k.ring[i-1].idx > s {
		i--
	}
	if i > 0 && k.ring[i-1].idx == s {
		return &k.ring[i-1]
	}
	k.ring = slices.Insert(k.ring, i, slice{idx: s})
	drop := 0
	for drop < len(k.ring) && k.ring[drop].idx <= cur-int64(k.span) {
		drop++
	}
	if drop > 0 {
		k.ring = slices.Delete(k.ring, 0, drop)
		i -= drop
	}
	return &k.ring[i]
}

// find returns slice s, or nil when it holds nothing.
func (k *keyState) find(s int64) *slice {
	i, ok := slices.BinarySearchFunc(k.ring, s, func(e slice, s int64) int { return cmp.Compare(e.idx, s) })
	if !ok {
		return nil
	}
	return &k.ring[i]
}

// add folds a value (value set: total 1, bad 1 when it is not usable) or sample counts at event
// time t into its slice.
func (k *keyState) add(t time.Time, v float64, total, bad uint32, value bool) {
	s := k.sliceOf(t)
	if t.After(k.newest) {
		k.newest = t
	}
	if s > k.cur {
		k.cur = s
	}
	e := k.entry(s)
	if e == nil {
		return
	}
	e.total += total
	e.bad += bad
	if !value || bad > 0 {
		return
	}
	k.count++
	if len(k.th.Edges) > 0 {
		if e.hist == nil {
			e.hist = make([]uint32, len(k.th.Edges)+1)
		}
		e.hist[searchEdges(k.th.Edges, v)]++
	}
	// Reservoir sampling (algorithm R) with a hash of the key and the count for its randomness:
	// the same values in the same order keep the same reservoir on every replica.
	e.seen++
	if len(e.res) < k.resCap {
		e.res = append(e.res, float32(v))
	} else if j := mix64(k.seed^uint64(e.seen)*0x9e3779b97f4a7c15^uint64(s)) % uint64(e.seen); j < uint64(k.resCap) {
		e.res[j] = float32(v)
	}
}

func searchEdges(edges []float64, v float64) int {
	lo, hi := 0, len(edges)
	for lo < hi {
		m := (lo + hi) / 2
		if edges[m] < v {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// window gathers slices [from, to]: counts (of the finite values seen too), the histogram and the
// reservoir values.
func (k *keyState) window(from, to int64) (total, bad, seen uint64, hist []float64, vals []float64) {
	if len(k.th.Edges) > 0 {
		hist = make([]float64, len(k.th.Edges)+1)
	}
	vals = make([]float64, 0, int(to-from+1)*k.resCap)
	for s := from; s <= to; s++ {
		e := k.find(s)
		if e == nil {
			continue
		}
		total += uint64(e.total)
		bad += uint64(e.bad)
		seen += uint64(e.seen)
		for i, c := range e.hist {
			hist[i] += float64(c)
		}
		for _, x := range e.res {
			vals = append(vals, float64(x))
		}
	}
	return total, bad, seen, hist, vals
}

// evaluate judges the current window ending at slice end against the reference window lag slices
// earlier, and returns what changed.
func (k *keyState) evaluate(end int64, perWindow, lag int) (driftChanged, badChanged bool) {
	from := end - int64(perWindow) + 1
	total, bad, curSeen, curHist, cur := k.window(from, end)
	_, _, refSeen, refHist, ref := k.window(from-int64(lag), end-int64(lag))
	k.curN, k.refN = len(cur), len(ref)
	k.badShare = math.NaN()
	if total > 0 {
		k.badShare = float64(bad) / float64(total)
	}
	k.psi, k.ks, k.ksP = math.NaN(), math.NaN(), math.NaN()
	drifting := false
	// min_count counts the values each window saw, not the reservoir kept of them (at most
	// samples: a min_count above it would otherwise never let drift be judged).
	enough := curSeen >= uint64(max(k.th.MinCount, 1)) && refSeen >= uint64(max(k.th.MinCount, 1)) && len(cur) > 0 && len(ref) > 0
	k.sameWindows = enough && constant(cur) && constant(ref) && cur[0] == ref[0]
	if k.sameWindows {
		// Both windows hold one and the same value: a sensor stuck for longer than reference_lag
		// + window, compared with its own stuck past (D 0). That says nothing of a recovery: the
		// verdict stands until the value moves. A reference with a few values from before it stuck
		// reads as no drift, and a sensor constant from the start is never drifting: the stuck
		// verdict (run) judges those.
		drifting = k.drifting
		k.psi, k.ks, k.ksP = 0, 0, 1
	} else if enough {
		if curHist != nil {
			k.psi = psi(refHist, curHist)
		} else {
			k.ks, k.ksP = ks(ref, cur) // sorts both
			// PSI's sampling noise grows with bins/n (about (bins-1)·(1/n+1/m) for equal
			// distributions): with reservoirs of a hundred or so values, ten bins alone would read
			// as drift. At least 25 values per bin.
			edges := quantileEdges(ref, min(k.th.Bins, max(2, min(len(ref), len(cur))/25)))
			k.psi = psi(binsOf(ref, edges), binsOf(cur, edges))
		}
		if math.IsNaN(k.ks) {
			k.ks, k.ksP = ks(ref, cur)
		}
		// Large enough (PSI or D at its threshold) and significant (KS p-value below alpha):
		// PSI alone has no notion of sample size, and on reservoirs of a hundred values its
		// noise reaches 0.3 now and then.
		drifting = (k.psi >= k.th.PSI || k.ks >= k.th.KS) && k.ksP < k.th.KSAlpha
	} else {
		// Too few values to judge by (no reference after a long gap, a sensor sending less as it
		// fails): the verdict stands, rather than read as a recovery.
		drifting = k.drifting
	}
	isBad := k.bad // likewise
	if total >= uint64(max(k.th.MinCount, 1)) {
		isBad = k.badShare >= k.th.BadShare
	}
	at := time.Unix(0, (end+1)*k.width).UTC()
	driftChanged = k.driftV.judge(drifting, at, k.th.Confirm)
	badChanged = k.badV.judge(isBad, at, k.th.Confirm)
	k.drifting, k.driftSince = k.driftV.on, k.driftV.since
	k.bad, k.badSince = k.badV.on, k.badV.since
	return driftChanged, badChanged
}

// run folds a usable value at event time t into the run of one value and reports whether the
// stuck verdict changed. A value equal to the run's (within 1e-9 relative: a window's mean of one
// repeated reading may differ in its last bit) extends it, back no further than the newest
// different value before it; a different one newer than the run starts a new run (recovery); one
// older than the run is history before it; one in between (reported late) means the run holds
// only since then. Stuck: the run spans stuck_after and holds at least min_count values. Derived
// from the values' event times, not from when they were folded: a replica whose log starts inside
// the run judges it stuck once the part it holds spans stuck_after, which the log keeps.
func (k *keyState) run(t time.Time, v float64) (changed bool) {
	switch {
	case k.runN == 0:
		k.runV, k.runFrom, k.runTo, k.runN = v, t, t, 1
	case same(v, k.runV):
		if t.Before(k.runFrom) {
			if !t.After(k.runBreak) {
				return false // before a different value: not this run
			}
			k.runFrom = t
		}
		k.runN++
		if t.After(k.runTo) {
			k.runTo = t
		}
	case !t.Before(k.runTo): // newer than the run: a new one
		k.runBreak = k.runTo
		k.runV, k.runFrom, k.runTo, k.runN = v, t, t, 1
	case t.Before(k.runFrom):
		if t.After(k.runBreak) {
			k.runBreak = t
		}
		return false
	default: // late, inside the run: it holds since then (its values since are not known apart: counted from 1)
		k.runBreak, k.runFrom, k.runN = t, t, 1
	}
	stuck := k.stuckAfter > 0 && k.runTo.Sub(k.runFrom) >= k.stuckAfter && k.runN >= uint64(max(k.th.MinCount, 1))
	if stuck == k.stuck {
		return false
	}
	k.stuck = stuck
	k.stuckSince = t
	if stuck {
		k.stuckSince = k.runFrom.Add(k.stuckAfter)
	}
	return true
}

// same reports whether a and b are one value, to 1e-9 relative.
func same(a, b float64) bool {
	return a == b || math.Abs(a-b) <= 1e-9*max(math.Abs(a), math.Abs(b))
}

// constant reports whether every value of xs (not empty) is the same.
func constant(xs []float64) bool {
	for _, x := range xs[1:] {
		if x != xs[0] {
			return false
		}
	}
	return true
}

// verdict is a breach judged over consecutive evaluations: it changes only after confirm
// evaluations in a row disagree with it, so one noisy window does not flap it (with a few
// thousand evaluations a day per key, single-window false alarms would add up).
type verdict struct {
	on      bool
	since   time.Time
	streak  int
	pending time.Time // when the current streak began
}

func (v *verdict) judge(now bool, at time.Time, confirm int) bool {
	if now == v.on {
		v.streak = 0
		return false
	}
	if v.streak == 0 {
		v.pending = at
	}
	v.streak++
	if v.streak < max(confirm, 1) {
		return false
	}
	v.on, v.since, v.streak = now, v.pending, 0
	return true
}

// sliceOf is the slice number of t (floor division: times before 1970 too).
func (k *keyState) sliceOf(t time.Time) int64 {
	n := t.UnixNano()
	s := n / k.width
	if n < 0 && n%k.width != 0 {
		s--
	}
	return s
}
