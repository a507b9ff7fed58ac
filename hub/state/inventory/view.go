package inventory

import (
	"cmp"
	"slices"
	"strings"
	"sync"

	"github.com/gemba-io/gemba/hub/state/kvkey"
)

// Filter selects and pages positions for List. Positions are ordered by site, then SKU, both compared in
// their escaped key form (plain byte order for names made of letters, digits, '-', '_' and '/').
type Filter struct {
	Site, SKU           string // exact match when set
	AfterSite, AfterSKU string // cursor: start after this pair (the last position of the previous page)
	Limit               int    // at most this many; ≤ 0 for all
}

// ventry is one key's summary. No per-key allocation besides the key string: entries live in one slice.
type ventry struct {
	key string
	summary
}

func (e *ventry) site() string { return e.key[:strings.IndexByte(e.key, '.')] }
func (e *ventry) sku() string  { return e.key[strings.IndexByte(e.key, '.')+1:] }

// view is the in-memory summary of every key: what Get and List read.
type view struct {
	mu      sync.RWMutex
	idx     map[string]int32
	entries []ventry
	order   []int32 // entries sorted by (site, sku) once !dirty
	dirty   bool
}

func newView(hint int) *view {
	return &view{idx: make(map[string]int32, hint), entries: make([]ventry, 0, hint), order: make([]int32, 0, hint)}
}

func (v *view) len() int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return len(v.entries)
}

// put takes a summary unless the view already holds the same or a later revision of the key.
func (v *view) put(key string, s summary) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if i, ok := v.idx[key]; ok {
		if e := &v.entries[i]; s.rev > e.rev {
			e.summary = s
		}
		return
	}
	n := int32(len(v.entries))
	key = strings.Clone(key) // a watched key is a slice of its message's whole subject: keep only the key
	v.entries = append(v.entries, ventry{key: key, summary: s})
	v.idx[key] = n
	v.order = append(v.order, n)
	v.dirty = true
}

func (v *view) get(key string) (summary, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	i, ok := v.idx[key]
	if !ok {
		return summary{}, false
	}
	return v.entries[i].summary, true
}

func (v *view) compare(a, b int32) int {
	x, y := &v.entries[a], &v.entries[b]
	return cmp.Or(strings.Compare(x.site(), y.site()), strings.Compare(x.sku(), y.sku()))
}

// sorted makes order current; new keys are rare after the load, so sorting on demand costs little.
func (v *view) sorted() {
	v.mu.RLock()
	dirty := v.dirty
	v.mu.RUnlock()
	if !dirty {
		return
	}
	v.mu.Lock()
	if v.dirty {
		slices.SortFunc(v.order, v.compare)
		v.dirty = false
	}
	v.mu.Unlock()
}

func escaped(s string) string {
	var b strings.Builder
	kvkey.EscapeTo(&b, s)
	return b.String()
}

func (v *view) list(f Filter) []Position {
	v.sorted()
	v.mu.RLock()
	defer v.mu.RUnlock()
	for v.dirty { // a key arrived between sorting and reading: sort again
		v.mu.RUnlock()
		v.sorted()
		v.mu.RLock()
	}
	site, sku := escaped(f.Site), escaped(f.SKU)
	start := 0
	if f.AfterSite != "" || f.AfterSKU != "" {
		as, ak := escaped(f.AfterSite), escaped(f.AfterSKU)
		start, _ = slices.BinarySearchFunc(v.order, 0, func(i, _ int32) int {
			e := &v.entries[i]
			if c := cmp.Or(strings.Compare(e.site(), as), strings.Compare(e.sku(), ak)); c <= 0 {
				return -1
			}
			return 1
		})
	}
	if site != "" {
		first, _ := slices.BinarySearchFunc(v.order, 0, func(i, _ int32) int {
			return cmp.Or(strings.Compare(v.entries[i].site(), site), 1)
		})
		start = max(start, first)
	}
	var out []Position
	for _, i := range v.order[start:] {
		e := &v.entries[i]
		if site != "" && e.site() != site {
			break
		}
		if sku != "" && e.sku() != sku {
			continue
		}
		ps, pk, err := splitKey(e.key)
		if err != nil {
			continue // take() admits only keys that split
		}
		out = append(out, e.summary.position(ps, pk))
		if f.Limit > 0 && len(out) == f.Limit {
			break
		}
	}
	return out
}
