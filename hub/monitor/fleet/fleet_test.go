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
	f, err := Open(context.Background(), js, "FLEET", 1, 30*time.Second, nil)
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
	if err := f.Heartbeat(context.Background(), h, st); err != nil {
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
