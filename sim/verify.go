package sim

import (
	"fmt"
	"slices"
	"time"
)

// Counter collects the (signal, time) of samples read back from the stream, to be checked against
// the ledger.
type Counter struct {
	times map[string][]int64
}

// NewCounter returns an empty counter.
func NewCounter() *Counter { return &Counter{times: map[string][]int64{}} }

// Add counts one sample.
func (c *Counter) Add(signal string, t time.Time) {
	c.times[signal] = append(c.times[signal], t.UnixMilli())
}

// CountAfter counts the samples of the signals keep selects whose time is after t.
func (c *Counter) CountAfter(keep func(signal string) bool, t time.Time) uint64 {
	var n uint64
	ms := t.UnixMilli()
	for sig, ts := range c.times {
		if !keep(sig) {
			continue
		}
		for _, v := range ts {
			if v > ms {
				n++
			}
		}
	}
	return n
}

// Tally is the outcome of checking the stream against the ledger.
type Tally struct {
	Acked      uint64 // samples in acknowledged messages
	Delivered  uint64 // of those, found in the stream
	Missing    uint64 // acknowledged, not in the stream
	Duplicates uint64 // extra copies of acknowledged samples
	Extra      uint64 // samples of ledger signals at times the ledger does not hold (unacknowledged publishes, deaths)
	Other      uint64 // samples of signals outside the ledger (OPC UA)
	Examples   []string
}

// OK reports nothing missing and nothing duplicated.
func (t Tally) OK() bool { return t.Missing == 0 && t.Duplicates == 0 }

func (t Tally) String() string {
	return fmt.Sprintf("acked %d, delivered %d, missing %d, duplicates %d, extra %d, other %d",
		t.Acked, t.Delivered, t.Missing, t.Duplicates, t.Extra, t.Other)
}

// Check compares the ledger with what the stream held: every acknowledged sample must be there
// exactly once.
func Check(ledger map[string]LedgerSource, c *Counter) Tally {
	var t Tally
	inLedger := map[string]bool{}
	var nMissing, nDup int
	note := func(n *int, format string, args ...any) {
		if *n < 3 { // a few of each kind
			t.Examples = append(t.Examples, fmt.Sprintf(format, args...))
		}
		*n++
	}
	for _, src := range ledger {
		for _, sig := range src.Signals {
			inLedger[sig] = true
			got := slices.Clone(c.times[sig])
			slices.Sort(got)
			i := 0
			for _, want := range src.Times {
				t.Acked++
				for i < len(got) && got[i] < want {
					t.Extra++
					i++
				}
				n := 0
				for i < len(got) && got[i] == want {
					n++
					i++
				}
				switch {
				case n == 0:
					t.Missing++
					note(&nMissing, "missing %s at %s", sig, time.UnixMilli(want).UTC().Format(time.RFC3339Nano))
				case n > 1:
					t.Duplicates += uint64(n - 1)
					note(&nDup, "%d copies of %s at %s", n, sig, time.UnixMilli(want).UTC().Format(time.RFC3339Nano))
				}
				if n > 0 {
					t.Delivered++
				}
			}
			t.Extra += uint64(len(got) - i)
		}
	}
	for sig, ts := range c.times {
		if !inLedger[sig] {
			t.Other += uint64(len(ts))
		}
	}
	return t
}
