package agents

import (
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
