package act

import "sync"

// maxHanded bounds the records handed to a Run and not yet started by it; beyond it Enqueue leaves
// records unclaimed for the watch to find, as every other replica's are.
const maxHanded = 1024

// handed is a record Enqueue created claimed by this replica, at revision rev.
type handed struct {
	key string
	rec Record
	rev uint64
}

// handoff passes records from Enqueue to this replica's Run. A slot is reserved before the
// record is created (so a claimed record always finds room) and filled or cancelled after.
type handoff struct {
	mu       sync.Mutex
	running  bool // a Run takes records
	reserved int  // slots taken by Enqueues in progress
	held     int  // records given and not yet started: queued, or taken and waiting for a worker
	queue    []handed
	ready    chan struct{} // signalled when queue gains a record; made by open
}

func (h *handoff) open() chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.running, h.ready = true, make(chan struct{}, 1)
	return h.ready
}

// close ends a Run's turn: what is queued stays claimed in the bucket until its lease runs out.
func (h *handoff) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.running, h.queue, h.held = false, nil, 0
}

// reserve takes a slot when a Run takes records and has room.
func (h *handoff) reserve() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.running || h.reserved+h.held >= maxHanded {
		return false
	}
	h.reserved++
	return true
}

func (h *handoff) cancel(reserved bool) {
	if !reserved {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.reserved--
}

func (h *handoff) give(r handed) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.reserved--
	if !h.running {
		return // the Run ended meanwhile: the lease runs out
	}
	h.queue = append(h.queue, r)
	h.held++
	select {
	case h.ready <- struct{}{}:
	default:
	}
}

// take returns the queued records; each stays held until Run reports it started.
func (h *handoff) take() []handed {
	h.mu.Lock()
	defer h.mu.Unlock()
	q := h.queue
	h.queue = nil
	return q
}

// started frees the slot of a taken record that Run has started.
func (h *handoff) started() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.running {
		h.held--
	}
}
