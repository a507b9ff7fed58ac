package inventory

import "sync"

// What recent keeps at most: the keys in production (a line's current SKUs) are few and their
// values small (~400 B); a hot key's value can reach the bucket's 1 MiB, so bytes are bounded too.
const (
	maxRecent      = 1024
	maxRecentBytes = 2 << 20
	maxRecentValue = 64 << 10
)

// recent remembers the value this Store last wrote to a few keys, with its revision, so that the
// next update of a key in production (every ingest batch moves the SKU its line makes) writes
// with compare-and-set straight away instead of reading first. A key another replica has written
// since fails that write (or the watch forgets it first), and the update reads it as before.
type recent struct {
	mu    sync.Mutex
	vals  map[string]recentVal
	order []recentRef // oldest first, for eviction; an entry replaced since is skipped
	bytes int
	gen   uint64
}

type recentVal struct {
	rev uint64
	b   []byte
	gen uint64
}

type recentRef struct {
	key string
	gen uint64
}

func (r *recent) get(key string) ([]byte, uint64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	v, ok := r.vals[key]
	return v.b, v.rev, ok
}

// put keeps a copy of b as key's value at rev (a value too large to be worth it is forgotten).
func (r *recent) put(key string, rev uint64, b []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.drop(key)
	if len(b) > maxRecentValue {
		return
	}
	if r.vals == nil {
		r.vals = make(map[string]recentVal)
	}
	r.gen++
	r.vals[key] = recentVal{rev, append([]byte(nil), b...), r.gen}
	r.order = append(r.order, recentRef{key, r.gen})
	r.bytes += len(b)
	for len(r.vals) > maxRecent || r.bytes > maxRecentBytes {
		old := r.order[0]
		r.order = r.order[1:]
		if v, ok := r.vals[old.key]; ok && v.gen == old.gen {
			r.drop(old.key)
		}
	}
	if len(r.order) > 4*maxRecent { // refs of replaced values pile up: keep the live ones
		live := make([]recentRef, 0, len(r.vals))
		for _, ref := range r.order {
			if v, ok := r.vals[ref.key]; ok && v.gen == ref.gen {
				live = append(live, ref)
			}
		}
		r.order = live
	}
}

func (r *recent) forget(key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.drop(key)
}

// seen forgets key when the bucket holds a later revision than the remembered one (another
// replica wrote it; the echoes of our own writes are never later).
func (r *recent) seen(key string, rev uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if v, ok := r.vals[key]; ok && rev > v.rev {
		r.drop(key)
	}
}

// drop removes key's value; its ref in order is skipped when it comes up. r.mu is held.
func (r *recent) drop(key string) {
	if v, ok := r.vals[key]; ok {
		r.bytes -= len(v.b)
		delete(r.vals, key)
	}
}
