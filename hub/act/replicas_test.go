package act

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

// replica is one loop with its own connection; kill closes the connection under it, as a
// SIGKILL would, whatever it is doing.
type replica struct {
	nc   *nats.Conn
	o    *Outbox
	stop func() error
}

func startReplica(t *testing.T, url string, cfg Config, name string) *replica {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Owner = name
	o := open(t, js, cfg)
	return &replica{nc: nc, o: o, stop: keepRunning(t, o, name)}
}

func (r *replica) kill() {
	r.nc.Close()
	_ = r.stop()
}

// keepRunning runs the loop as the hub does (hub.decisions.keepRunning): started again after a
// pause when it returns an error — a watch refused while a fresh cluster elects its leaders, or
// closed under a killed connection. stop ends it and returns nil.
func keepRunning(t *testing.T, o *Outbox, name string) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if err := o.Run(ctx); err != nil && ctx.Err() == nil {
				t.Logf("replica %s: %v; started again", name, err)
				select {
				case <-ctx.Done():
				case <-time.After(200 * time.Millisecond):
				}
			}
		}
	}()
	halt := func() error { cancel(); <-done; return nil }
	t.Cleanup(func() { _ = halt() })
	return halt
}

// Three replicas; while actions arrive, one is killed at a time and a new one started. Every
// action ends delivered: once on NATS, and at the webhook at least once, with a duplicate only
// where a replica died between a 2xx and its mark (the receiver drops it by webhook-id).
func TestReplicasKilledUnderLoad(t *testing.T) {
	n := natstest.JetStream(t)
	rcv := newReceiver(t, nil)
	cfg := testConfig(rcv.srv.URL)
	cfg.Lease = time.Second
	cfg.Workers = 4
	var reps []*replica
	for i := range 3 {
		reps = append(reps, startReplica(t, n.URL(), cfg, fmt.Sprintf("r%d", i)))
	}
	_, js := connect(t, n)
	enq := open(t, js, cfg) // the deciders' side: enqueues, runs no loop
	ctx := context.Background()
	const N, kills = 150, 6
	var ids []string
	for i := range N {
		id := fmt.Sprintf("rs3:rule:sku-%d:web:h20", i)
		ids = append(ids, id)
		if _, err := enq.Enqueue(ctx, hold(id, "web")); err != nil {
			t.Fatal(err)
		}
		if i%(N/kills) == N/kills-1 {
			victim := i / (N / kills) % len(reps)
			reps[victim].kill()
			reps[victim] = startReplica(t, n.URL(), cfg, fmt.Sprintf("r%d-%d", victim, i))
		}
	}
	testutil.WaitFor(t, 60*time.Second, "every action done", func() bool {
		for _, id := range ids {
			rec, err := enq.Get(ctx, id)
			if err != nil || rec.State != Done {
				return false
			}
		}
		return true
	})
	msgs := streamMsgs(t, js, "ACTIONS")
	doubles := 0
	for _, id := range ids {
		if len(msgs[id]) != 1 {
			t.Errorf("%s: %d NATS messages", id, len(msgs[id]))
		}
		c := rcv.count(id)
		if c < 1 {
			t.Errorf("%s: no webhook receipt", id)
		}
		doubles += c - 1
	}
	if len(msgs) != N {
		t.Errorf("%d ids on the stream, want %d", len(msgs), N)
	}
	// A kill can repeat at most the calls its replica had in flight.
	if doubles > kills*cfg.Workers {
		t.Errorf("%d repeated webhook receipts after %d kills of %d workers each", doubles, kills, cfg.Workers)
	}
	t.Logf("%d actions, %d kills: %d repeated webhook receipts (dropped by webhook-id at the receiver)", N, kills, doubles)
	rcv.checkSigned()
}

// On a 3-node cluster with R3 bucket and stream, delivery goes on while a server is down.
func TestClusterNodeDown(t *testing.T) {
	nodes := natstest.Cluster(t, 3)
	url := natstest.URLs(nodes...)
	rcv := newReceiver(t, nil)
	cfg := testConfig(rcv.srv.URL)
	cfg.Replicas = 3
	a := startReplica(t, url, cfg, "a")
	startReplica(t, url, cfg, "b")
	ctx := context.Background()
	const N = 20
	for i := range N {
		if i == N/2 {
			nodes[1].Stop()
		}
		id := fmt.Sprintf("rs3:rule:sku-%d:web:h21", i)
		err := fmt.Errorf("not tried")
		testutil.WaitFor(t, 30*time.Second, "enqueue "+id, func() bool { // an election can refuse a write for a moment
			_, err = a.o.Enqueue(ctx, hold(id, "web"))
			return err == nil
		})
	}
	testutil.WaitFor(t, 60*time.Second, "all delivered", func() bool {
		for i := range N {
			rec, err := a.o.Get(ctx, fmt.Sprintf("rs3:rule:sku-%d:web:h21", i))
			if err != nil || rec.State != Done {
				return false
			}
		}
		return true
	})
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	msgs := streamMsgs(t, js, "ACTIONS")
	for i := range N {
		id := fmt.Sprintf("rs3:rule:sku-%d:web:h21", i)
		if len(msgs[id]) != 1 || rcv.count(id) < 1 {
			t.Errorf("%s: %d NATS messages, %d receipts", id, len(msgs[id]), rcv.count(id))
		}
	}
	rcv.checkSigned()
}
