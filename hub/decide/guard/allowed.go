package guard

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Allowed is one decision the guard allowed.
type Allowed struct {
	Proposal Proposal
	Verdict  Verdict
}

// AllowedSince lists the decisions whose allow verdict was recorded at or after since (approvals
// included). It is what a reconciler compares with what was delivered: a replica that stopped
// between its verdict and the outbox leaves an allowed decision that nothing delivers. It reads
// only the decision records written since then (an ordered consumer on the bucket's stream from that
// time, less max_skew for the server's clock), not every record the retention keeps: the engine
// asks on every timer tick. Reads may lag a little on a replicated bucket's followers.
func (g *Guard) AllowedSince(ctx context.Context, since time.Time) ([]Allowed, error) {
	if g.closed.Load() {
		return nil, ErrClosed
	}
	opCtx, cancel := context.WithTimeout(ctx, g.cfg.RetryFor)
	defer cancel()
	// Records are stamped by the server's clock, the verdicts by the replicas': a record decided at
	// since is stored after since - max_skew. (And never later than now, whatever the clock says.)
	start := since
	if now := time.Now(); now.Before(start) {
		start = now
	}
	start = start.Add(-g.cfg.MaxSkew)
	cons, err := g.js.OrderedConsumer(opCtx, "KV_"+g.cfg.Bucket, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{g.subjPrefix + prefixDec + ">"},
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy, OptStartTime: &start,
	})
	if err != nil {
		return nil, fmt.Errorf("guard: allowed: %w", err)
	}
	it, err := cons.Messages()
	if err != nil {
		return nil, fmt.Errorf("guard: allowed: %w", err)
	}
	defer it.Stop()
	info := cons.CachedInfo()
	if info == nil {
		return nil, fmt.Errorf("guard: allowed: the reading consumer has no info")
	}
	latest := map[string]*record{} // per decision id, its latest record written since start
	for pending := info.NumPending; pending > 0; {
		m, err := it.Next(jetstream.NextContext(opCtx))
		if err != nil {
			return nil, fmt.Errorf("guard: allowed: %w", err)
		}
		md, err := m.Metadata()
		if err != nil {
			return nil, fmt.Errorf("guard: allowed: %w", err)
		}
		pending = md.NumPending
		id := strings.TrimPrefix(m.Subject(), g.subjPrefix+prefixDec)
		if op := m.Headers().Get("KV-Operation"); op == "DEL" || op == "PURGE" {
			delete(latest, id)
			continue
		}
		rec, err := decodeRecord(id, m.Data())
		if err != nil {
			g.log.Warn("decision record skipped", "decision", id, "err", err)
			delete(latest, id)
			continue
		}
		latest[id] = rec
	}
	var out []Allowed
	for _, rec := range latest {
		if rec.Verdict != nil && rec.Verdict.Outcome == Allow && !rec.Verdict.Decided.Before(since) {
			out = append(out, Allowed{Proposal: rec.Proposal, Verdict: *rec.Verdict})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Verdict.Decided.Before(out[j].Verdict.Decided) })
	return out, nil
}
