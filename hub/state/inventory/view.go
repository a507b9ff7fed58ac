package inventory

import (
	"cmp"
	"hash/maphash"
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
	seed    maphash.Seed
	slots   []int32 // open addressing on the key's hash: entry index + 1, 0 = empty; a power of two
	entries []ventry
	order   []int32 // entries sorted by (site, sku) once !dirty
	dirty   bool
}

// The index is a table of int32 rather than a map[string]int32: 4 bytes a slot (≤ 3/4 full) instead
// of a map's ~40 bytes a key (its own copy of the string header, slack, control bytes), ~11 MiB less
// at 300,000 keys, the largest part of the hub's live heap. Keys are never removed.
func newView(hint int) *view {
	return &view{seed: maphash.MakeSeed(), slots: make([]int32, slotsFor(hint)), entries: make([]ventry, 0, hint),
		order: make([]int32, 0, hint)}
}

// slotsFor is the table size for n keys: a power of two at least 4/3 n (and at least 64).
func slotsFor(n int) int {
	s := 64
	for s*3 < n*4 {
		s *= 2
	}
	return s
}

// find returns the slot of key: its entry's, or the empty one where it would go.
func (v *view) find(key string) (slot int, found bool) {
	mask := len(v.slots) - 1
	for i := int(maphash.String(v.seed, key)) & mask; ; i = (i + 1) & mask {
		e := v.slots[i]
		if e == 0 {
			return i, false
		}
		if v.entries[e-1].key == key {
			return i, true
		}
	}
}

// grow doubles the table and places every entry again (under the write lock).
func (v *view) grow() {
	v.slots = make([]int32, 2*len(v.slots))
	mask := len(v.slots) - 1
	for n := range v.entries {
		i := int(maphash.String(v.seed, v.entries[n].key)) & mask
		for v.slots[i] != 0 {
			i = (i + 1) & mask
		}
		v.slots[i] = int32(n + 1)
	}
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
	slot, ok := v.find(key)
	if ok {
		if e := &v.entries[v.slots[slot]-1]; s.rev > e.rev {
			e.summary = s
		}
		return
	}
	n := int32(len(v.entries))
	key = strings.Clone(key) // a watched key is a slice of its message's whole subject: keep only the key
	v.entries = append(v.entries, ventry{key: key, summary: s})
	v.slots[slot] = n + 1
	if len(v.entries)*4 > len(v.slots)*3 {
		v.grow()
	}
	v.order = append(v.order, n)
	v.dirty = true
}

func (v *view) get(key string) (summary, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	slot, ok := v.find(key)
	if !ok {
		return summary{}, false
	}
	return v.entries[v.slots[slot]-1].summary, true
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
