package fleet

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/signal"
)

// TestReplayedHeartbeatOfADeadAgent: an agent sends its last heartbeat and dies; the hub stops
// before acknowledging it and starts five minutes later, when the agents' stream delivers it again.
// The agent must read as dead (stale_after 30s) right away, not fresh for another stale_after: the
// heartbeat's age is from when the stream stored it (the server's clock), not from when the hub
// read it.
func TestReplayedHeartbeatOfADeadAgent(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "AGENTS", Subjects: []string{"gemba.>"}})
	if err != nil {
		t.Fatal(err)
	}
	sent := time.Now().UTC()
	if _, err := js.Publish(ctx, "gemba.plant1.gw1.status", []byte("heartbeat")); err != nil {
		t.Fatal(err)
	}
	msg, err := st.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	stored := msg.Time // the server's timestamp of the message
	f := open(t, n.URL())
	f.now = func() time.Time { return stored.Add(5 * time.Minute) } // the hub restarted five minutes on
	h := &signal.Header{Agent: "gw1", Site: "plant1", Incarnation: "ab"}
	if err := f.HeartbeatSeq(ctx, h, &signal.Status{Time: sent, Agent: "gw1", Site: "plant1"}, stored, msg.Sequence); err != nil {
		t.Fatal(err)
	}
	v, ok := f.Get("plant1", "gw1")
	if !ok || !v.Stale || v.AgeSeconds < 299 {
		t.Errorf("an agent whose last heartbeat was stored 5 minutes ago, replayed after a hub restart, reads stale %v, age %v s (want stale, ~300 s): %+v",
			v.Stale, v.AgeSeconds, v)
	}
}

// A heartbeat the stream stored before the one the fleet holds never replaces it, however long
// ago the newer one came: a redelivered older heartbeat made the agent's age jump back (its
// LastSeen and buffer figures went back in time too). So with their sequences in the agents'
// stream (the older's the lower), and without (an older hub's entries).
func TestOlderStoredHeartbeatNeverReplacesNewer(t *testing.T) {
	n := natstest.JetStream(t)
	ctx := context.Background()
	for _, seqs := range [][2]uint64{{0, 0}, {1, 2}} {
		f := open(t, n.URL())
		t0 := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
		now := t0.Add(time.Minute)
		f.now = func() time.Time { return now }
		h := &signal.Header{Agent: fmt.Sprint("gw", seqs[0]), Site: "plant1", Incarnation: "ab"}
		beat := func(stored time.Time, seq, records uint64) {
			t.Helper()
			st := &signal.Status{Time: stored, Agent: h.Agent, Site: "plant1", Buffer: map[string]signal.BufferState{"default": {Records: records}}}
			if err := f.HeartbeatSeq(ctx, h, st, stored, seq); err != nil {
				t.Fatal(err)
			}
		}
		beat(t0.Add(30*time.Second), seqs[1], 7) // the newer heartbeat, read first
		now = now.Add(10 * time.Minute)          // long past stale_after/2
		beat(t0, seqs[0], 999)                   // the older one, redelivered
		v, ok := f.Get("plant1", h.Agent)
		if !ok || !v.Received.Equal(t0.Add(30*time.Second)) || v.BufferRecords != 7 {
			t.Errorf("sequences %v: after a redelivered older heartbeat: received %s, %d records (want %s, 7)",
				seqs, v.Received, v.BufferRecords, t0.Add(30*time.Second))
		}
	}
}
