package inventory

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

// hammer sends every movement of ids from several goroutines on each store, each id once from one store
// and, for a share of them, once more from the other store at the same time, in random order.
func hammer(t *testing.T, stores []*Store, moves []Movement, workers int, seed uint64) (sends int) {
	t.Helper()
	type job struct {
		store int
		m     Movement
	}
	r := rand.New(rand.NewPCG(seed, 99))
	var jobs []job
	for i, m := range moves {
		jobs = append(jobs, job{i % len(stores), m})
		if r.IntN(3) == 0 {
			jobs = append(jobs, job{(i + 1) % len(stores), m}) // the other replica got it too
		}
	}
	r.Shuffle(len(jobs), func(i, j int) { jobs[i], jobs[j] = jobs[j], jobs[i] })
	queues := make([]chan Movement, len(stores))
	for i := range queues {
		queues[i] = make(chan Movement, len(jobs))
	}
	for _, j := range jobs {
		queues[j.store] <- j.m
	}
	var wg sync.WaitGroup
	for i, s := range stores {
		close(queues[i])
		for range workers {
			wg.Go(func() {
				for m := range queues[i] {
					if _, err := s.Move(context.Background(), m); err != nil {
						t.Errorf("move %s: %v", m.ID, err)
					}
				}
			})
		}
	}
	wg.Wait()
	return len(jobs)
}

func randomMoves(r *rand.Rand, prefix string, n int) []Movement {
	out := make([]Movement, n)
	for i := range out {
		k := Produced
		if r.IntN(2) == 0 {
			k = Sold
		}
		out[i] = mv(fmt.Sprintf("%s-%d", prefix, i), k, float64(1+r.IntN(9)), time.Duration(r.IntN(40*3600))*time.Second)
	}
	return out
}

// storedState reads the key's value straight from the bucket.
func storedState(t *testing.T, js jetstream.JetStream, bucket, key string) (*state, uint64) {
	t.Helper()
	st, rev, err := readStored(js, bucket, key)
	if err != nil {
		t.Fatal(err)
	}
	return st, rev
}

func readStored(js jetstream.JetStream, bucket, key string) (*state, uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return nil, 0, err
	}
	e, err := kv.Get(ctx, key)
	if err != nil {
		return nil, 0, err
	}
	st, err := decodeState(e.Value())
	return st, e.Revision(), err
}

func checkOnce(t *testing.T, st *state) {
	t.Helper()
	seen := map[string]bool{}
	for _, m := range st.moves {
		if seen[m.id] {
			t.Errorf("movement %s stored twice", m.id)
		}
		seen[m.id] = true
	}
}

// TestTwoReplicasOneKey: two stores on two connections update one key from several goroutines each, with
// the same ids sent to both; nothing is lost or doubled and both views converge on the stored position.
func TestTwoReplicasOneKey(t *testing.T) {
	srv := natstest.JetStream(t)
	clock := newTestClock(t0)
	jsA, jsB := connectJS(t, srv.URL()), connectJS(t, srv.URL())
	a, b := openStore(t, jsA, testConfig(clock)), openStore(t, jsB, testConfig(clock))
	stores := []*Store{a, b}
	r := rand.New(rand.NewPCG(11, 12))

	// Phase 1, movements only: every id applied exactly once, every repeat reported as a duplicate.
	moves := randomMoves(r, "m", 300)
	sends := hammer(t, stores, moves, 4, 1)
	var produced, sold float64
	for _, m := range moves {
		if m.Kind == Produced {
			produced += m.Qty
		} else {
			sold += m.Qty
		}
	}
	applied := a.Metrics.Applied.Load() + b.Metrics.Applied.Load()
	dups := a.Metrics.Duplicates.Load() + b.Metrics.Duplicates.Load()
	if applied != uint64(len(moves)) || dups != uint64(sends-len(moves)) {
		t.Errorf("applied %d duplicates %d, want %d and %d", applied, dups, len(moves), sends-len(moves))
	}
	conflicts := a.Metrics.Conflicts.Load() + b.Metrics.Conflicts.Load()
	t.Logf("%d sends, %d compare-and-set conflicts retried", sends, conflicts)
	if conflicts == 0 {
		t.Error("no compare-and-set conflict: the two replicas never raced (the test does not test)")
	}
	st, rev := storedState(t, jsA, "GEMBA_INVENTORY", keyOf("S1", "SKU"))
	checkOnce(t, st)
	if len(st.moves) != len(moves) || st.produced != produced || st.sold != sold {
		t.Fatalf("stored %d movements, produced %g sold %g; want %d, %g, %g", len(st.moves), st.produced, st.sold, len(moves), produced, sold)
	}
	for _, s := range stores {
		testutil.WaitFor(t, 10*time.Second, "both views at the last revision", func() bool {
			p, ok := s.Get("SKU", "S1")
			return ok && p.Revision == rev && p.Produced == produced && p.Sold == sold
		})
	}

	// Phase 2: more movements and two counts, raced the same way.
	more := randomMoves(r, "n", 200)
	counts := []Snapshot{sn("erp-a", 500, 20*time.Hour), sn("erp-b", 700, 5*time.Hour)}
	var wg sync.WaitGroup
	for i, c := range counts {
		wg.Go(func() {
			for _, s := range stores {
				if _, err := s.Snapshot(context.Background(), c); err != nil {
					t.Errorf("snapshot %d: %v", i, err)
				}
			}
		})
	}
	hammer(t, stores, more, 4, 2)
	wg.Wait()
	want := 700.0
	snapT := t0.Add(-5 * time.Hour)
	for _, m := range append(moves, more...) {
		if !m.Time.After(snapT) {
			continue
		}
		if m.Kind == Produced {
			want += m.Qty
		} else {
			want -= m.Qty
		}
	}
	st, rev = storedState(t, jsA, "GEMBA_INVENTORY", keyOf("S1", "SKU"))
	checkOnce(t, st)
	if got := st.onHand + st.produced - st.sold; got != want || st.snapID != "erp-b" {
		t.Fatalf("stored position %g after %s, want %g after erp-b", got, st.snapID, want)
	}
	for _, s := range stores {
		testutil.WaitFor(t, 10*time.Second, "both views at the final position", func() bool {
			p, ok := s.Get("SKU", "S1")
			return ok && p.Revision == rev && p.Position == want
		})
	}
}
