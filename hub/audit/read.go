package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

func (l *Log) decodeRecord(m *jetstream.RawStreamMsg) (Record, bool) {
	var r Record
	err := json.Unmarshal(m.Data, &r)
	if err == nil {
		err = r.check()
	}
	if err == nil && m.Subject != l.cfg.RecordSubject(r.DecisionID) {
		err = fmt.Errorf("decision id %q does not match the subject", r.DecisionID)
	}
	if err != nil {
		l.malformed(m.Subject, m.Sequence, err)
		return Record{}, false
	}
	r.Seq = m.Sequence
	return r, true
}

// History returns a decision's records, oldest first, each (id, event, round) once. Malformed messages
// on its subject are skipped (counted and logged with subject and sequence).
func (l *Log) History(ctx context.Context, decisionID string) ([]Record, error) {
	if !ValidID(decisionID) {
		return nil, fmt.Errorf("audit: decision id %q is not 32 lower-case hex digits", decisionID)
	}
	var out []Record
	seen := map[string]bool{}
	err := l.scanSubject(ctx, l.cfg.RecordSubject(decisionID), func(m *jetstream.RawStreamMsg) {
		r, ok := l.decodeRecord(m)
		// A re-publish after the duplicate window passed is stored again; it is the same event.
		if ok && !seen[r.key()] {
			seen[r.key()] = true
			out = append(out, r)
		}
	})
	return out, err
}

// Decided is the record a decision was made in, which says what it read: its latest decided
// record (a decision suppressed by the kill switch is decided again once it is reset, in a record
// of its own), or the first when it has none (deferred, its inputs never usable). recs must not be
// empty.
func Decided(recs []Record) Record {
	for i := len(recs) - 1; i >= 0; i-- {
		if recs[i].Event == EventDecided {
			return recs[i]
		}
	}
	return recs[0]
}

// Filter selects records for Recent; empty fields match everything.
type Filter struct {
	SKU, Channel, Rule, Outcome, Mode string
	// Limit is how many records at most (DefaultLimit when 0, at most MaxLimit).
	Limit int
	// MaxScan bounds the messages read looking for matches (DefaultMaxScan when 0).
	MaxScan int
	// Before, when not 0, reads only messages with a lower sequence: a Page's Next, to go on from
	// where a read stopped.
	Before uint64
}

// Bounds of Recent.
const (
	DefaultLimit   = 50
	MaxLimit       = 1000
	DefaultMaxScan = 20_000
)

func (f *Filter) match(r *Record) bool {
	return (f.SKU == "" || f.SKU == r.SKU) && (f.Channel == "" || f.Channel == r.Channel) &&
		(f.Rule == "" || f.Rule == r.Rule.Name) && (f.Outcome == "" || f.Outcome == r.Outcome) &&
		(f.Mode == "" || f.Mode == r.Mode)
}

// Page is what one read of Recent found, and where it stopped.
type Page struct {
	Records []Record // newest first
	// Next is where to go on from (Filter.Before) when the read stopped before the stream's first
	// message: at Limit records, or at MaxScan messages read. 0 when there is nothing older.
	Next uint64
	// ScanCut: the read stopped at MaxScan messages with fewer than Limit records; older messages
	// were not looked at, so fewer records does not mean no more match.
	ScanCut bool
}

// recentBatch is how many direct gets Recent has in flight.
const recentBatch = 32

// Recent returns the newest records matching f, newest first (RecentPage's records).
func (l *Log) Recent(ctx context.Context, f Filter) ([]Record, error) {
	p, err := l.RecentPage(ctx, f)
	return p.Records, err
}

// RecentPage returns the newest records matching f, newest first. It reads backwards by sequence
// with direct gets (any replica answers), at most f.MaxScan messages, so a rare filter costs a
// bounded amount of work rather than a scan of the whole stream; the page says where it stopped.
func (l *Log) RecentPage(ctx context.Context, f Filter) (Page, error) {
	if f.Limit <= 0 {
		f.Limit = DefaultLimit
	}
	f.Limit = min(f.Limit, MaxLimit)
	if f.MaxScan <= 0 {
		f.MaxScan = DefaultMaxScan
	}
	info, err := l.stream.Info(ctx)
	if err != nil {
		return Page{}, fmt.Errorf("audit: stream %s: %w", l.cfg.Stream, err)
	}
	first, last := info.State.FirstSeq, info.State.LastSeq
	if f.Before != 0 {
		last = min(last, f.Before-1)
	}
	if info.State.Msgs == 0 || last < first {
		return Page{}, nil
	}
	rules, monitor := l.cfg.RulesSubject(), l.cfg.MonitorSubject()
	var p Page
	scanned := 0
	low := last + 1 // the lowest sequence looked at
	for hi := last; hi >= first && scanned < f.MaxScan && len(p.Records) < f.Limit; {
		n := min(uint64(recentBatch), hi-first+1, uint64(f.MaxScan-scanned))
		msgs := make([]*jetstream.RawStreamMsg, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { msgs[i], errs[i] = l.stream.GetMsg(ctx, hi-i) })
		}
		wg.Wait()
		for i := range n {
			if errs[i] != nil && !errors.Is(errs[i], jetstream.ErrMsgNotFound) {
				return p, fmt.Errorf("audit: read seq %d: %w", hi-i, errs[i])
			}
			low = hi - i
			if errs[i] != nil || msgs[i].Subject == rules || msgs[i].Subject == monitor {
				continue // expired, deleted, a rules change or a monitor event
			}
			if r, ok := l.decodeRecord(msgs[i]); ok && f.match(&r) {
				p.Records = append(p.Records, r)
				if len(p.Records) == f.Limit {
					break
				}
			}
		}
		scanned += int(n)
		if hi < first+n {
			break
		}
		hi -= n
	}
	if low > first {
		p.Next = low
		p.ScanCut = len(p.Records) < f.Limit
	}
	return p, nil
}
