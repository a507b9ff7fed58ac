package rules

import (
	"crypto/sha256"
	"encoding/binary"
	"slices"
	"sync"
)

// Cache keeps the most recently used compiled versions, so a version that comes back (a
// rollback, the same file reloaded on every change notice) is not parsed and compiled again.
// Safe for concurrent use. Failed loads are not kept.
type Cache struct {
	mu      sync.Mutex
	max     int
	entries []cacheEntry // most recently used last
}

type cacheEntry struct {
	key [sha256.Size]byte
	set *Set
}

// NewCache returns a cache of at most size versions (at least 1).
func NewCache(size int) *Cache { return &Cache{max: max(size, 1)} }

// Load is Load through the cache.
func (c *Cache) Load(data []byte, opts ...Option) (*Set, error) { return c.load(data, true, opts) }

// LoadStored is LoadStored through the cache.
func (c *Cache) LoadStored(data []byte, opts ...Option) (*Set, error) {
	return c.load(data, false, opts)
}

func (c *Cache) load(data []byte, strict bool, opts []Option) (*Set, error) {
	o := options{costLimit: DefaultCostLimit}
	for _, opt := range opts {
		opt(&o)
	}
	// The key covers everything that changes the compiled result: the text, the environment
	// and the options.
	h := sha256.New()
	var b [10]byte
	b[0] = map[bool]byte{false: 0, true: 1}[strict]
	b[1] = map[bool]byte{false: 0, true: 1}[o.known]
	binary.BigEndian.PutUint64(b[2:], o.costLimit)
	h.Write(b[:])
	for _, f := range o.features {
		h.Write([]byte(f))
		h.Write([]byte{0})
	}
	h.Write([]byte{1})
	h.Write(data)
	var key [sha256.Size]byte
	h.Sum(key[:0])

	c.mu.Lock()
	if i := slices.IndexFunc(c.entries, func(e cacheEntry) bool { return e.key == key }); i >= 0 {
		e := c.entries[i]
		c.entries = append(slices.Delete(c.entries, i, i+1), e)
		c.mu.Unlock()
		return e.set, nil
	}
	c.mu.Unlock()

	s, err := load(data, strict, opts)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !slices.ContainsFunc(c.entries, func(e cacheEntry) bool { return e.key == key }) {
		c.entries = append(c.entries, cacheEntry{key, s})
		if len(c.entries) > c.max {
			c.entries = slices.Delete(c.entries, 0, len(c.entries)-c.max)
		}
	}
	return s, nil
}
