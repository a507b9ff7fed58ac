package fleet

import (
	"container/heap"
	"slices"
)

// Page returns at most limit agents sorted by site and id, those after the cursor (afterSite,
// afterAgent; empty: from the first), leaving out those not heard from for forget_after, as List
// does. It keeps the page alone as it goes through the fleet, not a copy of it: the memory of a
// request is bounded by limit.
func (f *Fleet) Page(afterSite, afterAgent string, limit int) []View {
	if limit < 1 {
		return nil
	}
	now := f.now()
	f.mu.RLock()
	defer f.mu.RUnlock()
	top := make(lastFirst, 0, min(limit, len(f.agents))) // the page so far, its last agent on top
	for _, a := range f.agents {
		if f.forgotten(a, now) || (afterSite != "" || afterAgent != "") && !agentLess(afterSite, afterAgent, a) {
			continue
		}
		switch {
		case len(top) < limit:
			heap.Push(&top, a)
		case agentLess(a.Site, a.Agent, top[0]):
			top[0] = a
			heap.Fix(&top, 0)
		}
	}
	slices.SortFunc(top, func(a, b *Agent) int {
		if agentLess(a.Site, a.Agent, b) {
			return -1
		}
		return 1 // no two agents share a site and an id
	})
	page := make([]View, len(top))
	for i, a := range top {
		page[i] = f.view(a, now)
	}
	return page
}

// agentLess reports whether (site, agent) sorts before a.
func agentLess(site, agent string, a *Agent) bool {
	return site < a.Site || site == a.Site && agent < a.Agent
}

// lastFirst is a heap of agents, the one sorting last on top.
type lastFirst []*Agent

func (h lastFirst) Len() int           { return len(h) }
func (h lastFirst) Less(i, j int) bool { return agentLess(h[j].Site, h[j].Agent, h[i]) }
func (h lastFirst) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *lastFirst) Push(x any)        { *h = append(*h, x.(*Agent)) }
func (h *lastFirst) Pop() any {
	old := *h
	a := old[len(old)-1]
	*h = old[:len(old)-1]
	return a
}

// Counts returns how many agents List returns and how many of them are stale, without a copy of
// them: a page's reader shows the whole fleet's.
func (f *Fleet) Counts() (agents, stale int) {
	now := f.now()
	f.mu.RLock()
	defer f.mu.RUnlock()
	for _, a := range f.agents {
		if f.forgotten(a, now) {
			continue
		}
		agents++
		if now.Sub(a.Received) > f.staleAfter { // as view has it
			stale++
		}
	}
	return agents, stale
}
