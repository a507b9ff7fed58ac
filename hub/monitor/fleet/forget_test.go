package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
)

// TestGoneAgentsAreForgotten: agents come and go (gateways replaced, renamed, test rigs); an
// entry not heard from for forget_after (7 days by default) is deleted from the bucket by one
// replica, logged with the agent's name, and no longer listed, so the fleet does not grow for
// ever. An agent still heartbeating is kept.
func TestGoneAgentsAreForgotten(t *testing.T) {
	n := natstest.JetStream(t)
	var logs testutil.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	a, b := openForget(t, n.URL(), log), openForget(t, n.URL(), log)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	t0 := time.Now().UTC()
	for _, f := range []*Fleet{a, b} {
		f.now = func() time.Time { return t0 }
	}
	for _, id := range []string{"gone", "alive"} {
		if err := a.Heartbeat(ctx, &signal.Header{Agent: id, Site: "plant1"}, &signal.Status{Time: t0}, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	later := t0.Add(7*24*time.Hour + time.Minute)
	for _, f := range []*Fleet{a, b} {
		f.now = func() time.Time { return later }
	}
	if err := b.Heartbeat(ctx, &signal.Header{Agent: "alive", Site: "plant1"}, &signal.Status{Time: later}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	sweep(t, ctx, a, b)
	for name, f := range map[string]*Fleet{"a": a, "b": b} {
		if l := f.List(); len(l) != 1 || l[0].Agent.Agent != "alive" {
			t.Errorf("replica %s lists %d agents a week after one went quiet, want only the live one: %+v", name, len(l), l)
		}
		if _, ok := f.Get("plant1", "gone"); ok {
			t.Errorf("replica %s still has the agent gone for a week", name)
		}
	}
	_, js := natstest.Connect(t, n.URL())
	kv, err := js.KeyValue(ctx, "FLEET")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(ctx, "plant1.gone"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("the bucket still holds the agent gone for a week: %v", err)
	}
	if _, err := kv.Get(ctx, "plant1.alive"); err != nil {
		t.Errorf("the live agent's entry: %v", err)
	}
	if c := strings.Count(logs.String(), "agent=gone"); c != 1 {
		t.Errorf("%d log lines name the forgotten agent, want 1:\n%s", c, logs.String())
	}
	// It comes back: whichever replica hears it first stores it again, and both list it.
	for i, f := range []*Fleet{b, a} {
		if err := f.Heartbeat(ctx, &signal.Header{Agent: "gone", Site: "plant1"}, &signal.Status{Time: later.Add(time.Duration(i) * time.Second)}, time.Time{}); err != nil {
			t.Fatalf("the agent back after it was forgotten: %v", err)
		}
	}
	for name, f := range map[string]*Fleet{"a": a, "b": b} {
		testutil.WaitFor(t, 5*time.Second, "replica "+name+" to list the agent back", func() bool {
			v, ok := f.Get("plant1", "gone")
			return ok && len(f.List()) == 2 && v.LastSeen.Equal(later.Add(time.Second))
		})
	}
}

func openForget(t *testing.T, url string, log *slog.Logger) *Fleet {
	t.Helper()
	_, js := natstest.Connect(t, url)
	f, err := Open(context.Background(), js, "FLEET", 1, 30*time.Second, 0, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return f
}

// sweep runs every replica's sweep at once (the replicas race to delete), then waits for every
// replica's watch to bring what the others wrote.
func sweep(t *testing.T, ctx context.Context, fs ...*Fleet) {
	t.Helper()
	var wg sync.WaitGroup
	for _, f := range fs {
		wg.Go(func() { f.forget(ctx) })
	}
	wg.Wait()
	for i, f := range fs {
		testutil.WaitFor(t, 5*time.Second, fmt.Sprintf("replica %d to see the others' writes", i), func() bool {
			f.mu.RLock()
			defer f.mu.RUnlock()
			a := f.agents["plant1.alive"]
			return len(f.agents) == 1 && a != nil && a.Received.Equal(f.now())
		})
	}
}
