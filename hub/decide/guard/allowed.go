package guard

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Allowed is one decision the guard allowed.
type Allowed struct {
	Proposal Proposal
	Verdict  Verdict
}

// AllowedSince lists the decisions whose allow verdict was recorded at or after since (approvals
// included), read from one pass over the decision records. It is what a reconciler compares with
// what was delivered: a replica that stopped between its verdict and the outbox leaves an allowed
// decision that nothing delivers. Reads may lag a little on a replicated bucket's followers.
func (g *Guard) AllowedSince(ctx context.Context, since time.Time) ([]Allowed, error) {
	if g.closed.Load() {
		return nil, ErrClosed
	}
	opCtx, cancel := context.WithTimeout(ctx, g.cfg.RetryFor)
	defer cancel()
	w, err := g.kv.Watch(opCtx, prefixDec+">", jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("guard: allowed: %w", err)
	}
	defer func() { _ = w.Stop() }()
	var out []Allowed
	for {
		select {
		case <-opCtx.Done():
			return nil, fmt.Errorf("guard: allowed: %w", opCtx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("guard: allowed: the listing ended early")
			}
			if e == nil {
				return out, nil // every current record seen
			}
			id := e.Key()[len(prefixDec):]
			rec, err := decodeRecord(id, e.Value())
			if err != nil {
				g.log.Warn("decision record skipped", "decision", id, "err", err)
				continue
			}
			if rec.Verdict != nil && rec.Verdict.Outcome == Allow && !rec.Verdict.Decided.Before(since) {
				out = append(out, Allowed{Proposal: rec.Proposal, Verdict: *rec.Verdict})
			}
		}
	}
}
