package inventory

import (
	"cmp"
	"math"
	"slices"
	"time"
)

// move is one movement kept in a key's value: its identity, event time and signed quantity.
type move struct {
	id string
	t  int64   // event time, Unix nanoseconds
	q  float64 // + produced, − sold
}

// gone is the id of a movement that is not (or no longer) in the list: applied straight to the base or
// to the demand, or folded out of the list; at is when, by the hub clock (Unix seconds).
type gone struct {
	id string
	at int64
}

// dayQty is the units sold on one UTC day (days since the Unix epoch).
type dayQty struct {
	day int64
	q   float64
}

// A value remembers the ids of movements that are not in its list (applied straight to the base, or
// folded out of the list) for the horizon after they left it, by the hub clock: a batch moved and not
// marked done when its replica died comes back (to another replica, or after a restart) and must find
// its movements, whatever their age. They share the list's bound: at most max(recentCap, max_movements
// − movements in the list), the oldest forgotten first, so a value never holds more ids than a full
// list and recentCap did before. recentCap is also what a write whose reply was lost needs to recognise
// its own (MoveAll writes at most that many such movements at once).
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
	recent []gone   // ids of movements not in the list, oldest first

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

// fold moves the movements older than the cutoff, and the oldest beyond maxMoves, out of the list: into the
// base when the snapshot does not cover them, nowhere when it does; their ids are remembered (recent),
// within a bound of max(recentCap, maxMoves − the list). It returns how many it folded.
func (st *state) fold(c clock, maxMoves int) int {
	n := 0
	for n < len(st.moves) && (st.moves[n].t < c.cutoff || len(st.moves)-n > maxMoves) {
		m := st.moves[n]
		if !st.covered(m.t) {
			st.addBase(m.t, m.q)
		}
		st.remember(m.id, c)
		n++
	}
	st.moves = st.moves[n:]
	st.folded += n
	st.forget(c, maxMoves)
	return n
}

// fit encodes the state into b, made to fit in limit bytes (one message) if it can: the older half of the
// remembered ids is forgotten, down to recentCap, then the older half of the list folded early, until it
// fits (documented limit for hot keys).
func (st *state) fit(c clock, b []byte, limit int) []byte {
	b = st.encode(b)
	for len(b) > limit && (len(st.moves) > 0 || len(st.recent) > recentCap) {
		if len(st.recent) > recentCap {
			st.recent = st.recent[len(st.recent)-max(recentCap, len(st.recent)/2):]
		} else {
			st.fold(c, len(st.moves)/2)
		}
		st.finish(c)
		b = st.encode(b[:0])
	}
	return b
}

func (st *state) has(id string) bool {
	for i := range st.moves {
		if st.moves[i].id == id {
			return true
		}
	}
	for i := range st.recent {
		if st.recent[i].id == id {
			return true
		}
	}
	return false
}

func (st *state) remember(id string, c clock) {
	st.recent = append(st.recent, gone{id, c.now / int64(time.Second)})
	st.remembered++
}

// forget drops the remembered ids the horizon has passed, then the oldest beyond
// max(recentCap, maxMoves − the list), never one this operation remembered (a retry after a lost
// reply must recognise them; they left the list in this operation, or are at most a MoveAll write's).
func (st *state) forget(c clock, maxMoves int) {
	st.recent = slices.DeleteFunc(st.recent, func(g gone) bool { return g.at*int64(time.Second) < c.cutoff })
	if keep := max(recentCap, maxMoves-len(st.moves), st.remembered); len(st.recent) > keep {
		st.recent = slices.Delete(st.recent, 0, len(st.recent)-keep)
	}
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
	st.forget(c, c.maxMoves)
	st.updated = c.now
}

// applyMove applies m and reports the outcome and whether the value changed (and must be written).
func (st *state) applyMove(m *Movement, c clock) (Outcome, bool) {
	st.fold(c, c.maxMoves)
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
		st.remember(m.ID, c)
		out = BeforeSnapshot
	case t < c.cutoff:
		st.addBase(t, q)
		st.remember(m.ID, c)
		out = AppliedUnverified
	default:
		i, _ := slices.BinarySearchFunc(st.moves, m, func(x move, m *Movement) int {
			return cmp.Or(cmp.Compare(x.t, t), cmp.Compare(x.id, m.ID))
		})
		st.moves = slices.Insert(st.moves, i, move{m.ID, t, q})
		st.fold(c, c.maxMoves)
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
	st.fold(c, c.maxMoves)
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
