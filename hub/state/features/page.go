package features

import (
	"container/heap"
	"slices"
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
	top := make(lastFirst, 0, min(limit, len(s.vals))) // the page so far, its last value on top
	for _, v := range s.vals {
		if name != "" && v.Name != name {
			continue
		}
		named = true
		if key != "" && v.Key != key || (afterName != "" || afterKey != "") && !valueLess(afterName, afterKey, v) {
			continue
		}
		switch {
		case len(top) < limit:
			heap.Push(&top, v)
		case valueLess(v.Name, v.Key, top[0]):
			top[0] = v
			heap.Fix(&top, 0)
		}
	}
	slices.SortFunc(top, func(a, b *Value) int {
		if valueLess(a.Name, a.Key, b) {
			return -1
		}
		return 1 // no two values share a name and a key
	})
	page = make([]Reading, len(top))
	for i, v := range top {
		page[i] = s.reading(v, now)
	}
	return page, named
}

// valueLess reports whether (name, key) sorts before v.
func valueLess(name, key string, v *Value) bool {
	return name < v.Name || name == v.Name && key < v.Key
}

// lastFirst is a heap of values, the one sorting last on top.
type lastFirst []*Value

func (h lastFirst) Len() int           { return len(h) }
func (h lastFirst) Less(i, j int) bool { return valueLess(h[j].Name, h[j].Key, h[i]) }
func (h lastFirst) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *lastFirst) Push(x any)        { *h = append(*h, x.(*Value)) }
func (h *lastFirst) Pop() any {
	old := *h
	v := old[len(old)-1]
	*h = old[:len(old)-1]
	return v
}
