package act

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

// While the replica's loop runs, Enqueue creates the record claimed by that loop, which delivers
// it from memory: the record's writes are the create, the publish mark and the done mark (no
// claim after a read), and it is published once. The bucket holds this one key, so its revision
// counts the writes (a watch would not: history 1 drops a revision a watcher has not read yet).
func TestEnqueueHandsOverToOwnLoop(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := connect(t, n)
	cfg := testConfig("")
	cfg.Owner = "A"
	o := open(t, js, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	run(t, o)
	testutil.WaitFor(t, 10*time.Second, "the loop taking records", func() bool {
		o.hand.mu.Lock()
		defer o.hand.mu.Unlock()
		return o.hand.running
	})
	a := hold("rs3:hold:sku-1:store:2026-12-04T21", "store")
	if fresh, err := o.Enqueue(ctx, a); err != nil || !fresh {
		t.Fatalf("enqueue: fresh %v err %v", fresh, err)
	}
	waitState(t, o, a.DecisionID, Done, EventStart)
	e, err := o.kv.Get(ctx, key(a.DecisionID))
	if err != nil {
		t.Fatal(err)
	}
	if e.Revision() != 3 {
		t.Fatalf("record at revision %d: want 3 writes (the create claimed by A, the publish mark, done)", e.Revision())
	}
	if c := streamCount(t, js, "ACTIONS"); c != 1 {
		t.Fatalf("stream holds %d messages, want 1", c)
	}
}

// A record created claimed by a replica that stops before delivering it is taken over by
// another loop once the lease has run out, and delivered once.
func TestHandedRecordTakenOverAfterLease(t *testing.T) {
	n := natstest.JetStream(t)
	_, jsA := connect(t, n)
	cfg := testConfig("")
	cfg.Lease, cfg.Owner = time.Second, "A"
	a := open(t, jsA, cfg)
	a.hand.open() // as a running loop would, but nothing takes the record: A stops here
	ctx := context.Background()
	act := hold("rs3:hold:sku-2:store:2026-12-04T21", "store")
	if _, err := a.Enqueue(ctx, act); err != nil {
		t.Fatal(err)
	}
	rec, err := a.Get(ctx, act.DecisionID)
	if err != nil || rec.Owner != "A" || rec.State != Pending {
		t.Fatalf("after enqueue: %+v, %v (want pending, claimed by A)", rec, err)
	}
	a.hand.close()

	_, jsB := connect(t, n)
	cfg.Owner = "B"
	b := open(t, jsB, cfg)
	run(t, b)
	rec = waitState(t, b, act.DecisionID, Done, EventStart)
	if rec.Owner != "" {
		t.Errorf("lease not released: %+v", rec)
	}
	if c := streamCount(t, jsB, "ACTIONS"); c != 1 {
		t.Errorf("stream holds %d messages, want 1", c)
	}
}

// A record handed to a loop whose workers are all busy waits in memory. Once its lease has run
// out another replica takes it over and delivers it; when the busy loop reaches it, later than
// the stream's duplicate window, it must not publish it again (the stream would keep a second
// message for the decision): its lease is gone, so it reads the record as any other loop would.
func TestHandedRecordExpiredInMemoryNotRepublished(t *testing.T) {
	n := natstest.JetStream(t)
	_, jsA := connect(t, n)
	cfg := testConfig("")
	cfg.Lease, cfg.DuplicateWindow, cfg.Workers, cfg.Owner = time.Second, 2*time.Second, 1, "A"
	a := open(t, jsA, cfg)
	ctx := context.Background()
	first := hold("rs3:hold:sku-1:store:2026-12-05T14", "store")
	second := hold("rs3:hold:sku-2:store:2026-12-05T14", "store")
	busy, release := make(chan struct{}), make(chan struct{})
	a.afterPublish = func(id string) error {
		if id == first.DecisionID {
			close(busy)
			<-release // A's only worker is held here, as a slow webhook would hold it
		}
		return nil
	}
	run(t, a)
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock) // runs before the loop's stop
	testutil.WaitFor(t, 10*time.Second, "the loop taking records", func() bool {
		a.hand.mu.Lock()
		defer a.hand.mu.Unlock()
		return a.hand.running
	})
	if _, err := a.Enqueue(ctx, first); err != nil {
		t.Fatal(err)
	}
	<-busy
	if _, err := a.Enqueue(ctx, second); err != nil { // handed to A, waiting for its worker
		t.Fatal(err)
	}

	_, jsB := connect(t, n)
	cfgB := cfg
	cfgB.Owner = "B"
	b := open(t, jsB, cfgB)
	stopB := run(t, b)
	waitState(t, b, second.DecisionID, Done, EventStart) // taken over after A's lease
	if err := stopB(); err != nil {
		t.Fatal(err)
	}
	// Let the duplicate window of B's publish pass: a probe published after it is accepted again.
	probe := &nats.Msg{Subject: "gemba.actions.holds.store", Data: []byte(`{"id":"probe"}`), Header: nats.Header{}}
	probe.Header.Set(jetstream.MsgIDHeader, "probe")
	if _, err := jsB.PublishMsg(ctx, probe); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, "the duplicate window to pass", func() bool {
		ack, err := jsB.PublishMsg(ctx, probe)
		return err == nil && !ack.Duplicate
	})

	// A record of no loop's own: A's watch finds it and starts it only once its worker has
	// finished with what it was handed (handed records go first, one worker).
	_, jsC := connect(t, n)
	cfgC := cfg
	cfgC.Owner = "C"
	third := hold("rs3:hold:sku-3:store:2026-12-05T14", "store")
	if _, err := open(t, jsC, cfgC).Enqueue(ctx, third); err != nil {
		t.Fatal(err)
	}
	unblock()
	waitState(t, a, third.DecisionID, Done, EventStart)
	msgs := streamMsgs(t, jsB, "ACTIONS")
	for _, id := range []string{second.DecisionID, third.DecisionID} {
		if len(msgs[id]) != 1 {
			t.Errorf("%s: %d messages on the stream, want 1", id, len(msgs[id]))
		}
	}
}

// Records handed to a loop count against maxHanded until the loop starts them, also once the loop
// has taken them out of the handoff: a loop whose workers are busy claims no more than that, and
// Enqueue leaves the rest unclaimed, for any loop to take at once.
func TestHandedRecordsBounded(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := connect(t, n)
	cfg := testConfig("")
	cfg.Lease, cfg.Workers, cfg.Owner = time.Minute, 1, "A"
	o := open(t, js, cfg)
	ctx := context.Background()
	first := hold("rs3:hold:sku-0:store:bounded", "store")
	busy, release := make(chan struct{}), make(chan struct{})
	o.afterPublish = func(id string) error {
		if id == first.DecisionID {
			close(busy)
			<-release // the only worker is held here
		}
		return nil
	}
	run(t, o)
	t.Cleanup(func() { close(release) }) // runs before the loop's stop
	testutil.WaitFor(t, 10*time.Second, "the loop taking records", func() bool {
		o.hand.mu.Lock()
		defer o.hand.mu.Unlock()
		return o.hand.running
	})
	if _, err := o.Enqueue(ctx, first); err != nil {
		t.Fatal(err)
	}
	<-busy
	const extra = 5
	var ids []string
	for i := range maxHanded + extra {
		a := hold(fmt.Sprintf("rs3:hold:sku-%d:store:bounded", i+1), "store")
		if _, err := o.Enqueue(ctx, a); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, a.DecisionID)
	}
	claimed := 0
	for _, id := range ids {
		rec, err := o.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if rec.Owner == "A" {
			claimed++
		}
	}
	if claimed > maxHanded {
		t.Errorf("%d records created claimed by a loop with no free worker; at most %d may wait for it", claimed, maxHanded)
	}
}
