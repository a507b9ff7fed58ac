package features

import (
	"sort"

	"github.com/gemba-io/gemba/signal"
)

// Counters and states keep their points (they are slow signals: part counts, machine states) and
// compute windows when they close, so out-of-order samples within the allowed lateness, sliding
// windows and group-by changes are all exact.

// unknownGroup labels increments observed before the group-by signal had any value.
const unknownGroup = "unknown"

// increment returns the increase from prev to cur: a decrease is a rollover when counterMax is set
// and prev was in the upper half of the range (the counter wrapped), otherwise a reset to zero.
func increment(prev, cur, counterMax float64) (inc float64, reset bool) {
	if cur >= prev {
		return cur - prev, false
	}
	if counterMax > 0 && prev > counterMax/2 && prev <= counterMax {
		return counterMax - prev + cur + 1, true
	}
	return cur, true
}

// groupAgg is the per-group result of one counter window.
type groupAgg struct {
	key    string
	delta  float64
	n      int64
	resets int64
}

// closeCounter emits windows Closed+1..kmax. A window without samples is emitted with delta 0 and
// n 0 when the counter's value is known there (its last sample before the window was good): a live
// source reporting by exception (OPC UA) sends nothing while a stopped machine's counter does not
// change, and "0 produced" must not look like "no data". Only a stopped source leaves a gap: one
// the agent reports not live (Options.Live), or whose newest sample is Bad (value unknown).
func (s *series) closeCounter(e *Engine, kmax int64, idle bool) int {
	r := s.r
	stopped := idle && (s.gone || (len(s.Pts) > 0 && s.Pts[len(s.Pts)-1].Bad))
	n := 0
	var groups []groupAgg
	for k := s.Closed + 1; k <= kmax; k++ {
		start, end := s.window(k)
		i := sort.Search(len(s.Pts), func(i int) bool { return s.Pts[i].T >= start })
		if i == len(s.Pts) || s.Pts[i].T >= end {
			next := kmax + 1 // the first window holding the next point
			if i < len(s.Pts) {
				next = min(next, floorDiv(s.Pts[i].T, r.hop))
			}
			if i == 0 || s.Pts[i-1].Bad || (stopped && i == len(s.Pts)) {
				k = next - 1 // value unknown, or the source is gone: no record
				continue
			}
			if next-k > maxCatchUp {
				e.log.Warn("counter windows skipped after a long gap", "signal", s.sig, "windows", next-k-maxCatchUp)
				k = next - maxCatchUp
				start, end = s.window(k)
			}
			key := ""
			if s.track != nil {
				key = s.track.at(end - 1)
			}
			s.emitCounter(e, []groupAgg{{key: key}}, start, end, s.partial(start, end, stopped))
			n++
			continue
		}
		// baseline: the last good point before the window
		havePrev, prev := false, 0.0
		for j := i - 1; j >= 0; j-- {
			if good(&s.Pts[j], s.run(&s.Pts[j])) {
				havePrev, prev = true, s.Pts[j].V
				break
			}
		}
		groups = groups[:0]
		var bad int64
		for j := i; j < len(s.Pts) && s.Pts[j].T < end; j++ {
			p := &s.Pts[j]
			pr := s.run(p)
			ng, nb := counts(p, pr)
			bad += nb
			if ng == 0 {
				continue
			}
			key := ""
			if s.track != nil {
				key = s.track.at(p.T)
			}
			g := findGroup(&groups, key)
			g.n += ng
			if havePrev {
				v, _ := first(p, pr)
				inc, reset := increment(prev, v, r.counterMax)
				g.delta += inc
				if reset {
					g.resets++
				}
			}
			if pr != nil { // what the samples of p's time add among themselves
				g.delta += pr.Inc
				g.resets += pr.Resets
			}
			havePrev, prev = true, p.V
		}
		partial := s.partial(start, end, stopped)
		s.emitCounter(e, groups, start, end, partial)
		s.emitQuality(e, bad, 0, start, end, partial)
		n++
	}
	return n
}

// emitCounter emits the records of one counter window, one set per group.
func (s *series) emitCounter(e *Engine, groups []groupAgg, start, end int64, partial bool) {
	r := s.r
	secs := float64(r.window) / 1e9
	for _, g := range groups {
		var lbl signal.Labels
		if s.track != nil {
			lbl = signal.Labels{{Key: r.byLabel, Value: g.key}}
		}
		for _, f := range r.src.Compute {
			v := g.delta
			switch f {
			case "rate":
				v = g.delta / secs
			case "resets":
				v = float64(g.resets)
			}
			e.emit(s, r.name(f), start, end, v, g.n, partial, lbl)
		}
	}
}

func findGroup(gs *[]groupAgg, key string) *groupAgg {
	for i := range *gs {
		if (*gs)[i].key == key {
			return &(*gs)[i]
		}
	}
	*gs = append(*gs, groupAgg{key: key})
	return &(*gs)[len(*gs)-1]
}

// closeState emits windows Closed+1..kmax in which the state is known (a carried state counts:
// a state holds until it changes, so state windows close on the idle timeout without being partial).
func (s *series) closeState(e *Engine, kmax int64, idle bool) int {
	r := s.r
	if len(s.Pts) == 0 {
		return 0
	}
	stopped := idle && s.gone // the source is gone: no window after its last sample
	k := s.Closed + 1
	if kmax-k >= maxCatchUp {
		e.log.Warn("state windows skipped after a long gap", "signal", s.sig, "windows", kmax-k-maxCatchUp+1)
		k = kmax - maxCatchUp + 1
	}
	n := 0
	type stateTime struct {
		state string
		ns    int64
	}
	var times []stateTime
	add := func(st string, d int64) {
		if d <= 0 {
			return // a state replaced at the instant it is counted from held 0 s: no record
		}
		for i := range times {
			if times[i].state == st {
				times[i].ns += d
				return
			}
		}
		times = append(times, stateTime{st, d})
	}
	for k <= kmax {
		start, end := s.window(k)
		if stopped && start > s.WM {
			break
		}
		i := sort.Search(len(s.Pts), func(i int) bool { return s.Pts[i].T >= start })
		if i == 0 || s.Pts[i-1].Bad { // no known state carried in: skip to the next point
			if i == len(s.Pts) {
				break
			}
			if pk := floorDiv(s.Pts[i].T, r.hop); pk > k {
				k = pk
				continue
			}
		}
		times = times[:0]
		known, cur, curT := false, "", start
		if i > 0 && !s.Pts[i-1].Bad {
			known, cur = true, s.Pts[i-1].S
		}
		var transitions, good, bad int64
		haveLast, last := known, cur // last good state, kept across Bad stretches
		for j := i; j < len(s.Pts) && s.Pts[j].T < end; j++ {
			p := &s.Pts[j]
			if known {
				add(cur, p.T-curT)
			}
			pr := s.run(p)
			ng, nb := counts(p, pr)
			bad += nb
			if ng > 0 {
				// the samples of one time last 0 s: only their transitions count
				good += ng
				if _, st := first(p, pr); haveLast && st != last {
					transitions++
				}
				if pr != nil {
					transitions += pr.Resets
				}
				haveLast, last = true, p.S
			}
			if p.Bad { // the last sample of p's time is Bad: the state is unknown from here
				known = false
				continue
			}
			known, cur, curT = true, p.S, p.T
		}
		if known {
			add(cur, end-curT)
		}
		partial := s.partial(start, end, stopped)
		var run, planned int64
		for _, st := range times {
			if r.want["time_in_state"] {
				e.emit(s, r.name("time_in_state"), start, end, float64(st.ns)/1e9, good, partial, signal.Labels{{Key: "state", Value: st.state}})
			}
			if r.planned == nil || r.planned[st.state] {
				planned += st.ns
				if r.running[st.state] {
					run += st.ns
				}
			}
		}
		if r.want["transitions"] {
			e.emit(s, r.name("transitions"), start, end, float64(transitions), good, partial, nil)
		}
		if r.want["availability"] && planned > 0 {
			e.emit(s, r.name("availability"), start, end, float64(run)/float64(planned), good, partial, nil)
		}
		s.emitQuality(e, bad, 0, start, end, partial)
		n++
		k++
	}
	return n
}

// track follows the value of a group-by signal over event time.
type track struct {
	Pts  []tpoint
	deps []*series
	// horizon is the longest window plus lateness of the rules grouped by it: before any of their
	// counters has a series, the points older than that behind the newest one are pruned.
	horizon int64
}

type tpoint struct {
	T int64
	V string
}

func (t *track) add(ts int64, v string) {
	i := len(t.Pts)
	for i > 0 && t.Pts[i-1].T > ts {
		i--
	}
	if i > 0 && t.Pts[i-1].T == ts {
		// A later value of the same time (a frozen source clock) replaces the earlier one: at
		// looks up the last value at or before a time only.
		i--
		t.Pts = append(t.Pts[:i], t.Pts[i+1:]...)
	}
	if i > 0 && t.Pts[i-1].V == v {
		if i < len(t.Pts) && t.Pts[i].V == v { // the same-time value removed above separated them
			t.Pts = append(t.Pts[:i], t.Pts[i+1:]...)
		}
		return // unchanged: the earlier point already says so
	}
	t.Pts = append(t.Pts, tpoint{})
	copy(t.Pts[i+1:], t.Pts[i:])
	t.Pts[i] = tpoint{ts, v}
	if i+1 < len(t.Pts) && t.Pts[i+1].V == v {
		t.Pts = append(t.Pts[:i+1], t.Pts[i+2:]...)
	}
}

// at returns the value in force at ts: that of the last point at or before ts.
func (t *track) at(ts int64) string {
	i := sort.Search(len(t.Pts), func(i int) bool { return t.Pts[i].T > ts })
	if i == 0 {
		return unknownGroup
	}
	return t.Pts[i-1].V
}

// prune drops points no dependent can look up any more, keeping the one in force at that time.
func (t *track) prune() {
	if len(t.Pts) < 2 {
		return
	}
	need := t.Pts[len(t.Pts)-1].T - t.horizon // no counter yet: its first sample near the newest
	if len(t.deps) > 0 {
		need = t.deps[0].firstNeeded()
		for _, d := range t.deps[1:] {
			need = min(need, d.firstNeeded())
		}
	}
	i := sort.Search(len(t.Pts), func(i int) bool { return t.Pts[i].T > need })
	if i > 1 {
		n := copy(t.Pts, t.Pts[i-1:])
		t.Pts = t.Pts[:n]
	}
}
