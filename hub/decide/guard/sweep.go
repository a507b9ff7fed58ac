package guard

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Sweep removes guardrail memory that can no longer matter, so the bucket does not grow forever:
// daily ledgers of days that ended more than retention ago, cooldown ledgers whose newest entry
// is older than cooldown + retention, and final decision records decided more than retention ago.
// It also expires approval requests past their ttl and finishes claims abandoned by a stopped
// replica (lease lapsed, proposal older than max_skew) as a Check would: suppressed, what they
// reserved given back.
// It is cleanup only, never what enforces a limit: each removal purges the key up to the revision
// that was judged, so a key written meanwhile stays, and leaves nothing behind (a delete would leave
// a marker for good, and every listing of the bucket would stream one per key ever swept). The
// delete markers an earlier release left are purged too, up to the revision listed, at most
// maxMarkerPurges a call. Any replica may run it, on a slow timer. It returns how many keys it
// removed (markers not counted).
func (g *Guard) Sweep(ctx context.Context) (int, error) {
	if g.closed.Load() {
		return 0, ErrClosed
	}
	var keys []string
	var markers []jetstream.KeyValueEntry
	var listed map[string]bool
	err := g.listMeta(ctx, ">", func() { keys, markers, listed = nil, nil, map[string]bool{} }, func(e jetstream.KeyValueEntry) {
		switch {
		case e.Operation() != jetstream.KeyValuePut:
			if len(markers) < maxMarkerPurges {
				markers = append(markers, e)
			}
		case !listed[e.Key()]:
			listed[e.Key()] = true
			keys = append(keys, e.Key())
		}
	})
	if err != nil {
		return 0, fmt.Errorf("guard: sweep: %w", err)
	}
	for _, m := range markers {
		if err := g.purgeKey(ctx, m.Key(), m.Revision()); err != nil {
			g.log.Debug("delete marker not removed", "key", m.Key(), "err", err)
		}
	}
	now := g.cfg.now()
	removed := 0
	for _, k := range keys {
		if ctx.Err() != nil {
			return removed, ctx.Err()
		}
		cur, rev, err := g.get(ctx, k)
		if err != nil || rev == 0 {
			continue
		}
		if strings.HasPrefix(k, prefixDec) {
			rec, err := decodeRecord(k, cur)
			switch {
			case err != nil:
			case rec.Status == string(NeedsApproval) && rec.Verdict != nil && now.After(rec.Created.Add(g.cfg.Approval.TTL)):
				// Requests nobody decided expire here too, not only when someone lists the queue.
				_ = g.expire(ctx, k, rec, rev)
				continue
			case rec.Status == statusClaimed && now.After(rec.Lease) && now.Sub(rec.Proposal.Time) > g.cfg.MaxSkew:
				// A replica stopped between its claim and its verdict, and no Check of the id came
				// after (its time bucket is over): what it reserved would be held for the rest of
				// the day and cooldown. Taken over as such a Check would, now that it can only
				// suppress it (time_skew), giving the reservations back.
				if _, err := g.Check(ctx, rec.Proposal); err != nil {
					g.log.Warn("abandoned decision not finished", "decision", rec.Proposal.ID, "err", err)
				}
				continue
			}
		}
		if !g.spent(k, cur, now) {
			continue
		}
		if err := g.purgeKey(ctx, k, rev); err == nil {
			removed++
		}
	}
	return removed, nil
}

// spent reports whether key (with value cur) can no longer affect any decision at now.
func (g *Guard) spent(key string, cur []byte, now time.Time) bool {
	switch {
	case strings.HasPrefix(key, prefixDay):
		day, _, _ := strings.Cut(strings.TrimPrefix(key, prefixDay), ".")
		start, err := time.ParseInLocation(time.DateOnly, day, g.zone)
		if err != nil {
			return false
		}
		return now.After(start.AddDate(0, 0, 1).Add(g.cfg.Retention))
	case strings.HasPrefix(key, prefixCool):
		l, err := decodeLedger(key, cur)
		if err != nil {
			return false
		}
		var newest time.Time
		for _, e := range l.Entries {
			if e.At.After(newest) {
				newest = e.At
			}
		}
		return now.After(newest.Add(g.cfg.Cooldown + g.cfg.Retention))
	case strings.HasPrefix(key, prefixDec):
		rec, err := decodeRecord(key, cur)
		if err != nil || !rec.final() || rec.Verdict == nil || rec.Status == string(NeedsApproval) {
			return false
		}
		return now.After(rec.Verdict.Decided.Add(g.cfg.Retention))
	}
	return false
}
