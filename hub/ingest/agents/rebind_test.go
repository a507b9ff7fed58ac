package agents

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

// TestConsumerDeletedWhileRunning: the durable consumer is deleted under a running replica (an
// operator's `nats consumer rm`, a stream restored): the replica does not sit there "ready" and
// idle. It binds the consumer again, as a restart would; the replayed messages are duplicates (the
// done markers) and what arrives next is applied.
func TestConsumerDeletedWhileRunning(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	stream(t, js)
	h := startHub(t, n.URL())
	publish(t, js, 1, false, "", units("SKU-1", 1, 2))
	testutil.WaitFor(t, 10*time.Second, "first message applied", func() bool {
		p, ok := h.inv.Get("SKU-1", "plant1")
		return ok && p.Produced == 2
	})
	if err := js.DeleteConsumer(context.Background(), "GEMBA", "gemba-hub"); err != nil {
		t.Fatal(err)
	}
	publish(t, js, 2, false, "", units("SKU-1", 2, 3))
	testutil.WaitFor(t, 20*time.Second, "message published after the deletion applied", func() bool {
		p, ok := h.inv.Get("SKU-1", "plant1")
		return ok && p.Produced == 5
	})
	testutil.WaitFor(t, 10*time.Second, "the replayed first message dropped as a duplicate", func() bool {
		return count(h.m.duplicates) == 1
	})
	if ok, why := h.c.Ready(); !ok {
		t.Errorf("not ready after binding again: %s", why)
	}
	if p, _ := h.inv.Get("SKU-1", "plant1"); p.Produced != 5 {
		t.Errorf("produced %v, want 5 (each message once)", p.Produced)
	}
}

// TestMalformedLogMemoryBounded: garbage on ever new agent subjects (a misconfigured publisher with
// stream rights) is logged once per agent for the first agents only; what the consumer remembers
// of them stays bounded instead of growing with every new subject.
func TestMalformedLogMemoryBounded(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	stream(t, js)
	h := startHub(t, n.URL())
	const agents = maxWarned + 50
	for i := range agents {
		if _, err := js.PublishAsync(fmt.Sprintf("gemba.plant1.gw%d.features", i), []byte("{not json")); err != nil {
			t.Fatal(err)
		}
		if i%1000 == 999 || i == agents-1 { // below the client's limit of unacknowledged publishes
			select {
			case <-js.PublishAsyncComplete():
			case <-time.After(30 * time.Second):
				t.Fatal("publishes not acknowledged")
			}
		}
	}
	testutil.WaitFor(t, 60*time.Second, "every message terminated", func() bool { return count(h.m.malformed) == agents })
	h.c.mu.Lock()
	remembered := len(h.c.warned)
	h.c.mu.Unlock()
	if remembered > maxWarned {
		t.Errorf("%d agents remembered for the malformed log, want at most %d", remembered, maxWarned)
	}
}
