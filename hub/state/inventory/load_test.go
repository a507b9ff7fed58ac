package inventory

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

// A store opening on a bucket pulls every key's value (bounded in bytes, here 16 KiB a pull: many
// pulls) and then watches from the next revision. Every key written before is in its view, a
// deleted key is not, a corrupt value is skipped and counted, and the writes another store makes
// while it loads and after it are all seen: none falls between the load and the watch.
func TestOpenLoadsThenWatches(t *testing.T) {
	defer func(n int) { loadPullBytes = n }(loadPullBytes)
	loadPullBytes = 16 << 10
	srv := natstest.JetStream(t)
	js := connectJS(t, srv.URL())
	cfg := testConfig(newTestClock(t0))
	w := openStore(t, js, cfg)
	ctx := context.Background()
	const n = 400
	sku := func(i int) string { return fmt.Sprintf("SKU-%04d", i) }
	for i := range n {
		mustMove(t, w, Movement{ID: fmt.Sprint("a", i), SKU: sku(i), Site: "S1", Kind: Produced, Qty: float64(i%7 + 1), Time: t0.Add(-time.Hour)}, 0)
	}
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, keyOf("S1", sku(0))); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, keyOf("S1", "BAD"), []byte("not ours")); err != nil {
		t.Fatal(err)
	}

	// The writer goes on while the second store opens, and a while after.
	var stop atomic.Bool
	var wg sync.WaitGroup
	var moved atomic.Int64
	wg.Go(func() {
		for i := 0; !stop.Load(); i++ {
			m := Movement{ID: fmt.Sprint("b", i), SKU: sku(1 + i%(n-1)), Site: "S1", Kind: Produced, Qty: 1, Time: t0.Add(-time.Minute)}
			if _, err := w.Move(ctx, m); err != nil {
				t.Errorf("move %s: %v", m.ID, err)
				return
			}
			moved.Add(1)
		}
	})
	r := openStore(t, js, cfg)
	during := moved.Load()
	testutil.WaitFor(t, 30*time.Second, "more writes after the open", func() bool { return moved.Load() > during+50 })
	stop.Store(true)
	wg.Wait()

	if _, ok := r.Get(sku(0), "S1"); ok {
		t.Errorf("%s deleted before the open is in the view", sku(0))
	}
	if _, ok := r.Get("BAD", "S1"); ok || r.Metrics.ViewErrors.Load() != 1 {
		t.Errorf("corrupt value: in the view %v, %d view errors (want 1)", ok, r.Metrics.ViewErrors.Load())
	}
	var diff []string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) { // polling with a deadline
		diff = diff[:0]
		for i := 1; i < n; i++ {
			a, okA := w.Get(sku(i), "S1")
			b, okB := r.Get(sku(i), "S1")
			if !okA || !okB || a.Produced != b.Produced {
				diff = append(diff, fmt.Sprintf("%s: writer %v (%v), reader %v (%v)", sku(i), a.Produced, okA, b.Produced, okB))
			}
		}
		if len(diff) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the second store's view differs from the writer's in %d keys, e.g. %v", len(diff), diff[:min(3, len(diff))])
		}
	}
	t.Logf("%d writes during and after the open (%d during)", moved.Load(), during)
}

// The hub's server allows 8 MiB messages and a value is folded only to fit that; a key whose value
// outgrows a load pull (2 MiB: 4,096 movements with ids of the longest length accepted, at the
// default max_movements) must still load when a store opens, not stall the open until it times out.
func TestOpenLoadsAValueLargerThanAPull(t *testing.T) {
	o := natstest.Options(t)
	o.MaxPayload = 8 << 20 // as the hub's embedded server (hub/nats.go)
	srv := natstest.Start(t, o)
	js := connectJS(t, srv.URL())
	cfg := testConfig(newTestClock(t0))
	w := openStore(t, js, cfg)
	ms := make([]Movement, cfg.MaxMovements)
	for i := range ms {
		id := fmt.Sprintf("sale:%06d:", i)
		id += strings.Repeat("x", maxIDLen-len(id))
		ms[i] = mv(id, Sold, 1, time.Duration(i+1)*time.Second)
	}
	if _, _, err := w.MoveAll(context.Background(), ms); err != nil {
		t.Fatal(err)
	}
	want, _ := w.Get("SKU", "S1")
	if want.Sold != float64(len(ms)) {
		t.Fatalf("sold %v, want %d", want.Sold, len(ms))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r, err := Open(ctx, js, cfg, nil)
	if err != nil {
		t.Fatalf("open on a bucket holding a large value: %v", err)
	}
	defer r.Close()
	if got, ok := r.Get("SKU", "S1"); !ok || got != want {
		t.Errorf("loaded %+v %v, want %+v", got, ok, want)
	}
}
