package uplink

import (
	"context"
	"sync"
	"time"
)

// window bounds the messages and bytes in flight across all lanes.
type window struct {
	mu       sync.Mutex
	n, bytes int
	maxN     int
	maxBytes int
	waiting  bool
	ch       chan struct{}
}

func (w *window) init(n, bytes int) {
	w.maxN, w.maxBytes, w.ch = n, bytes, make(chan struct{})
}

func (w *window) acquire(ctx context.Context, size int) error {
	for {
		w.mu.Lock()
		if w.n < w.maxN && (w.bytes+size <= w.maxBytes || w.n == 0) {
			w.n++
			w.bytes += size
			w.mu.Unlock()
			return nil
		}
		w.waiting = true
		ch := w.ch
		w.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (w *window) release(size int) {
	w.mu.Lock()
	w.n--
	w.bytes -= size
	if w.waiting {
		close(w.ch)
		w.ch, w.waiting = make(chan struct{}), false
	}
	w.mu.Unlock()
}

func (w *window) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}

// waitChange waits until a release or the deadline.
func (w *window) waitChange(deadline time.Time) {
	w.mu.Lock()
	w.waiting = true
	ch := w.ch
	w.mu.Unlock()
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	}
}
