package inventory

import "sync"

// maxRecent bounds the values recent keeps: the keys in production (a line's current SKUs) are few.
const maxRecent = 1024

// recent remembers the value this Store last wrote to a few keys, with its revision, so that the
// next update of a key in production (every ingest batch moves the SKU its line makes) writes
// with compare-and-set straight away instead of reading first. A key another replica has written
// since fails that write (or the watch forgets it first), and the update reads it as before.
type recent struct {
	mu    sync.Mutex
	vals  map[string]recentVal
	order []string // insertion order, for eviction
	next  int
}

type recentVal struct {
	rev uint64
	b   []byte
}

func (r *recent) get(key string) ([]byte, uint64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	v, ok := r.vals[key]
	return v.b, v.rev, ok
}

// put keeps a copy of b as key's value at rev.
func (r *recent) put(key string, rev uint64, b []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.vals == nil {
		r.vals = make(map[string]recentVal, maxRecent)
	}
	if _, ok := r.vals[key]; !ok {
		if len(r.order) < maxRecent {
			r.order = append(r.order, key)
		} else {
			delete(r.vals, r.order[r.next])
			r.order[r.next] = key
			r.next = (r.next + 1) % maxRecent
		}
	}
	r.vals[key] = recentVal{rev, append([]byte(nil), b...)}
}

func (r *recent) forget(key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.vals, key) // its slot in order stays until evicted
}

// seen forgets key when the bucket holds a later revision than the remembered one (another
// replica wrote it; the echoes of our own writes are never later).
func (r *recent) seen(key string, rev uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if v, ok := r.vals[key]; ok && rev > v.rev {
		delete(r.vals, key)
	}
}
