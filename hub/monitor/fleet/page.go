package fleet

import "github.com/gemba-io/gemba/internal/topn"

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
	first := topn.New(limit, len(f.agents), func(a, b *Agent) bool { return agentLess(a.Site, a.Agent, b) })
	for _, a := range f.agents {
		if f.forgotten(a, now) || (afterSite != "" || afterAgent != "") && !agentLess(afterSite, afterAgent, a) {
			continue
		}
		first.Offer(a)
	}
	top := first.Sorted()
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
