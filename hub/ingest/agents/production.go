package agents

import (
	"context"
	"path"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/gemba-io/gemba/hub/state/inventory"
	"github.com/gemba-io/gemba/signal"
)

// moveWorkers bounds the inventory writes of one batch in flight at once.
const moveWorkers = 16

// moveAll applies the batch's production to the inventory: the movements of one SKU × site in one
// write of its key (in order), different keys concurrently, since each is a read and a
// compare-and-set and a batch holds thousands. The first error is returned once every
// worker has stopped; movements applied before it stay applied (they are idempotent by id).
func (c *Consumer) moveAll(ctx context.Context, moves []inventory.Movement) error {
	if c.d.Stock == nil || len(moves) == 0 {
		return nil
	}
	type key struct{ sku, site string }
	var groups [][]int
	idx := make(map[key]int, len(moves))
	for i, mv := range moves {
		k := key{mv.SKU, mv.Site}
		g, ok := idx[k]
		if !ok {
			g = len(groups)
			idx[k] = g
			groups = append(groups, nil)
		}
		groups[g] = append(groups[g], i)
	}
	var (
		next     atomic.Int64
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
	)
	for range min(moveWorkers, len(groups)) {
		wg.Go(func() {
			for {
				g := int(next.Add(1) - 1)
				if g >= len(groups) {
					return
				}
				ms := make([]inventory.Movement, len(groups[g]))
				for j, i := range groups[g] {
					ms[j] = moves[i]
				}
				rs, bad, err := c.d.Stock.MoveAll(ctx, ms)
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					continue // the key's movements wait for the redelivery
				}
				for j := range ms {
					if bad[j] != nil {
						c.m.production.WithLabelValues("invalid").Inc()
						c.refuse.Warn(ms[j].Site, "production record refused by the inventory (at most one line a minute per site)",
							"movement", ms[j].ID, "err", bad[j])
						continue
					}
					c.m.production.WithLabelValues(rs[j].Outcome.String()).Inc()
				}
			}
		})
	}
	wg.Wait()
	return firstErr
}

// production turns a units-per-SKU feature into produced stock at the signal's site.
func (c *Consumer) production(b *signal.Batch, f *signal.Feature) (inventory.Movement, bool) {
	for _, p := range c.cfg.Production {
		if p.Feature != f.Name {
			continue
		}
		if ok, _ := path.Match(p.Signal, f.Signal); !ok {
			continue
		}
		sku, _ := f.Labels.Get("sku")
		if sku == "" || f.Value <= 0 {
			return inventory.Movement{}, false // nothing produced, or not attributable to a SKU
		}
		site := b.Site
		if c.d.Placer != nil {
			if _, _, s, ok := c.d.Placer.Place(f.Signal); ok && s != "" {
				site = s
			}
		}
		// The window identifies the units: the same window re-sent in another message (or from a
		// re-read stream) is the same movement.
		id := "prod:" + b.Agent + ":" + f.Signal + ":" + sku + ":" + strconv.FormatInt(f.WindowEnd.UnixNano(), 10)
		return inventory.Movement{ID: id, SKU: sku, Site: site, Kind: inventory.Produced, Qty: f.Value, Time: f.WindowEnd}, true
	}
	return inventory.Movement{}, false
}
