package opcua

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/gopcua/opcua/ua"

	"github.com/gemba-io/gemba/signal"
)

// poller reads one poll-mode group every interval in batched Read calls, for servers without
// (or with broken) subscriptions.
type poller struct {
	r     *runner
	group int
	retry atomic.Bool // include quarantined nodes in the next read
	buf   []signal.Sample
}

func (p *poller) run(ctx context.Context) {
	g := p.r.c.groups[p.group]
	t := time.NewTicker(g.PollInterval)
	defer t.Stop()
	p.retry.Store(true) // first read also settles every pending node
	for {
		if err := p.once(ctx); err != nil {
			if ctx.Err() == nil {
				select {
				case p.r.errs <- err:
				default:
				}
			}
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (p *poller) once(ctx context.Context) error {
	c := p.r.c
	withQuarantined := p.retry.Swap(false)
	var items []*item
	var ids []*ua.NodeID
	c.mu.Lock()
	for _, it := range c.byGroup[p.group] {
		if it.id == nil || (it.state == stateQuarantined && !withQuarantined) {
			continue
		}
		items = append(items, it)
		ids = append(ids, it.id)
	}
	c.mu.Unlock()
	if len(ids) == 0 {
		return nil
	}
	rctx, cancel := context.WithTimeout(ctx, c.cfg.Timeouts.Request)
	res, err := readBatched(rctx, p.r.s.client, ids, batchSize(p.r.s.limits.MaxNodesPerRead, c.cfg.BatchSize))
	cancel()
	if err != nil {
		return fmt.Errorf("poll group %s: %w", c.groups[p.group].Name, err)
	}
	now := time.Now()
	out := p.buf[:0]
	for i, it := range items {
		dv := res[i]
		if dv == nil {
			continue
		}
		out = c.appendSamples(out, it, dv, now)
	}
	p.buf = out[:0]
	_, err = c.emitSamples(ctx, p.r.emit, out)
	return err
}
