package agents

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub/ingest/dedup"
	"github.com/gemba-io/gemba/hub/state/features"
	"github.com/gemba-io/gemba/hub/state/inventory"
	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
)

// replica is one hub replica's ingest on a connection of its own, with the inventory clock four days
// past t0 (the production of windows around t0 is older than the inventory's horizon).
type replica struct {
	nc   *nats.Conn
	inv  *inventory.Store
	c    *Consumer
	stop context.CancelFunc
	done chan error
}

func startReplica(t *testing.T, url string, beforeRun func(r *replica)) *replica {
	t.Helper()
	nc, js := natstest.Connect(t, url)
	ctx := context.Background()
	r := &replica{nc: nc, done: make(chan error, 1)}
	fs, err := features.Open(ctx, js, features.Config{Bucket: "F", Definitions: defs}, plant{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fs.Close)
	icfg := inventory.DefaultConfig()
	icfg.Now = func() time.Time { return t0.Add(100 * time.Hour) }
	if r.inv, err = inventory.Open(ctx, js, icfg, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.inv.Close() })
	dd, err := dedup.Open(ctx, js, dedup.Config{Bucket: "DEDUP", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.AckWait = 2 * time.Second
	cfg.Production = []Production{{Signal: "*.pack.parts", Feature: "units"}}
	if r.c, err = New(cfg, Deps{JS: js, Prefix: "gemba", Dedup: dd, Features: fs, Stock: r.inv, Placer: plant{}}, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	r.stop = cancel
	if beforeRun != nil {
		beforeRun(r)
	}
	go func() { r.done <- r.c.Run(rctx) }()
	t.Cleanup(func() { cancel(); <-r.done })
	return r
}

// TestCrashBetweenMovesAndDoneMarks: a replica dies (its connection gone, nothing settled) after it
// moved the stock of a replayed backlog older than the inventory's horizon and before it marked the
// batch's claims done. Another replica takes the redelivery through the shared consumer: the claims
// are still pending, so the batch goes through again, and the inventory alone must absorb it — every
// window counted exactly once.
func TestCrashBetweenMovesAndDoneMarks(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	stream(t, js)
	died := make(chan struct{})
	var once sync.Once
	startReplica(t, n.URL(), func(a *replica) {
		a.c.doneAll = func(context.Context, []dedup.Claim) error {
			once.Do(func() {
				a.nc.Close() // the process is gone: no ack, no nak, no done mark reaches the server
				a.stop()
				close(died)
			})
			return errors.New("replica died")
		}
	})
	const windows = 300 // one message of a replayed backlog: more than any few ids a value keeps
	var fsIn = make([]signal.Feature, 0, windows)
	for w := range windows {
		fsIn = append(fsIn, units("SKU-1", w, 1))
	}
	publish(t, js, 1, true, "", fsIn...)
	select {
	case <-died:
	case <-time.After(30 * time.Second):
		t.Fatal("the first replica never reached its done marks")
	}
	b := startReplica(t, n.URL(), nil)
	waitConsumer(t, js, "the redelivery applied and acked", func(info *jetstream.ConsumerInfo) bool {
		return info.NumAckPending == 0 && info.NumPending == 0 && info.NumRedelivered == 0 && info.Delivered.Consumer >= 2
	})
	p, ok := b.inv.Get("SKU-1", "plant1")
	if !ok || p.Produced != windows || p.Position != windows {
		t.Errorf("produced %v, position %v, want %d (each window once)", p.Produced, p.Position, windows)
	}
	if d := count(b.c.m.production.WithLabelValues(inventory.Duplicate.String())); d != windows {
		t.Errorf("the redelivery found %v of its %d movements applied", d, windows)
	}
}

// failingStock fails the first MoveAll of one SKU: the inventory bucket unavailable for longer than the
// store retries, for that key.
type failingStock struct {
	Stock
	sku  string
	once sync.Once
}

func (f *failingStock) MoveAll(ctx context.Context, ms []inventory.Movement) ([]inventory.Result, []error, error) {
	fail := false
	if ms[0].SKU == f.sku {
		f.once.Do(func() { fail = true })
	}
	if fail {
		return nil, nil, errors.New("inventory bucket unavailable")
	}
	return f.Stock.MoveAll(ctx, ms)
}

// TestFailedMovesRedeliveredDoNotRecount: a batch whose moves fail for one key is handed back while
// the other keys' moves are stored. Its redelivery must not count those again, a replayed backlog
// older than the inventory's horizon included.
func TestFailedMovesRedeliveredDoNotRecount(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	stream(t, js)
	r := startReplica(t, n.URL(), func(r *replica) { r.c.d.Stock = &failingStock{Stock: r.c.d.Stock, sku: "SKU-2"} })
	const windows = 100
	fsIn := []signal.Feature{units("SKU-2", 0, 1)}
	for w := range windows {
		fsIn = append(fsIn, units("SKU-1", w, 1))
	}
	publish(t, js, 1, true, "", fsIn...)
	waitConsumer(t, js, "the batch applied and acked", func(info *jetstream.ConsumerInfo) bool {
		return info.NumAckPending == 0 && info.NumPending == 0 && info.Delivered.Consumer >= 2
	})
	if p, _ := r.inv.Get("SKU-1", "plant1"); p.Produced != windows {
		t.Errorf("SKU-1 produced %v, want %d (each window once)", p.Produced, windows)
	}
	if p, _ := r.inv.Get("SKU-2", "plant1"); p.Produced != 1 {
		t.Errorf("SKU-2 produced %v, want 1", p.Produced)
	}
}

// TestStopFinishesTheBatchInHand: a replica stopped (SIGTERM) while a batch is on its way through
// finishes it within the drain — its done marks written and its messages acked — instead of handing
// it back to be redelivered to another replica.
func TestStopFinishesTheBatchInHand(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	stream(t, js)
	var once sync.Once
	a := startReplica(t, n.URL(), func(a *replica) {
		real := a.c.doneAll
		a.c.doneAll = func(ctx context.Context, cs []dedup.Claim) error {
			once.Do(a.stop) // the stop arrives while the batch is being marked
			return real(ctx, cs)
		}
	})
	publish(t, js, 1, false, "", units("SKU-1", 0, 5))
	select {
	case err := <-a.done:
		if err != nil {
			t.Fatal(err)
		}
		a.done <- nil // for the cleanup
	case <-time.After(30 * time.Second):
		t.Fatal("the replica did not stop")
	}
	// Acks are sent, not awaited: the server may count the last one a moment after the stop. A
	// batch handed back is never acked (it waits for a redelivery no replica asks for).
	waitConsumer(t, js, "the batch in hand acked, not handed back (ack floor 1, nothing pending)", func(info *jetstream.ConsumerInfo) bool {
		return info.NumAckPending == 0 && info.NumPending == 0 && info.AckFloor.Consumer == 1
	})
}

// waitConsumer polls the hub's durable consumer's info until ok holds.
func waitConsumer(t *testing.T, js jetstream.JetStream, what string, ok func(*jetstream.ConsumerInfo) bool) {
	t.Helper()
	ctx := context.Background()
	testutil.WaitFor(t, 30*time.Second, what, func() bool {
		cons, err := js.Consumer(ctx, "GEMBA", "gemba-hub")
		if err != nil {
			return false
		}
		info, err := cons.Info(ctx)
		return err == nil && ok(info)
	})
}

// movablePlant is a graph that can be replaced while the hub runs: line1 is at site, then elsewhere.
type movablePlant struct{ site atomic.Pointer[string] }

func (p *movablePlant) Place(sig string) (string, string, string, bool) {
	if _, _, _, ok := (plant{}).Place(sig); !ok {
		return "", "", "", false
	}
	return "pack1", "line1", *p.site.Load(), true
}

// TestRedeliveryAfterGraphChangeCountsOnce: a replica moves a batch's production to the site the
// graph gives line1 and dies before marking it done; a new graph version, loaded meanwhile, puts
// line1 at another site. The redelivery must place the production where the first apply did: the
// units are counted once across every SKU × site, not once at each site.
func TestRedeliveryAfterGraphChangeCountsOnce(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	stream(t, js)
	g := &movablePlant{}
	site := "plant1"
	g.site.Store(&site)
	died := make(chan struct{})
	var once sync.Once
	startReplica(t, n.URL(), func(a *replica) {
		a.c.d.Placer = g
		a.c.doneAll = func(context.Context, []dedup.Claim) error {
			once.Do(func() {
				a.nc.Close() // the process is gone: no ack, no nak, no done mark reaches the server
				a.stop()
				close(died)
			})
			return errors.New("replica died")
		}
	})
	const windows = 5
	var fsIn []signal.Feature
	for w := range windows {
		fsIn = append(fsIn, units("SKU-1", w, 2))
	}
	publish(t, js, 1, false, "", fsIn...)
	select {
	case <-died:
	case <-time.After(30 * time.Second):
		t.Fatal("the first replica never reached its done marks")
	}
	moved := "plant2" // the new graph version: line1 belongs to plant2
	g.site.Store(&moved)
	b := startReplica(t, n.URL(), func(b *replica) { b.c.d.Placer = g })
	waitConsumer(t, js, "the redelivery applied and acked", func(info *jetstream.ConsumerInfo) bool {
		return info.NumAckPending == 0 && info.NumPending == 0 && info.NumRedelivered == 0 && info.Delivered.Consumer >= 2
	})
	var total float64
	for _, p := range b.inv.List(inventory.Filter{}) {
		total += p.Produced
		t.Logf("%s/%s produced %v", p.Site, p.SKU, p.Produced)
	}
	if total != 2*windows {
		t.Errorf("produced %v across every SKU × site, want %d (each window once, where the first apply placed it)", total, 2*windows)
	}
	if p, _ := b.inv.Get("SKU-1", "plant1"); p.Produced != 2*windows {
		t.Errorf("plant1 produced %v, want %d", p.Produced, 2*windows)
	}
}
