package agents

import (
	"context"
	"testing"
	"time"

	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
)

// TestHeartbeatsByStreamSequence: an agent reboots with its clock set back a day (no real-time
// clock) and heartbeats again: the fleet shows its new heartbeat, the later one in the agents'
// stream, with its stream sequence. The fleet was not given the sequence and kept the heartbeat
// from before the reboot (its agent time the later) for half of stale_after.
func TestHeartbeatsByStreamSequence(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	stream(t, js)
	h := startHub(t, n.URL()) // stale_after 1m
	now := time.Now().UTC()
	for i, at := range []time.Time{now, now.Add(-24 * time.Hour)} {
		b := signal.AppendBatch(nil, &signal.Batch{Header: signal.Header{Schema: signal.SchemaVersion, Agent: "gw1", Site: "plant1",
			Incarnation: "aa01", Stream: signal.StreamStatus, FirstSeq: 1, LastSeq: 1, Count: 1},
			Status: []signal.Status{{Time: at, Agent: "gw1", Site: "plant1", Buffer: map[string]signal.BufferState{"samples": {Records: uint64(i + 1)}}}}})
		if _, err := js.Publish(context.Background(), "gemba.plant1.gw1.status", b); err != nil {
			t.Fatal(err)
		}
	}
	if !testutil.Poll(10*time.Second, func() bool { a, _ := h.fleet.Get("plant1", "gw1"); return a.BufferRecords == 2 }) {
		a, _ := h.fleet.Get("plant1", "gw1")
		t.Fatalf("after the agent's heartbeat from after its reboot: %d records, stream sequence %d (want 2, 2)", a.BufferRecords, a.StreamSeq)
	}
	if a, _ := h.fleet.Get("plant1", "gw1"); a.StreamSeq != 2 || a.Stale {
		t.Errorf("the heartbeat shown: %+v (want stream sequence 2, fresh)", a)
	}
}
