package commerce

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub/state/inventory"
	"github.com/gemba-io/gemba/internal/testutil"
)

// dyingSink applies a sale, then its replica dies (its connection gone) before the claim is marked
// done or the message acknowledged.
type dyingSink struct {
	StockSink
	nc   *nats.Conn
	once sync.Once
	died chan struct{}
}

func (d *dyingSink) ApplySale(ctx context.Context, s Sale) error {
	err := d.StockSink.ApplySale(ctx, s)
	d.once.Do(func() { d.nc.Close(); close(d.died) })
	return err
}

// TestSaleRedeliveredAfterItsReplicaDied: a sale older than the inventory's horizon (an imported
// backlog) is applied, and its replica dies before marking it done. Meanwhile the key takes more old
// movements (another backlog). The sale's redelivery, to another replica, must not count it again.
func TestSaleRedeliveredAfterItsReplicaDied(t *testing.T) {
	s := startServer(t)
	js := connect(t, s)
	if _, err := EnsureStream(context.Background(), js, testConfig()); err != nil {
		t.Fatal(err)
	}
	icfg := inventory.DefaultConfig()
	icfg.Now = func() time.Time { return t0.Add(100 * time.Hour) }
	open := func(js jetstream.JetStream) *inventory.Store {
		inv, err := inventory.Open(context.Background(), js, icfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = inv.Close() })
		return inv
	}
	ackWait := func(o *ConsumerOptions) { o.Config.AckWait = time.Second }

	ncA, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ncA.Close)
	jsA, err := jetstream.New(ncA)
	if err != nil {
		t.Fatal(err)
	}
	a := &dyingSink{StockSink: StockSink{Inventory: open(jsA)}, nc: ncA, died: make(chan struct{})}
	runConsumer(t, jsA, a, ackWait)
	publishEvents(t, js, sale("ORD-1", 1))
	select {
	case <-a.died:
	case <-time.After(30 * time.Second):
		t.Fatal("the sale was never applied")
	}

	inv := open(js)
	old := make([]inventory.Movement, 100)
	for i := range old {
		old[i] = inventory.Movement{ID: fmt.Sprintf("prod:gw1:line1.pack.parts:SKU-1:%d", i), SKU: "SKU-1", Site: "plant1",
			Kind: inventory.Produced, Qty: 1, Time: t0.Add(time.Duration(i) * time.Second)}
	}
	if _, _, err := inv.MoveAll(context.Background(), old); err != nil {
		t.Fatal(err)
	}
	runConsumer(t, js, StockSink{Inventory: inv}, ackWait)
	testutil.WaitFor(t, 30*time.Second, "the sale redelivered and acknowledged", func() bool {
		info := consumerInfo(t, js)
		return info.NumPending == 0 && info.NumAckPending == 0 && info.Delivered.Consumer >= 2
	})
	if p, _ := inv.Get("SKU-1", "plant1"); p.Sold != 2 || p.Produced != 100 {
		t.Errorf("sold %v produced %v, want 2 and 100 (each once)", p.Sold, p.Produced)
	}
}
