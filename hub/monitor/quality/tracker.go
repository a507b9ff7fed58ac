package quality

import (
	"slices"
	"time"
)

// jumpSize: a hole this large is the agent's buffer jumping its sequences ahead after an unclean
// stop (by 2^20, docs/wire-format.md), not lost records.
const jumpSize = 1 << 19

// maxRuns bounds the runs kept per stream: past it the lowest hole is given up (counted as lost).
const maxRuns = 256

// run is a range of sequences seen; opened is when the hole below it appeared (the log time of
// the message that revealed it), reported whether this replica reported that hole as a gap.
type run struct {
	lo, hi   uint64
	opened   time.Time
	reported bool
}

// seqTracker is the set of buffer sequences seen on one agent stream in one incarnation, as runs.
// Delivery is not in order and sequences are not gap-free (docs/wire-format.md): a hole is only a
// gap once it has stayed open for gap_after.
type seqTracker struct {
	runs    []run
	lost    uint64 // sequences given up when the runs were too many
	jumps   int
	updated time.Time
}

// seen reports whether a message starting at first was folded already (a duplicate).
func (t *seqTracker) seen(first uint64) bool {
	i := t.find(first)
	return i < len(t.runs) && t.runs[i].lo <= first
}

// find returns the index of the first run whose hi ≥ s.
func (t *seqTracker) find(s uint64) int {
	i, _ := slices.BinarySearchFunc(t.runs, s, func(r run, s uint64) int {
		switch {
		case r.hi < s:
			return -1
		case r.hi > s:
			return 1
		}
		return 0
	})
	return i
}

// add records [lo, hi] seen at log time at, returning the reported holes it filled whole.
func (t *seqTracker) add(lo, hi uint64, at time.Time) (closed [][2]uint64) {
	t.updated = at
	i := t.find(lo)
	// The new run sits before runs[i] (or at the end). The hole it falls in is (runs[i-1].hi, runs[i].lo).
	opened := at
	var holeLo, holeHi uint64
	inHole := i > 0 && i < len(t.runs)
	if inHole {
		opened = t.runs[i].opened
		holeLo, holeHi = t.runs[i-1].hi+1, t.runs[i].lo-1
		if t.runs[i].reported && lo <= holeLo && hi >= holeHi {
			closed = append(closed, [2]uint64{holeLo, holeHi}) // filled whole: a late copy arrived
		}
	}
	nr := run{lo: lo, hi: hi, opened: opened, reported: inHole && t.runs[i].reported}
	if i == 0 || i == len(t.runs) {
		nr.opened = at // a run below the lowest or above the highest opens a hole now
	}
	if i == len(t.runs) && i > 0 && lo-t.runs[i-1].hi-1 >= jumpSize {
		t.jumps++
	}
	t.runs = slices.Insert(t.runs, i, nr)
	// The hole above the new run keeps its age and reported flag (they are on runs[i+1]).
	if i == 0 && len(t.runs) > 1 {
		t.runs[1].opened, t.runs[1].reported = at, false // the hole between the new lowest run and the old
	}
	t.merge(i)
	for len(t.runs) > maxRuns {
		h := t.runs[1].lo - t.runs[0].hi - 1
		if h < jumpSize {
			t.lost += h
		}
		t.runs[1].lo = t.runs[0].lo
		t.runs = t.runs[1:]
	}
	return closed
}

// expire gives up the holes that appeared before (counted as lost, as past maxRuns): the log no
// longer holds the runs below them, so a replica started now would not see them.
func (t *seqTracker) expire(before time.Time) {
	for i := 1; i < len(t.runs); {
		if !t.runs[i].opened.Before(before) {
			i++
			continue
		}
		if h := t.runs[i].lo - t.runs[i-1].hi - 1; h < jumpSize {
			t.lost += h
		}
		t.runs[i-1].hi = t.runs[i].hi
		t.runs = slices.Delete(t.runs, i, i+1)
	}
}

// merge joins run i with adjacent neighbours.
func (t *seqTracker) merge(i int) {
	if i+1 < len(t.runs) && t.runs[i].hi+1 >= t.runs[i+1].lo {
		t.runs[i].hi = max(t.runs[i].hi, t.runs[i+1].hi)
		t.runs = slices.Delete(t.runs, i+1, i+2)
	}
	if i > 0 && t.runs[i-1].hi+1 >= t.runs[i].lo {
		t.runs[i-1].hi = max(t.runs[i-1].hi, t.runs[i].hi)
		t.runs = slices.Delete(t.runs, i, i+1)
	}
}

// Hole is a range of sequences not seen, below one that was.
type Hole struct {
	From, To uint64
	Since    time.Time // when it appeared
}

// holes returns the holes open at least after (jumps excluded) and the records they miss.
func (t *seqTracker) holes(now time.Time, after time.Duration) (out []Hole, missing uint64) {
	for i := 1; i < len(t.runs); i++ {
		from, to := t.runs[i-1].hi+1, t.runs[i].lo-1
		if to-from+1 >= jumpSize || now.Sub(t.runs[i].opened) < after {
			continue
		}
		out = append(out, Hole{From: from, To: to, Since: t.runs[i].opened})
		missing += to - from + 1
	}
	return out, missing
}
