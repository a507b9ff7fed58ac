package features

import (
	"math"
	"slices"
	"sort"
	"time"

	"github.com/gemba-io/gemba/signal"
)

// series is the window state of one signal.
//
// Windows are aligned to the Unix epoch in panes of length hop; window k is [(k+1-m)*hop, (k+1)*hop)
// with m = window/hop panes, so boundaries never depend on when the agent started. Window k closes
// when the signal's watermark (its newest event time) reaches its end plus the allowed lateness, or
// when the idle timeout extrapolates the watermark there.
type series struct {
	sig   string
	r     *rule
	track *track // group-by source (counters with by)

	HasWM  bool
	WM     int64 // newest event time seen (ns)
	Closed int64 // windows k <= Closed are closed; a sample in a pane <= Closed is late
	// ObsFrom is the start of continuous observation: windows starting before it are partial.
	ObsFrom int64

	// gauge state: panes in ascending idx order, and the in-order carries for ewma and twa
	panes          []*pane
	free           []*pane
	EWMA           float64
	EWMAOK         bool
	HoldT          int64 // last in-order good sample, for the time-weighted mean
	HoldV          float64
	HoldOK         bool
	LastT          int64 // newest good sample time (order check for ewma/twa)
	IdleCloseUntil int64 // windows ending after the last event that idle closed are partial

	// counter and state kinds: points in time order (bad ones kept for counting), one per time,
	// and what the samples of a time add up to where there were several (a frozen source clock)
	Pts  []point
	Runs map[int64]*run

	// Stops are the clean stops shorter than a window that windows still open were charged
	// (see shortStop).
	Stops []stop

	ckFP     string // rule fingerprint of a restored series
	ResetObs bool   // observation (re)starts at the next good sample (cold start, crash, long stop)
	// Unwatched is set by a restart whose downtime is not known (restart): every window closed
	// is partial until a usable sample newer than the watermark restarts observation.
	Unwatched   bool
	lastArrival time.Time
	// Source is the newest sample's Source (collector:node), for Options.Live.
	Source string
	// ExtT is the event time the idle timeout last extrapolated the watermark to, at extAt (with
	// a monotonic reading: a step of the wall clock is no time passed; ExtAt is it on the wall
	// clock of the checkpoint's save, Unix ns): a late sample (an OPC UA reconnect resends the
	// unchanged value with its old source time) restarts the silence without moving the
	// watermark, and the extrapolation continues from here instead of falling back behind
	// windows already closed.
	ExtT, ExtAt int64
	extAt       time.Time
	gone        bool // set by idleCheck: Options.Live says the source is not connected
	// Arrival is lastArrival in the checkpoint, on the wall clock of its save (Unix ns), so the
	// idle clock continues after a restart instead of starting again: a quiet signal keeps its
	// window cadence.
	Arrival                           int64
	nLate, nBad, nExcl, nFolded, nOOB int64
	stood                             int // samples in a row that left the watermark where it was
}

// frozenWarnAt is how many samples in a row may leave a series' watermark where it was before a
// WARN says the source's time is not advancing.
const frozenWarnAt = 10_000

// point is one counter or state sample kept until its windows have closed, or the run of samples
// that share its time (a source whose clock stopped stamps every sample with one time): they are
// folded into one point as they arrive, so such a source holds one point, not every sample.
type point struct {
	T   int64
	V   float64 // of a run: its last good value
	S   string  // of a run: its last good state
	Bad bool    // the (last) sample is excluded from values (Bad, unusable, or Uncertain under exclude); counted
	Run bool    // a run: what its samples add up to is in series.Runs[T]
}

// run is what the samples of one time add up to, in arrival order (the order the windows take
// samples of equal time in): their counts, the first good value (the increment from the point
// before it, which may still change, is computed when the window closes), and what the good ones
// add among themselves.
type run struct {
	Good, Bad int64
	FirstV    float64 // counter: the first good value
	FirstS    string  // state: the first good state
	Inc       float64 // counter: the increase from the first good value to the last
	Resets    int64   // counter: resets and rollovers within the run; state: transitions within it
}

// run returns what the samples of p's time add up to; nil for a single sample.
func (s *series) run(p *point) *run {
	if !p.Run {
		return nil
	}
	return s.Runs[p.T]
}

// good reports whether p (with its run r) holds a usable value in V or S.
func good(p *point, r *run) bool { return !p.Bad || r != nil && r.Good > 0 }

// counts returns the good and the excluded samples p (with its run r) stands for.
func counts(p *point, r *run) (good, bad int64) {
	switch {
	case r != nil:
		return r.Good, r.Bad
	case p.Bad:
		return 0, 1
	}
	return 1, 0
}

// first returns the first good value and state of p (with its run r).
func first(p *point, r *run) (float64, string) {
	if r != nil {
		return r.FirstV, r.FirstS
	}
	return p.V, p.S
}

// merge folds q, a sample of the same time that arrived after those of p, into p.
func (s *series) merge(p *point, q point) {
	r := s.run(p)
	if r == nil {
		r = &run{}
		if p.Bad {
			r.Bad = 1
		} else {
			r.Good, r.FirstV, r.FirstS = 1, p.V, p.S
		}
		if s.Runs == nil {
			s.Runs = map[int64]*run{}
		}
		s.Runs[p.T], p.Run = r, true
	}
	if q.Bad {
		r.Bad++
		p.Bad = true // V and S keep the last good value
		return
	}
	switch {
	case r.Good == 0:
		r.FirstV, r.FirstS = q.V, q.S
	case s.r.kind == kindState:
		if q.S != p.S {
			r.Resets++
		}
	default:
		inc, reset := increment(p.V, q.V, s.r.counterMax)
		r.Inc += inc
		if reset {
			r.Resets++
		}
	}
	r.Good++
	p.V, p.S, p.Bad = q.V, q.S, false
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

// add folds one sample and closes the windows its watermark passes. It reports whether the
// sample was late.
func (s *series) add(e *Engine, smp *signal.Sample, b *batch) bool {
	if smp.Time.IsZero() {
		// No timestamp: it cannot be placed in a window. Counted as bad and forwarded raw.
		s.nBad++
		b.bad++
		return true
	}
	t := smp.Time.UnixNano()
	r := s.r
	p := floorDiv(t, r.hop)
	// The watermark follows event time but never passes the agent's clock (wmCap): a source
	// clock running fast must not make the correct samples after it late.
	wm := min(t, e.wmCap)
	if s.Closed == math.MinInt64 {
		// Windows that would already be closed had this sample advanced the watermark are closed;
		// the first sample's own window, and earlier ones within the lateness, are open.
		s.Closed = min(p, floorDiv(wm-r.lateness, r.hop)) - 1
		s.ObsFrom, s.ResetObs = t, true
	}
	newer := !s.HasWM || t > s.WM
	if p <= s.Closed {
		s.nLate++
		b.late++
		e.log.Debug("late sample", "signal", s.sig, "time", smp.Time, "watermark", time.Unix(0, s.WM).UTC())
		return true
	}
	switch {
	case !s.HasWM || wm > s.WM:
		s.WM, s.HasWM, s.stood = wm, true, 0
	case wm == s.WM:
		// A source whose clock stopped closes no window of this signal until it moves: say so
		// once per standstill (its samples fold into one point meanwhile).
		if s.stood++; s.stood == frozenWarnAt {
			e.log.Warn("source time not advancing: no window of this signal closes until it moves",
				"signal", s.sig, "time", smp.Time, "samples", s.stood)
		}
	}
	// Value and quality: Bad, non-numeric gauges/counters and NaN/Inf are counted, not folded.
	v, num := smp.Value.Number()
	bad := smp.Quality == signal.Bad || smp.Value.Kind() == signal.KindNone
	if r.kind != kindState && (!num || math.IsNaN(v) || math.IsInf(v, 0)) {
		bad = true
	}
	excl := !bad && smp.Quality == signal.Uncertain && r.exclUnc
	if s.ResetObs && !bad && !excl && newer {
		// Observation (re)starts at the first usable value: a window starting before it lacks
		// the value carried into it (time-weighted mean, counter baseline, state). Only a value
		// newer than the watermark tells what changed over a stop: a collector resends one
		// unchanged since before it with its old time (an OPC UA subscription at its start).
		s.ObsFrom, s.ResetObs, s.Unwatched = max(s.ObsFrom, t), false, false
	}
	switch {
	case bad:
		s.nBad++
		b.bad++
	case excl:
		s.nExcl++
		b.excluded++
	default:
		s.nFolded++
		b.folded++
	}
	if r.kind == kindGauge {
		s.foldGauge(e, p, t, v, bad, excl)
	} else {
		pt := point{T: t, V: v, Bad: bad || excl}
		if r.kind == kindState {
			pt.S = smp.Value.Text()
			if n, ok := r.stateNames[pt.S]; ok {
				pt.S = n
			}
		}
		s.insert(pt)
	}
	s.closeTo(e, s.WM-r.lateness, false, b)
	return false
}

func (s *series) insert(pt point) {
	i := len(s.Pts)
	for i > 0 && s.Pts[i-1].T > pt.T {
		i--
	}
	if i > 0 && s.Pts[i-1].T == pt.T {
		s.merge(&s.Pts[i-1], pt)
		return
	}
	if i == len(s.Pts) {
		s.Pts = append(s.Pts, pt)
		return
	}
	s.Pts = append(s.Pts, point{})
	copy(s.Pts[i+1:], s.Pts[i:])
	s.Pts[i] = pt
}

// closeTo closes every window whose end is <= limit. Idle closes mark gauge windows partial (the
// signal stopped before their end, so they were not fully observed); counters and states hold their
// value, so their idle-closed windows are partial only when the source is gone (see closeCounter).
func (s *series) closeTo(e *Engine, limit int64, idle bool, b *batch) {
	r := s.r
	kmax := floorDiv(limit, r.hop) - 1 // window k ends at (k+1)*hop <= limit
	if kmax <= s.Closed {
		return
	}
	n := 0
	switch r.kind {
	case kindGauge:
		n = s.closeGauge(e, kmax, idle)
	case kindCounter:
		n = s.closeCounter(e, kmax, idle)
	case kindState:
		n = s.closeState(e, kmax, idle)
	}
	s.Closed = kmax
	if idle {
		b.closedIdle += n
	} else {
		b.closedWM += n
	}
	s.prune()
}

// window returns the bounds of window k.
func (s *series) window(k int64) (start, end int64) {
	end = (k + 1) * s.r.hop
	return end - s.r.window, end
}

// stop is a clean stop shorter than a window: its length D (wall clock) and To, where the signal's
// event time had got to at the restart. It is charged to every window starting before To that was
// still open.
type stop struct{ To, D int64 }

// shortStop records a clean stop shorter than a window. Alone it is no downtime, but the stops
// charged to one window add up: a window charged more than its length in all is partial, as after
// one longer stop (every window starting before the To of the oldest stop that takes the sum past
// it).
func (s *series) shortStop(to, d int64) {
	start, _ := s.window(s.Closed + 1)
	s.Stops = slices.DeleteFunc(s.Stops, func(st stop) bool { return st.To <= start }) // no open window charged
	s.Stops = append(s.Stops, stop{To: to, D: d})
	var sum int64
	for i := len(s.Stops) - 1; i >= 0; i-- {
		if sum += s.Stops[i].D; sum > s.r.window {
			s.ObsFrom = max(s.ObsFrom, s.Stops[i].To)
			s.Stops = slices.Delete(s.Stops, 0, i+1) // the windows they were charged to are partial
			return
		}
	}
}

// partial reports whether window [start, end) was not fully observed.
func (s *series) partial(start, end int64, idle bool) bool {
	return start < s.ObsFrom || s.Unwatched || (idle && end > s.WM)
}

// idleCheck extrapolates the watermark of a signal that has been silent for its idle timeout by
// the wall-clock time since its last sample, and closes the windows that passes.
func (s *series) idleCheck(e *Engine, now time.Time, b *batch) {
	r := s.r
	if r.idle <= 0 || !s.HasWM || !s.open() {
		return
	}
	if now.Sub(s.lastArrival) < r.idle {
		return
	}
	s.closeSilent(e, now, b)
}

// closeSilent extrapolates the watermark by the wall-clock silence and closes the windows that
// passes, as an idle close.
func (s *series) closeSilent(e *Engine, now time.Time, b *batch) {
	r := s.r
	silent := now.Sub(s.lastArrival)
	s.gone = e.opts.Live != nil && !e.opts.Live(s.Source)
	to := s.WM + int64(silent)
	if !s.extAt.IsZero() {
		to = max(to, s.ExtT+int64(now.Sub(s.extAt)))
	}
	s.closeTo(e, to-r.lateness, true, b)
	s.ExtT, s.extAt = to, now
	s.gone = false
}

// open reports whether the series has data in windows not yet closed.
func (s *series) open() bool {
	switch s.r.kind {
	case kindGauge:
		return len(s.panes) > 0
	}
	return len(s.Pts) > 0
}

// prune drops what no open window needs: panes and points before the start of window Closed+1,
// keeping the last good point before it as the carry (counter baseline, current state).
func (s *series) prune() {
	start, _ := s.window(s.Closed + 1)
	if s.r.kind == kindGauge {
		first := floorDiv(start, s.r.hop)
		i := 0
		for i < len(s.panes) && s.panes[i].Idx < first {
			s.release(s.panes[i])
			i++
		}
		if i > 0 {
			n := copy(s.panes, s.panes[i:])
			clear(s.panes[n:])
			s.panes = s.panes[:n]
		}
		return
	}
	i := 0
	for i < len(s.Pts) && s.Pts[i].T < start {
		i++
	}
	// keep the carry: the last point before start (for states the state since then, a Bad one
	// meaning "unknown"; for counters whether the value is known) and, for counters, the last good
	// point before start as well (the baseline of the next increment).
	c := i - 1
	for s.r.kind == kindCounter && c >= 0 && !good(&s.Pts[c], s.run(&s.Pts[c])) {
		c--
	}
	drop := i
	switch {
	case c >= 0 && c < i-1: // a counter whose last point before start is Bad: keep both
		s.Pts[i-2] = s.Pts[c]
		drop = i - 2
	case c >= 0:
		drop = i - 1
	}
	if drop > 0 {
		n := copy(s.Pts, s.Pts[drop:])
		clear(s.Pts[n:])
		s.Pts = s.Pts[:n]
		s.pruneRuns()
	}
	if s.track != nil {
		s.track.prune()
	}
}

// pruneRuns drops the runs of points no longer held.
func (s *series) pruneRuns() {
	if len(s.Runs) == 0 {
		return
	}
	for t := range s.Runs {
		held := false
		for i := sort.Search(len(s.Pts), func(i int) bool { return s.Pts[i].T >= t }); i < len(s.Pts) && s.Pts[i].T == t; i++ {
			held = held || s.Pts[i].Run // (an older checkpoint may hold several points of one time)
		}
		if !held {
			delete(s.Runs, t)
		}
	}
	if len(s.Runs) == 0 {
		s.Runs = nil
	}
}

// firstNeeded is the earliest time the series may still look up in its group-by track: the start
// of its first open window (a new point is never before it, or it would be late). The carry kept
// before it (the counter's last value) is never looked up: a quiet counter must not hold back the
// pruning of a by signal that keeps changing.
func (s *series) firstNeeded() int64 {
	start, _ := s.window(s.Closed + 1)
	return start
}
