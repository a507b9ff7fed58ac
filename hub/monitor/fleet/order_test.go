package fleet

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
)

// seqBeat stores a heartbeat of gw1 as the agents' stream delivers it: its stream sequence, when
// the stream stored it, the agent's own time, and records to tell it by.
func seqBeat(t *testing.T, f *Fleet, seq uint64, stored, at time.Time, records uint64) {
	t.Helper()
	h := &signal.Header{Agent: "gw1", Site: "plant1", Incarnation: "ab"}
	st := &signal.Status{Time: at, Agent: "gw1", Site: "plant1", Buffer: map[string]signal.BufferState{"samples": {Records: records}}}
	if err := f.HeartbeatSeq(context.Background(), h, st, stored, seq); err != nil {
		t.Fatal(err)
	}
}

// TestLaterSequenceWinsOverAgentClock: a gateway's clock is set back (NTP, a reboot without a
// real-time clock) between two heartbeats. The later one in the agents' stream is the newer,
// whether the stream stored both at the same time or not: the fleet must show it right away. It
// kept the older one for half of stale_after (the agent's clock decided), showing the buffer
// figures, versions and uptime from before the reboot.
func TestLaterSequenceWinsOverAgentClock(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	for name, gap := range map[string]time.Duration{"stored at the same time": 0, "stored 2 s later": 2 * time.Second} {
		t.Run(name, func(t *testing.T) {
			f := open(t, natstest.JetStream(t).URL())
			now := t0
			f.now = func() time.Time { return now }
			seqBeat(t, f, 1, t0, t0, 10)
			now = t0.Add(gap)
			seqBeat(t, f, 2, now, t0.Add(-3*time.Hour), 20) // the agent's clock set back three hours
			v, _ := f.Get("plant1", "gw1")
			if v.BufferRecords != 20 || v.StreamSeq != 2 {
				t.Errorf("after the agents' stream sequence 2 (the agent's clock set back): %d records, sequence %d (want 20, 2)",
					v.BufferRecords, v.StreamSeq)
			}
		})
	}
}

// TestServerClockSteppedBack: the clock the agents' stream stores messages by steps back a minute,
// and the hub's with it (NTP stepping the host they share, or correcting every node), while an
// agent heartbeats every 10 s through two hub replicas. Each heartbeat, later in the stream, is
// what both replicas show, heard from 0 s ago. Every one was refused for the minute (stored before
// the one held): the fleet showed the heartbeat from before the step, heard from in the future.
// (With the server's clock alone behind the hub's, every age is that much longer: see the docs.)
func TestServerClockSteppedBack(t *testing.T) {
	n := natstest.JetStream(t)
	a, b := open(t, n.URL()), open(t, n.URL())
	t0 := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	var now time.Time
	for _, f := range []*Fleet{a, b} {
		f.now = func() time.Time { return now }
	}
	for i := range 10 {
		agent := t0.Add(time.Duration(i) * 10 * time.Second) // the agent's clock is right
		now = agent
		if i >= 4 {
			now = agent.Add(-time.Minute) // the server's (and the hub's) clock stepped back
		}
		f := []*Fleet{a, b}[i%2]
		seqBeat(t, f, uint64(100+i), now, agent, uint64(i))
		for name, r := range map[string]*Fleet{"a": a, "b": b} {
			if !testutil.Poll(5*time.Second, func() bool { v, _ := r.Get("plant1", "gw1"); return v.BufferRecords == uint64(i) }) {
				v, _ := r.Get("plant1", "gw1")
				t.Fatalf("heartbeat %d (%s): replica %s shows %d records, sequence %d, age %v s, stale %v (want %d, %d, age 0)",
					i, fmt.Sprint(now.Sub(t0)), name, v.BufferRecords, v.StreamSeq, v.AgeSeconds, v.Stale, i, 100+i)
			}
			if v, _ := r.Get("plant1", "gw1"); v.BufferRecords != uint64(i) || v.AgeSeconds != 0 || v.Stale {
				t.Fatalf("heartbeat %d: replica %s: %+v", i, name, v)
			}
		}
	}
}

// TestStreamRecreated: the agents' stream is deleted and created again: its sequences start over
// at 1, below the one held. A heartbeat of the new stream stored more than half of stale_after
// after the one held is the newer (the stream started over), and the agent, heartbeating every
// 10 s, never reads stale; one stored sooner than that is not (it cannot be told from one delivered
// late).
func TestStreamRecreated(t *testing.T) {
	n := natstest.JetStream(t)
	f := open(t, n.URL()) // stale_after 30s
	t0 := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	now := t0
	f.now = func() time.Time { return now }
	seqBeat(t, f, 5000, t0, t0, 5000)
	for i := uint64(1); i <= 4; i++ {
		now = t0.Add(time.Duration(i) * 10 * time.Second)
		seqBeat(t, f, i, now, now, i)
		v, _ := f.Get("plant1", "gw1")
		want := i
		if i == 1 { // 10 s after the one held: not taken yet
			want = 5000
		}
		if v.BufferRecords != want || v.Stale {
			t.Errorf("sequence %d of the new stream, %s after the last of the old: %d records, stale %v (want %d, fresh)",
				i, now.Sub(t0), v.BufferRecords, v.Stale, want)
		}
	}
}

// TestEntryWithoutSequence: an entry an older hub wrote has no stream sequence: the heartbeat is
// ordered against it by times, as that hub did (one stored before it does not replace it); the
// first one taken carries its sequence, and the next ones are ordered by it.
func TestEntryWithoutSequence(t *testing.T) {
	n := natstest.JetStream(t)
	f := open(t, n.URL())
	_, kv := bucket(t, n.URL())
	t0 := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	now := t0.Add(40 * time.Second)
	f.now = func() time.Time { return now }
	old := fmt.Sprintf(`{"agent":"gw1","site":"plant1","last_seen":%q,"received":%q,"buffer":{"samples":{"records":1}}}`,
		t0.Add(30*time.Second).Format(time.RFC3339Nano), t0.Add(30*time.Second).Format(time.RFC3339Nano))
	if _, err := kv.Put(context.Background(), "plant1.gw1", []byte(old)); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, "the fleet to read the older hub's entry", func() bool {
		v, ok := f.Get("plant1", "gw1")
		return ok && v.BufferRecords == 1
	})
	seqBeat(t, f, 7, t0, t0, 7) // stored before the entry: a redelivery
	if v, _ := f.Get("plant1", "gw1"); v.BufferRecords != 1 {
		t.Errorf("a heartbeat stored before the older hub's entry replaced it: %+v", v)
	}
	seqBeat(t, f, 8, now, now, 8)
	now = now.Add(10 * time.Second)
	seqBeat(t, f, 9, now.Add(-time.Minute), now, 9) // the server's clock stepped back
	if v, _ := f.Get("plant1", "gw1"); v.BufferRecords != 9 || v.StreamSeq != 9 {
		t.Errorf("after sequences 8 and 9: %d records, sequence %d (want 9, 9)", v.BufferRecords, v.StreamSeq)
	}
}
