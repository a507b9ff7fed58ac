package sim

import (
	"slices"
	"sync"
)

// Ledger records what the broker acknowledged: for every MQTT source (a JSON machine or a Sparkplug
// device) the timestamps (Unix ms) of its acknowledged messages. Every message of a source carries
// all of the source's signals, so "signal S at time T was acknowledged" is "T is in S's source".
// The chaos suite and the demo compare it against the stream.
type Ledger struct {
	mu      sync.Mutex
	sources map[string]*LedgerSource
}

// LedgerSource is one source's acknowledged messages.
type LedgerSource struct {
	Signals []string // the signals every message of the source carries
	Times   []int64  // acknowledged message times, Unix ms (unordered)
}

func newLedger() *Ledger { return &Ledger{sources: map[string]*LedgerSource{}} }

func (l *Ledger) declare(source string, signals []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sources[source] == nil {
		l.sources[source] = &LedgerSource{Signals: signals}
	}
}

func (l *Ledger) add(source string, ms int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.sources[source]
	s.Times = append(s.Times, ms)
}

// Reset forgets every acknowledged message so far (for example those published before a subscriber
// was listening).
func (l *Ledger) Reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.sources {
		s.Times = s.Times[:0]
	}
}

// Samples is the number of acknowledged samples.
func (l *Ledger) Samples() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var n uint64
	for _, s := range l.sources {
		n += uint64(len(s.Signals) * len(s.Times))
	}
	return n
}

// Snapshot returns a copy of every source with its times sorted.
func (l *Ledger) Snapshot() map[string]LedgerSource {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]LedgerSource, len(l.sources))
	for k, s := range l.sources {
		t := slices.Clone(s.Times)
		slices.Sort(t)
		out[k] = LedgerSource{Signals: s.Signals, Times: t}
	}
	return out
}
