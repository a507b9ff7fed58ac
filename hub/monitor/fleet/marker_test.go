package fleet

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
)

// TestForgottenAgentsLeaveNoMarker: forgetting an agent leaves a delete marker in the bucket (so
// every replica's watch sees it go); once it is older than forget_after the sweep purges it. It
// stayed for ever: the bucket grew by a marker for every agent ever forgotten (test rigs, replaced
// gateways), and every replica loaded them all at each start.
func TestForgottenAgentsLeaveNoMarker(t *testing.T) {
	n := natstest.JetStream(t)
	log := slog.New(slog.DiscardHandler)
	a, b := openForget(t, n.URL(), log), openForget(t, n.URL(), log)
	js, _ := bucket(t, n.URL())
	st, err := js.Stream(context.Background(), "KV_FLEET")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	t0 := time.Now().UTC()
	setNow := func(at time.Time) {
		for _, f := range []*Fleet{a, b} {
			f.now = func() time.Time { return at }
		}
	}
	setNow(t0)
	for _, id := range []string{"gone", "alive"} {
		if err := a.Heartbeat(ctx, &signal.Header{Agent: id, Site: "plant1"}, &signal.Status{Time: t0}, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	alive := func(at time.Time) {
		t.Helper()
		setNow(at)
		if err := b.Heartbeat(ctx, &signal.Header{Agent: "alive", Site: "plant1"}, &signal.Status{Time: at}, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	alive(t0.Add(DefaultForgetAfter + time.Minute))
	sweep(t, ctx, a, b) // forgets "gone": its delete marker is in the bucket
	m, err := st.GetLastMsgForSubject(ctx, "$KV.FLEET.plant1.gone")
	if err != nil {
		t.Fatalf("the forgotten agent's delete marker: %v", err)
	}
	alive(m.Time.Add(time.Hour))
	sweep(t, ctx, a, b)
	if _, err := st.GetLastMsgForSubject(ctx, "$KV.FLEET.plant1.gone"); err != nil {
		t.Errorf("the delete marker was purged an hour after the agent was forgotten (kept forget_after): %v", err)
	}
	alive(m.Time.Add(DefaultForgetAfter + time.Minute))
	sweep(t, ctx, a, b)
	if _, err := st.GetLastMsgForSubject(ctx, "$KV.FLEET.plant1.gone"); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Errorf("the delete marker of an agent forgotten longer than forget_after ago is still in the bucket: %v", err)
	}
	if info, err := st.Info(ctx); err != nil || info.State.Msgs != 1 {
		t.Errorf("the bucket holds %+v (%v), want the live agent's entry alone", info.State, err)
	}
}

// TestMarkerPurgeSparesAgentBack: the purge of a forgotten agent's delete marker is bounded by the
// marker's own revision: a heartbeat the agent sent after it came back, stored before the replica
// purging saw it, is kept.
func TestMarkerPurgeSparesAgentBack(t *testing.T) {
	n := natstest.JetStream(t)
	log := slog.New(slog.DiscardHandler)
	a, b := openForget(t, n.URL(), log), openForget(t, n.URL(), log)
	_, kv := bucket(t, n.URL())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	t0 := time.Now().UTC()
	if err := a.Heartbeat(ctx, &signal.Header{Agent: "gw1", Site: "plant1"}, &signal.Status{Time: t0}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, "plant1.gw1"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, "replica a to see the agent deleted", func() bool {
		_, ok := a.Get("plant1", "gw1")
		return !ok
	})
	a.mu.RLock()
	marker := a.markers["plant1.gw1"]
	a.mu.RUnlock()
	if marker.revision == 0 {
		t.Fatal("replica a holds no delete marker")
	}
	// The agent comes back through replica b forget_after later; replica a's sweep runs on the
	// marker it read before the heartbeat.
	later := marker.created.Add(DefaultForgetAfter + time.Minute)
	a.now, b.now = func() time.Time { return later }, func() time.Time { return later }
	if err := b.Heartbeat(ctx, &signal.Header{Agent: "gw1", Site: "plant1"}, &signal.Status{Time: later}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, "replica a to see the agent back", func() bool {
		_, ok := a.Get("plant1", "gw1")
		return ok
	})
	a.mu.Lock()
	a.markers["plant1.gw1"] = marker
	a.mu.Unlock()
	a.forget(ctx)
	if _, err := kv.Get(ctx, "plant1.gw1"); err != nil {
		t.Errorf("the heartbeat of the agent back was purged with its old delete marker: %v", err)
	}
}
