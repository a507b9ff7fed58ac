package features

import (
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/gemba-io/gemba/internal/topn"
)

// Page returns at most limit values sorted by name and key, those after the cursor (afterName,
// afterKey; empty: from the first), of feature name and key (each: all when empty); named reports
// whether the store holds any value of name (whatever the key and the cursor). It keeps the page
// alone as it goes through the store, not a copy of the store: the memory of a request is bounded
// by limit, however many values the store holds.
func (s *Store) Page(name, key, afterName, afterKey string, limit int) (page []Reading, named bool) {
	if limit < 1 {
		return nil, false
	}
	now := s.now()
	s.mu.RLock()
	defer s.mu.RUnlock()
	top := s.first(limit, func(v *Value) bool {
		if name != "" && v.Name != name {
			return false
		}
		named = true
		return (key == "" || v.Key == key) && (afterName == "" && afterKey == "" || valueLess(afterName, afterKey, v))
	})
	page = make([]Reading, len(top))
	for i, v := range top {
		page[i] = s.reading(v, now)
	}
	return page, named
}

// Selection is a page of values and counts of all the values its filter matched.
type Selection struct {
	Page []Reading
	// Total and Stale count the values matching, wherever the cursor is; Before those of them at
	// or before the cursor (the page is Before+1 to Before+len(Page) of Total).
	Total, Stale, Before int
}

// Select is Page for a reader that shows where a page is and filters by part of the key: at most
// limit values sorted by name and key, after the cursor, of feature name (every feature when
// empty) whose key contains keyPart, with the counts of all the values matching. Its memory too is
// bounded by limit.
func (s *Store) Select(name, keyPart, afterName, afterKey string, limit int) Selection {
	var sel Selection
	if limit < 1 {
		return sel
	}
	now := s.now()
	maxAge := make(map[string]time.Duration, len(s.cfg.Definitions))
	for _, d := range s.cfg.Definitions {
		maxAge[d.Name] = d.MaxAge
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	top := s.first(limit, func(v *Value) bool {
		if name != "" && v.Name != name || keyPart != "" && !strings.Contains(v.Key, keyPart) {
			return false
		}
		sel.Total++
		if age, ok := maxAge[v.Name]; !ok || v.Stale(now, age) { // as reading has it
			sel.Stale++
		}
		if (afterName != "" || afterKey != "") && !valueLess(afterName, afterKey, v) {
			sel.Before++
			return false
		}
		return true
	})
	sel.Page = make([]Reading, len(top))
	for i, v := range top {
		sel.Page[i] = s.reading(v, now)
	}
	return sel
}

// first returns the first limit values (by name and key) of those keep takes, keeping them alone
// as it goes through the store. s.mu held.
func (s *Store) first(limit int, keep func(*Value) bool) []*Value {
	first := topn.New(limit, len(s.vals), func(a, b *Value) bool { return valueLess(a.Name, a.Key, b) })
	for _, v := range s.vals {
		if keep(v) {
			first.Offer(v)
		}
	}
	return first.Sorted()
}

// Group is one group of Groups: its first values in order, and how many values it has.
type Group struct {
	First []Reading
	Count int
}

// Groups sorts the values of feature name into groups (group names a value's; "": none) and keeps
// of each group the first limit values by cmp, and its count: its memory is bounded by the groups
// and limit, not by the store. group and cmp are called with the store locked for reading: they
// must not call the store.
func (s *Store) Groups(name string, limit int, group func(*Reading) string, cmp func(a, b *Reading) int) map[string]*Group {
	out := map[string]*Group{}
	if limit < 1 {
		return out
	}
	now := s.now()
	s.mu.RLock()
	defer s.mu.RUnlock()
	r := new(Reading) // each value in turn: one reading, not one a value
	for _, v := range s.vals {
		if v.Name != name {
			continue
		}
		*r = s.reading(v, now)
		k := group(r)
		if k == "" {
			continue
		}
		g := out[k]
		if g == nil {
			g = &Group{}
			out[k] = g
		}
		g.Count++
		if len(g.First) == limit {
			if cmp(r, &g.First[limit-1]) >= 0 {
				continue
			}
			g.First = g.First[:limit-1]
		}
		i := sort.Search(len(g.First), func(i int) bool { return cmp(&g.First[i], r) > 0 })
		g.First = slices.Insert(g.First, i, *r)
	}
	return out
}

// valueLess reports whether (name, key) sorts before v.
func valueLess(name, key string, v *Value) bool {
	return name < v.Name || name == v.Name && key < v.Key
}
