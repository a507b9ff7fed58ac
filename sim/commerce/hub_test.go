package commerce

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub/act"
	"github.com/gemba-io/gemba/hub/ingest/commerce"
	"github.com/gemba-io/gemba/hub/ingest/dedup"
	"github.com/gemba-io/gemba/hub/state/inventory"
	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/sim"
)

// The simulator publishes through the hub's commerce publisher to the hub's COMMERCE stream; the hub's
// consumer applies it to a real inventory store, which ends up with exactly the ledger's counts and
// sales.
func TestHubInventoryEqualsLedger(t *testing.T) {
	_, js := natstest.Connect(t, natstest.JetStream(t).URL())
	ctx := context.Background()
	ccfg := commerce.DefaultConfig()
	ccfg.Channels = []string{Web, Retail, Wholesale}
	ccfg.RetryDelay = 50 * time.Millisecond
	if _, err := commerce.EnsureStream(ctx, js, ccfg); err != nil {
		t.Fatal(err)
	}
	plant := sim.DefaultConfig()
	plant.Seed, plant.Speed = 5, 600 // ten simulated minutes per step
	var mu sync.Mutex
	produced := map[string]float64{}
	s := newSim(t, Config{Plant: plant, Start: monday, DemandScale: 0.02,
		Production: func() map[string]float64 {
			mu.Lock()
			defer mu.Unlock()
			return map[string]float64{"A-100": produced["A-100"], "B-210": produced["B-210"]}
		}})

	icfg := inventory.DefaultConfig()
	icfg.Horizon = 30 * 24 * time.Hour // the simulated clock runs far ahead of the consumer
	icfg.Now = s.Now                   // the hub keeps the simulator's clock, as in a backtest
	inv, err := inventory.Open(ctx, js, icfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = inv.Close() })
	markers, err := dedup.Open(ctx, js, dedup.Config{Bucket: "GEMBA_DEDUP", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	cons, err := commerce.NewConsumer(js, commerce.ConsumerOptions{Config: ccfg, Markers: markers, Sink: commerce.StockSink{Inventory: inv},
		Log: slog.New(slog.DiscardHandler), FetchWait: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- cons.Run(runCtx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})

	pub, err := commerce.NewPublisher(js, ccfg)
	if err != nil {
		t.Fatal(err)
	}
	const steps = 2*144 + 5 // two days and a bit: the last count is followed by sales
	for range steps {
		s.Step()
		if err := s.Flush(ctx, pub); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		produced["A-100"] += 7
		produced["B-210"] += 3
		mu.Unlock()
	}
	if n := s.Pending(); n != 0 {
		t.Fatalf("%d events still pending", n)
	}
	sales, rows := s.Ledger().Events()
	if sales < 100 || rows != 9*6 {
		t.Fatalf("ledger: %d sales and %d count rows, want over 100 sales and 9 counts of 6 SKUs", sales, rows)
	}
	var since float64
	matches := func() (bool, string) {
		since = 0
		for _, k := range s.SKUs() {
			c, ok := s.Ledger().Count(k.Name)
			if !ok {
				return false, k.Name + ": no count in the ledger"
			}
			want := s.Ledger().SoldSinceCount(k.Name)
			since += want
			p, ok := inv.Get(k.Name, s.Site())
			if !ok {
				return false, k.Name + ": not in the inventory"
			}
			if p.OnHand != c.OnHand || p.Sold != want || !p.SnapshotTime.Equal(c.Time) || p.Position != c.OnHand-want {
				return false, fmt.Sprintf("%s: inventory on hand %v at %s, sold %v, position %v; ledger count %v at %s, sold since %v",
					k.Name, p.OnHand, p.SnapshotTime, p.Sold, p.Position, c.OnHand, c.Time, want)
			}
		}
		return true, ""
	}
	var why string
	testutil.WaitFor(t, 30*time.Second, "the inventory equals the ledger", func() bool {
		var ok bool
		ok, why = matches()
		return ok
	})
	if ok, why2 := matches(); !ok {
		t.Fatalf("after waiting: %s (before: %s)", why2, why)
	}
	if since == 0 {
		t.Fatal("no sale after the last count: the test would not see the inventory subtract sales")
	}
}

// A publish that is not acknowledged keeps its events for the next Flush, which books them once.
func TestFlushKeepsUnacknowledged(t *testing.T) {
	plant := sim.DefaultConfig()
	plant.Speed = 3600
	s := newSim(t, Config{Plant: plant, Start: monday})
	evs := s.Step()
	fp := &flakyPublisher{fail: 2}
	err := s.Flush(context.Background(), fp)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("2 of %d events not acknowledged", len(evs))) {
		t.Fatalf("Flush: %v, want 2 of %d not acknowledged", err, len(evs))
	}
	if s.Pending() != 2 {
		t.Fatalf("%d pending, want 2", s.Pending())
	}
	if err := s.Flush(context.Background(), fp); err != nil {
		t.Fatal(err)
	}
	if len(fp.got) != len(evs) || s.Pending() != 0 {
		t.Fatalf("published %d of %d events, %d pending", len(fp.got), len(evs), s.Pending())
	}
	sales, rows := s.Ledger().Events()
	if sales+rows != len(evs) {
		t.Fatalf("ledger holds %d events, want %d", sales+rows, len(evs))
	}
}

// flakyPublisher fails the first `fail` events it is given, once each.
type flakyPublisher struct {
	fail int
	got  map[string]bool
}

func (f *flakyPublisher) Publish(_ context.Context, evs []commerce.Event) []commerce.Result {
	if f.got == nil {
		f.got = map[string]bool{}
	}
	out := make([]commerce.Result, len(evs))
	for i, ev := range evs {
		out[i].ID = ev.MsgID()
		if f.fail > 0 {
			f.fail--
			out[i].Err = errors.New("no responders")
			continue
		}
		if f.got[ev.MsgID()] {
			panic("published twice: " + ev.MsgID())
		}
		f.got[ev.MsgID()] = true
	}
	return out
}

// Actions published on the hub's subjects reach the simulator; one whose channel is not its
// subject's is dropped.
func TestListenAppliesActions(t *testing.T) {
	nc, _ := natstest.Connect(t, natstest.JetStream(t).URL())
	plant := sim.DefaultConfig()
	plant.Speed = 3600
	s := newSim(t, Config{Plant: plant, Start: monday, NoQueue: true})
	stop, err := s.Listen(nc, "gemba")
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	}()
	send := func(subject string, m act.Message) {
		t.Helper()
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if err := nc.Publish(subject, b); err != nil {
			t.Fatal(err)
		}
	}
	end := monday.Add(24 * time.Hour)
	send("gemba.actions.promotions.retail", promotion("wrong", "B-110", Web, 30, monday, end)) // channel ≠ subject
	send("gemba.actions.promotions.web", promotion("ok", "B-110", Web, 25, monday, end))
	testutil.WaitFor(t, 10*time.Second, "the promotion applied", func() bool { return s.Discount("B-110", Web, monday) > 0 })
	if d := s.Discount("B-110", Web, monday); d != 25 {
		t.Fatalf("discount %v, want 25 (the mismatched message must be dropped)", d)
	}
	send("gemba.actions.holds.web", act.Message{ID: "h", Event: act.EventStart, Action: act.Action{DecisionID: "h", Kind: act.Hold,
		SKU: "B-110", Channel: Web, Start: monday}})
	testutil.WaitFor(t, 10*time.Second, "the hold applied", func() bool { return s.Discount("B-110", Web, monday) == 0 })
}
