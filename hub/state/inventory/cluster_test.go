package inventory

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

// TestClusterR3NodeLoss runs a 3-node JetStream cluster in process (as uplink's cluster test does) with an
// R3 bucket, kills the bucket's stream leader while two stores write, and checks that every movement is
// stored exactly once and both views converge on the stored positions.
func TestClusterR3NodeLoss(t *testing.T) {
	const n = 3
	nodes := natstest.Cluster(t, n)

	clock := newTestClock(t0)
	cfg := testConfig(clock)
	cfg.Replicas = 3
	cfg.OpTimeout = 2 * time.Second
	cfg.RetryFor = time.Minute
	// Each store starts on a different node; both know all three (natstest's clients reconnect forever).
	jsA := connectJS(t, natstest.URLs(nodes[0], nodes[1], nodes[2]), nats.DontRandomize())
	jsB := connectJS(t, natstest.URLs(nodes[1], nodes[2], nodes[0]), nats.DontRandomize())
	var a *Store
	testutil.WaitFor(t, 30*time.Second, "R3 bucket created", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s, err := Open(ctx, jsA, cfg, nil)
		if err != nil {
			return false // the cluster may still be placing the stream
		}
		a = s
		return true
	})
	t.Cleanup(func() { a.Close() })
	var b *Store
	testutil.WaitFor(t, 60*time.Second, "the second store opened through another node", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s, err := Open(ctx, jsB, cfg, nil)
		if err != nil {
			return false // a loaded cluster may not answer in time: the hub retries the same way
		}
		b = s
		return true
	})
	t.Cleanup(func() { b.Close() })
	stores := []*Store{a, b}

	const keys = 6
	r := rand.New(rand.NewPCG(21, 22))
	perKey := make([][]Movement, keys)
	for k := range keys {
		perKey[k] = randomMoves(r, fmt.Sprintf("k%d", k), 120)
		for i := range perKey[k] {
			perKey[k][i].SKU = fmt.Sprintf("SKU-%d", k)
		}
	}
	var done atomic.Int64
	var wg sync.WaitGroup
	for k := range keys {
		for si, s := range stores {
			wg.Go(func() {
				// Each store sends every movement of the key: half of all sends are duplicates, racing.
				ms := append([]Movement(nil), perKey[k]...)
				rand.New(rand.NewPCG(uint64(k), uint64(si))).Shuffle(len(ms), func(i, j int) { ms[i], ms[j] = ms[j], ms[i] })
				for _, m := range ms {
					if _, err := s.Move(context.Background(), m); err != nil {
						t.Errorf("move %s via store %d: %v", m.ID, si, err)
					}
					done.Add(1)
				}
			})
		}
	}
	total := int64(keys * len(stores) * 120)
	testutil.WaitFor(t, 60*time.Second, "a quarter of the load", func() bool { return done.Load() > total/4 })
	leader := -1
	testutil.WaitFor(t, 10*time.Second, "bucket stream leader", func() bool {
		for i, nd := range nodes {
			if nd.S.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, "KV_"+cfg.Bucket) {
				leader = i
				return true
			}
		}
		return false
	})
	before := done.Load()
	nodes[leader].Stop()
	t.Logf("killed n%d (bucket leader) after %d of %d sends", leader+1, before, total)
	wg.Wait()
	if before >= total {
		t.Error("the load finished before the node was killed: the test does not test")
	}
	t.Logf("retries %d, conflicts %d", a.Metrics.Retries.Load()+b.Metrics.Retries.Load(), a.Metrics.Conflicts.Load()+b.Metrics.Conflicts.Load())

	survivor := nodes[(leader+1)%n].URL()
	js := connectJS(t, survivor)
	for k := range keys {
		var produced, sold float64
		for _, m := range perKey[k] {
			if m.Kind == Produced {
				produced += m.Qty
			} else {
				sold += m.Qty
			}
		}
		sku := fmt.Sprintf("SKU-%d", k)
		var st *state
		var rev uint64
		testutil.WaitFor(t, 20*time.Second, "read "+sku, func() bool {
			var err error
			st, rev, err = readStored(js, cfg.Bucket, keyOf("S1", sku)) // errors while a leader is elected
			return err == nil
		})
		checkOnce(t, st)
		if len(st.moves) != len(perKey[k]) || st.produced != produced || st.sold != sold {
			t.Errorf("%s: stored %d movements, produced %g sold %g; want %d, %g, %g", sku, len(st.moves), st.produced, st.sold, len(perKey[k]), produced, sold)
		}
		for si, s := range stores {
			testutil.WaitFor(t, 30*time.Second, fmt.Sprintf("store %d's view of %s", si, sku), func() bool {
				p, ok := s.Get(sku, "S1")
				return ok && p.Revision == rev && p.Produced == produced && p.Sold == sold
			})
		}
	}
}
