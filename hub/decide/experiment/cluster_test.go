package experiment

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

// On a 3-node cluster with an R3 bucket, three replicas — each connected to another node — record
// the same outcomes at once: each is applied once, and a choice read through any node sees them.
func TestReplicasOnAClusterApplyEachOutcomeOnce(t *testing.T) {
	nodes := natstest.Cluster(t, 3)
	cfg := DefaultStoreConfig()
	cfg.Replicas = 3
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stores := make([]*Store, len(nodes))
	for i, n := range nodes {
		_, js := natstest.Connect(t, n.URL())
		s, err := Open(ctx, js, cfg, nil)
		if err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
		stores[i] = s
	}
	exp := Config{ID: "cluster", Bandit: &BanditConfig{Arms: []float64{10, 20, 30}}}
	const outcomes = 30
	var mu sync.Mutex
	applied := 0
	var wg sync.WaitGroup
	errs := make(chan error, len(stores)*outcomes)
	for _, s := range stores {
		wg.Go(func() {
			for i := range outcomes {
				d := 10 + 10*float64(i%3)
				o := outcome(fmt.Sprintf("dec-%d", i), d, 100*curveLift(d))
				o.SKU = fmt.Sprintf("SKU-%d", i%5)
				ok, err := s.Record(ctx, exp, o)
				if err != nil {
					errs <- err
					return
				}
				if ok {
					mu.Lock()
					applied++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if applied != outcomes {
		t.Fatalf("%d outcomes applied by %d replicas, want %d", applied, len(stores), outcomes)
	}
	// Reads may come from a node a moment behind the leader (direct gets): poll until each replica's
	// reads show every outcome — the pool's 30 and SKU-0's own 6 (outcomes 0, 5, 10, 15, 20, 25).
	for i, s := range stores {
		var c Choice
		testutil.WaitFor(t, 10*time.Second, fmt.Sprintf("replica %d to read every outcome", i), func() bool {
			pool, unit, err := s.Posterior(ctx, exp, "SKU-0", "web")
			if err != nil || pool.Stats.N != outcomes || unit.Stats.N != 6 {
				return false
			}
			c, err = s.Choose(ctx, exp, "dec-next", Unit{SKU: "SKU-0", Channel: "web", Baseline: 100, Position: 1e6})
			return err == nil && c.Curve.N == 6 && c.Arms[0].PoolN == 10
		})
	}
}
