package fleet

import (
	"context"
	"testing"
	"time"

	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/signal"
)

// TestClockSetBackReadsFresh: a gateway's clock is set back (NTP corrects a clock that ran ahead,
// or a gateway without a real-time clock reboots to its build date) while it keeps heartbeating
// every 10 s. It is alive: it must not read as stale (stale_after 30s), and its new heartbeats (a
// new uptime) must be what the fleet shows.
func TestClockSetBackReadsFresh(t *testing.T) {
	n := natstest.JetStream(t)
	f := open(t, n.URL())
	t0 := time.Now().UTC()
	f.now = func() time.Time { return t0 }
	beat(t, f, t0, 10)
	back := t0.Add(-3 * time.Hour) // the agent's clock after its reboot
	for i := 1; i <= 12; i++ {     // two minutes of heartbeats every 10 s
		at := t0.Add(time.Duration(i) * 10 * time.Second)
		f.now = func() time.Time { return at }
		beat(t, f, back.Add(time.Duration(i)*10*time.Second), uint64(100+i))
		if v, _ := f.Get("plant1", "gw1"); v.Stale {
			t.Fatalf("after %s of heartbeats every 10 s, with the agent's clock set back, the agent reads stale: %+v",
				at.Sub(t0), v)
		}
	}
	if v, _ := f.Get("plant1", "gw1"); v.BufferRecords < 100 {
		t.Errorf("the fleet still shows the heartbeat from before the clock was set back: %d buffered records", v.BufferRecords)
	}
}

// TestAgeByTheHubsClock: the age shown next to "stale" is how long ago the hub heard from the
// agent, not the agent's clock: one two minutes behind that heartbeated a second ago is not "2m ago",
// and one ahead is not heard from in the future.
func TestAgeByTheHubsClock(t *testing.T) {
	n := natstest.JetStream(t)
	f := open(t, n.URL())
	t0 := time.Now().UTC()
	for _, skew := range []time.Duration{-2 * time.Minute, 20 * time.Second} {
		h := &signal.Header{Agent: "gw" + skew.String(), Site: "plant1"}
		f.now = func() time.Time { return t0 }
		if err := f.Heartbeat(context.Background(), h, &signal.Status{Time: t0.Add(skew)}, time.Time{}); err != nil {
			t.Fatal(err)
		}
		f.now = func() time.Time { return t0.Add(time.Second) }
		v, _ := f.Get("plant1", h.Agent)
		if v.AgeSeconds != 1 || v.Stale {
			t.Errorf("agent clock %s off, heard from 1 s ago: age %v s, stale %v", skew, v.AgeSeconds, v.Stale)
		}
	}
}

// TestOddAgentIDs: ids with characters a KV key cannot hold are escaped, found again and not
// confused with one another.
func TestOddAgentIDs(t *testing.T) {
	n := natstest.JetStream(t)
	f := open(t, n.URL())
	now := time.Now().UTC()
	ids := []string{"gw.1", "gw=2E1", "gw 1", "gw/1", "gw*>", "Größe-1"}
	for i, id := range ids {
		h := &signal.Header{Agent: id, Site: "plant.1"}
		if err := f.Heartbeat(context.Background(), h, &signal.Status{Time: now, Buffer: map[string]signal.BufferState{"s": {Records: uint64(i)}}}, time.Time{}); err != nil {
			t.Fatalf("%q: %v", id, err)
		}
	}
	for i, id := range ids {
		v, ok := f.Get("plant.1", id)
		if !ok || v.Agent.Agent != id || v.BufferRecords != uint64(i) {
			t.Errorf("%q: %+v %v", id, v, ok)
		}
	}
	if l := f.List(); len(l) != len(ids) {
		t.Errorf("List: %d agents, want %d", len(l), len(ids))
	}
}
