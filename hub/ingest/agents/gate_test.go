package agents

import (
	"math"
	"testing"
	"time"

	"github.com/gemba-io/gemba/internal/testutil"
)

// TestGate: bytes beyond the limit wait for a release; one message larger than the limit passes
// alone; a closed gate refuses.
func TestGate(t *testing.T) {
	g := newGate(100)
	if !g.acquire(60) {
		t.Fatal("first acquire refused")
	}
	got := make(chan bool, 1)
	go func() { got <- g.acquire(60) }() // 120 > 100: waits
	testutil.WaitFor(t, 5*time.Second, "the second acquire to wait", func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.used == 60
	})
	select {
	case <-got:
		t.Fatal("acquire past the limit did not wait")
	default:
	}
	g.release(60)
	if ok := <-got; !ok {
		t.Fatal("acquire refused after the release")
	}
	g.release(60)
	if !g.acquire(500) { // alone, larger than the limit
		t.Fatal("a message larger than the limit never passes")
	}
	go func() { got <- g.acquire(1) }()
	g.close()
	if <-got {
		t.Error("acquire on a closed gate succeeded")
	}
}

// The bytes in the hub's hands follow Go's memory limit: the largest bounds without one, the least
// at a small limit, 1/16 of it between; a batch is 3/4 of what may be buffered.
func TestInFlightFollowsTheMemoryLimit(t *testing.T) {
	for _, c := range []struct {
		limit                   int64
		wantBuffered, wantBatch int
	}{
		{math.MaxInt64, 32 << 20, 24 << 20},
		{120 << 20, 8 << 20, 6 << 20},
		{256 << 20, 16 << 20, 12 << 20},
		{1 << 40, 32 << 20, 24 << 20},
	} {
		if b, n := inFlight(c.limit); b != c.wantBuffered || n != c.wantBatch {
			t.Errorf("limit %d MiB: buffered %d batch %d, want %d and %d", c.limit>>20, b, n, c.wantBuffered, c.wantBatch)
		}
	}
}

// A raised bound lets a waiting acquire through.
func TestGateLimitChanges(t *testing.T) {
	g := newGate(100)
	g.acquire(80)
	got := make(chan bool, 1)
	go func() { got <- g.acquire(50) }()
	testutil.WaitFor(t, 5*time.Second, "the acquire past the bound to wait", func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.used == 80
	})
	g.setLimit(200)
	if ok := <-got; !ok {
		t.Fatal("acquire refused after the bound was raised")
	}
	g.close()
}
