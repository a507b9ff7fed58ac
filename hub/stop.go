package hub

import (
	"slices"
	"sync"
)

// rooms are the goroutines a stop waits for before the stores and the connection close, by name:
// a room still running on a closed store or connection would write (or acknowledge) into nothing.
type rooms struct {
	mu      sync.Mutex
	running map[string]int
	changed chan struct{} // closed (and replaced) when a room ends
}

// run runs f on a goroutine of its own as the room name.
func (r *rooms) run(name string, f func()) {
	r.mu.Lock()
	if r.running == nil {
		r.running, r.changed = map[string]int{}, make(chan struct{})
	}
	r.running[name]++
	r.mu.Unlock()
	go func() {
		defer func() {
			r.mu.Lock()
			if r.running[name]--; r.running[name] == 0 {
				delete(r.running, name)
			}
			close(r.changed)
			r.changed = make(chan struct{})
			r.mu.Unlock()
		}()
		f()
	}()
}

// wait waits until every room has ended, or until expired is closed (nil: no limit), and names
// the rooms still running then (none: all ended).
func (r *rooms) wait(expired <-chan struct{}) []string {
	for {
		r.mu.Lock()
		if len(r.running) == 0 {
			r.mu.Unlock()
			return nil
		}
		changed := r.changed
		r.mu.Unlock()
		select {
		case <-changed:
		case <-expired:
			r.mu.Lock()
			defer r.mu.Unlock()
			late := make([]string, 0, len(r.running))
			for name := range r.running {
				late = append(late, name)
			}
			slices.Sort(late)
			return late
		}
	}
}
