package agents

import (
	"context"
	"encoding/json"
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

// place finds the site of every production signal of a features message — through the graph, else
// the agent's site — and encodes them as the message's pin (nil: no production in it). The first
// delivery's pin is stored with its dedup claim, and a redelivery places its production where the
// first delivery did (pinned), whatever graph version was loaded meanwhile: the inventory knows a
// movement's id only at the SKU × site it was applied to, so placed elsewhere it would count twice.
func (c *Consumer) place(b *signal.Batch) (map[string]string, []byte) {
	if c.d.Stock == nil || b.Stream != signal.StreamFeatures {
		return nil, nil
	}
	var sites map[string]string
	for fi := range b.Features {
		f := &b.Features[fi]
		if !c.isProduction(f) {
			continue
		}
		if _, ok := sites[f.Signal]; ok {
			continue
		}
		site := b.Site
		if c.d.Placer != nil {
			if _, _, s, ok := c.d.Placer.Place(f.Signal); ok && s != "" {
				site = s
			}
		}
		if sites == nil {
			sites = make(map[string]string)
		}
		sites[f.Signal] = site
	}
	if sites == nil {
		return nil, nil
	}
	pin, _ := json.Marshal(sites) // a map of strings always encodes (sorted keys: the same sites give the same bytes)
	return sites, pin
}

// pinned is the sites of the pin a message's first delivery stored, over mine (a signal it does not
// name — the production config changed meanwhile — is placed by the current graph). A pin that does
// not decode, which only another program writing the bucket can cause, leaves mine.
func (c *Consumer) pinned(b *signal.Batch, pin []byte, mine map[string]string) map[string]string {
	var sites map[string]string
	if err := json.Unmarshal(pin, &sites); err != nil {
		c.log.Error("production placement pinned by the first delivery unreadable, placing by the current graph",
			"agent", b.Agent, "message", b.MsgID(), "err", err)
		return mine
	}
	c.log.Info("redelivered production placed where its first delivery placed it, not by the current graph",
		"agent", b.Agent, "message", b.MsgID(), "first", string(pin))
	for sig, site := range sites {
		if _, ok := mine[sig]; ok && site != "" {
			mine[sig] = site
		}
	}
	return mine
}

func (c *Consumer) isProduction(f *signal.Feature) bool {
	for _, p := range c.cfg.Production {
		if p.Feature != f.Name {
			continue
		}
		if ok, _ := path.Match(p.Signal, f.Signal); ok {
			return true
		}
	}
	return false
}

// production turns a units-per-SKU feature into produced stock at the site place (or the first
// delivery's pin) gave its signal.
func (c *Consumer) production(b *signal.Batch, f *signal.Feature, sites map[string]string) (inventory.Movement, bool) {
	for _, p := range c.cfg.Production {
		if p.Feature != f.Name {
			continue
		}
		if ok, _ := path.Match(p.Signal, f.Signal); !ok {
			continue
		}
		site, ok := sites[f.Signal] // place found every production signal
		if !ok {
			return inventory.Movement{}, false
		}
		sku, _ := f.Labels.Get("sku")
		if sku == "" || f.Value <= 0 {
			return inventory.Movement{}, false // nothing produced, or not attributable to a SKU
		}
		// The window identifies the units: the same window re-sent in another message (or from a
		// re-read stream) is the same movement.
		id := "prod:" + b.Agent + ":" + f.Signal + ":" + sku + ":" + strconv.FormatInt(f.WindowEnd.UnixNano(), 10)
		return inventory.Movement{ID: id, SKU: sku, Site: site, Kind: inventory.Produced, Qty: f.Value, Time: f.WindowEnd}, true
	}
	return inventory.Movement{}, false
}
