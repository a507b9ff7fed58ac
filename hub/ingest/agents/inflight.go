package agents

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/internal/kvretry"
)

// held are the messages taken from the consumer and not yet settled (waiting or being processed).
// Their ack deadline is pushed back every ack_wait/3, so a backlog waiting behind a slow batch (a
// leader election, a slow state write) is not redelivered to another replica meanwhile, which would
// only multiply the work.
type held struct {
	mu   sync.Mutex
	msgs map[jetstream.Msg]struct{}
}

func newHeld() *held { return &held{msgs: map[jetstream.Msg]struct{}{}} }

func (h *held) add(m jetstream.Msg) {
	h.mu.Lock()
	h.msgs[m] = struct{}{}
	h.mu.Unlock()
}

func (h *held) remove(ms ...jetstream.Msg) {
	h.mu.Lock()
	for _, m := range ms {
		delete(h.msgs, m)
	}
	h.mu.Unlock()
}

func (h *held) keepAlive(ctx context.Context, every time.Duration) {
	t := time.NewTicker(max(every, 100*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		h.mu.Lock()
		ms := make([]jetstream.Msg, 0, len(h.msgs))
		for m := range h.msgs {
			ms = append(ms, m)
		}
		h.mu.Unlock()
		for _, m := range ms {
			_ = m.InProgress()
		}
	}
}

// Byte bounds of the messages in the hub's hands: asked for per pull, taken but not processed
// (buffered and in the batch being processed), and per batch. Not derived from the memory limit:
// under the default limit, 8 MiB (batches of 6) instead of 32 lowered a 300,000-key hub's peak while
// ingesting a backlog by 10 MiB at best (within the runs' spread), and cost 25–45 % of the ingest rate
// (more, smaller flushes: more garbage for a collector already working near the limit).
const (
	minPullBytes  = 8 << 20 // a cluster's max_payload is 1 MiB by default: pulls that small make small batches
	bufferedBytes = 32 << 20
	batchBytes    = 24 << 20
)

// pullBytes is the most bytes asked for per pull: the server's max_payload, so that the largest
// message it can hold still fits one pull (a larger one would never be delivered).
func (c *Consumer) pullBytes() int {
	n := minPullBytes
	if nc := c.d.JS.Conn(); nc != nil {
		n = max(n, int(nc.MaxPayload()))
	}
	return n
}

// gate bounds the bytes of messages taken from the consumer and not yet processed.
type gate struct {
	mu     sync.Mutex
	cond   sync.Cond
	used   int
	limit  int
	closed bool
}

func newGate(limit int) *gate {
	g := &gate{limit: limit}
	g.cond.L = &g.mu
	return g
}

// acquire waits until n more bytes fit (one message always fits alone); false once closed.
func (g *gate) acquire(n int) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	for !g.closed && g.used > 0 && g.used+n > g.limit {
		g.cond.Wait()
	}
	if g.closed {
		return false
	}
	g.used += n
	return true
}

func (g *gate) release(n int) {
	g.mu.Lock()
	g.used -= n
	g.mu.Unlock()
	g.cond.Broadcast()
}

func (g *gate) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	g.cond.Broadcast()
}

// inPlace retries a write of a batch whose stock is moved (err its first failure, nil when it has
// not been tried yet) until it succeeds or ctx ends; the batch's messages are kept alive meanwhile.
// Handing the batch back instead would leave the production older than the inventory's horizon
// to the inventory's remembered ids alone (bounded per key), not the done markers. The write must
// keep what failed for its next call (Features.Flush and Observer.Flush do).
func (c *Consumer) inPlace(ctx context.Context, what string, err error, write func(context.Context) error) error {
	wait := 100 * time.Millisecond
	for {
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
			c.m.errors.Inc()
			c.log.Warn("write after the inventory moves failed, retrying", "what", what, "err", err)
			if kvretry.Sleep(ctx, wait) != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
			wait = min(2*wait, 5*time.Second)
		}
		if err = write(ctx); err == nil {
			return nil
		}
	}
}
