package inventory

import (
	"cmp"
	"math"
	"slices"
	"time"
)

// move is one movement kept in a key's value: its identity, event time and signed quantity.
type move struct {
	id    string
	t     int64   // event time, Unix nanoseconds
	q     float64 // + produced, − sold
	fresh bool    // applied by this operation (not stored)
}

// dayQty is the units sold on one UTC day (days since the Unix epoch).
type dayQty struct {
	day int64
	q   float64
}

// recentCap is how many ids of movements applied straight to the base (or folded by the write that applied
// them) a value remembers: enough to recognise our own write when a timed-out Update is retried, which happens
// within seconds.
const recentCap = 32

// state is the whole value of one key. The list and the base are what make late snapshots exact; the summary
// (produced, sold, rate, updated) is derived from them and written first so the watchers decode only that.
type state struct {
	hasSnap bool
	snapID  string
	snapT   int64
	onHand  float64

	// base: movements after the snapshot that were folded out of the list, and the span of their times.
	hasBase            bool
	baseProd, baseSold float64
	baseMin, baseMax   int64

	moves  []move   // sorted by (t, id)
	days   []dayQty // sorted by day
	recent []string // ids applied straight to the base, oldest first

	produced, sold, rate float64
	updated              int64

	folded     int // movements folded by this operation (not stored)
	remembered int // ids this operation put in recent (not stored)
}

// summary is what the in-memory view keeps of a key.
type summary struct {
	onHand, produced, sold, rate float64
	snapT, updated               int64 // 0: none
	rev                          uint64
}

func (st *state) summary() summary {
	s := summary{onHand: st.onHand, produced: st.produced, sold: st.sold, rate: st.rate, updated: st.updated}
	if st.hasSnap {
		s.snapT = st.snapT
	}
	return s
}

// position builds the public position of a summary.
func (s summary) position(site, sku string) Position {
	p := Position{SKU: sku, Site: site, OnHand: s.onHand, Produced: s.produced, Sold: s.sold,
		Position: s.onHand + s.produced - s.sold, DailyRate: s.rate, Revision: s.rev}
	if s.snapT != 0 {
		p.SnapshotTime = time.Unix(0, s.snapT).UTC()
	}
	if s.updated != 0 {
		p.Updated = time.Unix(0, s.updated).UTC()
	}
	switch {
	case p.Position <= 0:
		p.DaysOfCover, p.StockOut = 0, p.Updated
	case s.rate <= 0:
		p.DaysOfCover = math.Inf(1)
	default:
		p.DaysOfCover = p.Position / s.rate
		if d := p.DaysOfCover * float64(24*time.Hour); d < float64(200*365*24*time.Hour) {
			p.StockOut = p.Updated.Add(time.Duration(d))
		}
	}
	return p
}

// covered reports whether an event at t is already in the current snapshot's count.
func (st *state) covered(t int64) bool { return st.hasSnap && t <= st.snapT }

func (st *state) addBase(t int64, q float64) {
	if q > 0 {
		st.baseProd += q
	} else {
		st.baseSold -= q
	}
	if !st.hasBase {
		st.hasBase, st.baseMin, st.baseMax = true, t, t
		return
	}
	st.baseMin, st.baseMax = min(st.baseMin, t), max(st.baseMax, t)
}

// fold moves the movements older than cutoff, and the oldest beyond maxMoves, out of the list: into the base
// when the snapshot does not cover them, nowhere when it does. It returns how many it folded. A movement
// this operation applied keeps its id in recent, so that the retry of a write whose reply was lost
// recognises it.
func (st *state) fold(cutoff int64, maxMoves int) int {
	n := 0
	for n < len(st.moves) && (st.moves[n].t < cutoff || len(st.moves)-n > maxMoves) {
		m := st.moves[n]
		if !st.covered(m.t) {
			st.addBase(m.t, m.q)
		}
		if m.fresh {
			st.remember(m.id)
		}
		n++
	}
	st.moves = st.moves[n:]
	st.folded += n
	return n
}

func (st *state) has(id string) bool {
	for i := range st.moves {
		if st.moves[i].id == id {
			return true
		}
	}
	return slices.Contains(st.recent, id)
}

func (st *state) remember(id string) {
	if len(st.recent) >= recentCap {
		st.recent = st.recent[len(st.recent)-recentCap+1:]
	}
	st.recent = append(st.recent, id)
	st.remembered++
}

func unixDay(t int64) int64 {
	const day = int64(24 * time.Hour)
	d := t / day
	if t%day < 0 {
		d--
	}
	return d
}

// addSale counts q units sold at t in its day's bucket, if that day is still kept.
func (st *state) addSale(t int64, q float64, firstDay int64) {
	d := unixDay(t)
	if d < firstDay {
		return
	}
	i, ok := slices.BinarySearchFunc(st.days, d, func(x dayQty, d int64) int { return cmp.Compare(x.day, d) })
	if ok {
		st.days[i].q += q
		return
	}
	st.days = slices.Insert(st.days, i, dayQty{d, q})
}

// clock carries what one operation needs from the config and the hub clock.
type clock struct {
	now, cutoff int64 // Unix ns; cutoff = now − horizon
	today       int64 // UTC day of now
	keepDays    int64 // demand days kept
	window      int64 // moving-average days
	maxMoves    int
}

func newClock(cfg *Config, now time.Time) clock {
	n := now.UnixNano()
	return clock{now: n, cutoff: n - int64(cfg.Horizon), today: unixDay(n), keepDays: int64(cfg.DemandDays),
		window: int64(cfg.RateWindow), maxMoves: cfg.MaxMovements}
}

func (c clock) firstDay() int64 { return c.today - c.keepDays + 1 }

// finish drops expired demand buckets and recomputes the summary after a change.
func (st *state) finish(c clock) {
	first := c.firstDay()
	i := 0
	for i < len(st.days) && st.days[i].day < first {
		i++
	}
	st.days = st.days[i:]
	var sum float64
	for _, d := range st.days {
		if d.day >= c.today-c.window && d.day < c.today {
			sum += d.q
		}
	}
	st.rate = sum / float64(c.window)
	st.produced, st.sold = 0, 0
	if st.hasBase {
		st.produced, st.sold = st.baseProd, st.baseSold
	}
	// The list is sorted, so the sum runs in the same order whatever order the movements arrived in.
	for _, m := range st.moves {
		switch {
		case st.covered(m.t):
		case m.q > 0:
			st.produced += m.q
		default:
			st.sold -= m.q
		}
	}
	st.updated = c.now
}

// applyMove applies m and reports the outcome and whether the value changed (and must be written).
func (st *state) applyMove(m *Movement, c clock) (Outcome, bool) {
	st.fold(c.cutoff, c.maxMoves)
	if st.has(m.ID) {
		return Duplicate, false
	}
	t, q := m.Time.UnixNano(), m.Qty
	if m.Kind == Sold {
		q = -q
	}
	covered := st.covered(t)
	var out Outcome
	switch {
	case covered && m.Kind != Sold && m.Kind != Returned:
		// Already in the count and no demand to record: nothing to keep. A duplicate of it is reported
		// as before_snapshot again, which changes nothing either.
		return BeforeSnapshot, false
	case t < c.cutoff && covered:
		st.remember(m.ID)
		out = BeforeSnapshot
	case t < c.cutoff:
		st.addBase(t, q)
		st.remember(m.ID)
		out = AppliedUnverified
	default:
		i, _ := slices.BinarySearchFunc(st.moves, m, func(x move, m *Movement) int {
			return cmp.Or(cmp.Compare(x.t, t), cmp.Compare(x.id, m.ID))
		})
		st.moves = slices.Insert(st.moves, i, move{m.ID, t, q, true})
		st.fold(c.cutoff, c.maxMoves)
		out = Applied
		if covered {
			out = BeforeSnapshot // kept for the demand rate's idempotence only
		}
	}
	switch m.Kind {
	case Sold:
		st.addSale(t, m.Qty, c.firstDay())
	case Returned:
		st.addSale(t, -m.Qty, c.firstDay())
	}
	st.finish(c)
	return out, true
}

// applySnapshot replaces the snapshot by sn if it is newer, and reports the outcome and whether the value
// changed.
func (st *state) applySnapshot(sn *Snapshot, c clock) (Outcome, bool) {
	st.fold(c.cutoff, c.maxMoves)
	t := sn.Time.UnixNano()
	if st.hasSnap {
		switch cmp.Or(cmp.Compare(t, st.snapT), cmp.Compare(sn.ID, st.snapID)) {
		case 0:
			return Duplicate, false
		case -1:
			return Stale, false
		}
	}
	if st.hasBase {
		switch {
		case t >= st.baseMax: // the count includes everything folded
			st.hasBase, st.baseProd, st.baseSold, st.baseMin, st.baseMax = false, 0, 0, 0, 0
		case t < st.baseMin: // the count includes none of it
		default:
			return BeyondHorizon, false
		}
	}
	st.hasSnap, st.snapID, st.snapT, st.onHand = true, sn.ID, t, sn.OnHand
	// Covered movements keep their ids until the horizon: a covered sale or return delivered again
	// must not change the demand rate twice, and a kept positive movement may be either.
	st.finish(c)
	return Applied, true
}
