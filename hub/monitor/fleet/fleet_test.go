package fleet

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func open(t *testing.T, url string) *Fleet {
	t.Helper()
	_, js := natstest.Connect(t, url)
	f, err := Open(context.Background(), js, "FLEET", 1, 30*time.Second, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return f
}

func beat(t *testing.T, f *Fleet, at time.Time, records uint64) {
	t.Helper()
	h := &signal.Header{Agent: "gw1", Site: "plant1", Incarnation: "ab"}
	st := &signal.Status{Time: at, Agent: "gw1", Site: "plant1", Version: "v1",
		Buffer: map[string]signal.BufferState{"samples": {Records: records, OldestAge: 3, Dropped: map[string]uint64{"max_age": 2}},
			"features": {Records: 1, Dropped: map[string]uint64{"corrupt": 1}}}}
	if err := f.Heartbeat(context.Background(), h, st, time.Time{}); err != nil {
		t.Fatal(err)
	}
}

// TestNewestWins: heartbeats reach replicas out of order; the newest is kept on both, and an
// agent that stops sending reads as stale.
func TestNewestWins(t *testing.T) {
	n := natstest.JetStream(t)
	a, b := open(t, n.URL()), open(t, n.URL())
	t0 := time.Now().UTC()
	beat(t, a, t0.Add(2*time.Second), 20)
	beat(t, b, t0.Add(time.Second), 10) // older, arriving later at the other replica
	for name, f := range map[string]*Fleet{"a": a, "b": b} {
		testutil.WaitFor(t, 5*time.Second, "replica "+name+" has the newest heartbeat", func() bool {
			v, ok := f.Get("plant1", "gw1")
			return ok && v.BufferRecords == 21
		})
	}
	v, _ := b.Get("plant1", "gw1")
	if v.Dropped != 3 || v.OldestSeconds != 3 || v.Incarnation != "ab" || v.Stale {
		t.Errorf("view %+v", v)
	}
	b.now = func() time.Time { return t0.Add(time.Minute) }
	if v, _ := b.Get("plant1", "gw1"); !v.Stale {
		t.Errorf("a minute without heartbeat (stale_after 30s) reads fresh: %+v", v)
	}
	if l := a.List(); len(l) != 1 || l[0].Agent.Agent != "gw1" {
		t.Errorf("List: %+v", l)
	}
	if _, ok := a.Get("plant1", "nobody"); ok {
		t.Error("unknown agent found")
	}
}

// TestClockAheadDoesNotPinTheAgent: an agent whose clock ran a day ahead sends one heartbeat, then
// its clock is corrected. Its heartbeats from a minute on are stored (a heartbeat from the future
// must not win over every real one until that day comes), and once it stops it reads as stale.
func TestClockAheadDoesNotPinTheAgent(t *testing.T) {
	n := natstest.JetStream(t)
	f := open(t, n.URL())
	t0 := time.Now().UTC()
	f.now = func() time.Time { return t0 }
	beat(t, f, t0.Add(24*time.Hour), 10) // the agent's clock a day ahead
	f.now = func() time.Time { return t0.Add(time.Minute) }
	beat(t, f, t0.Add(time.Minute), 50) // corrected
	v, ok := f.Get("plant1", "gw1")
	if !ok || v.BufferRecords != 51 {
		t.Fatalf("the corrected heartbeat was not stored: %+v", v)
	}
	f.now = func() time.Time { return t0.Add(time.Hour) }
	if v, _ := f.Get("plant1", "gw1"); !v.Stale {
		t.Errorf("an hour without heartbeat (stale_after 30s) reads fresh: %+v", v)
	}
}

// TestClockBehindReadsFresh: an agent whose clock runs two minutes behind the hub's (no NTP on the
// gateway) but heartbeats every few seconds is alive: it must not read as stale (stale_after 30s).
func TestClockBehindReadsFresh(t *testing.T) {
	n := natstest.JetStream(t)
	f := open(t, n.URL())
	t0 := time.Now().UTC()
	f.now = func() time.Time { return t0 }
	beat(t, f, t0.Add(-2*time.Minute), 10)
	f.now = func() time.Time { return t0.Add(5 * time.Second) }
	if v, _ := f.Get("plant1", "gw1"); v.Stale {
		t.Errorf("an agent heartbeating 5 s ago (its clock 2 min behind) reads stale: %+v", v)
	}
	f.now = func() time.Time { return t0.Add(time.Minute) }
	if v, _ := f.Get("plant1", "gw1"); !v.Stale {
		t.Errorf("a minute without heartbeat reads fresh: %+v", v)
	}
}
