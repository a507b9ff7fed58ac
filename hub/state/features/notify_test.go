package features

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

// The latest value of every key is notified once stored, to this replica (whether the write's
// ack or its echo through the watch comes first) and to another replica watching the bucket: a
// decider that missed it would act a timer late. (A value overtaken by a newer one before its echo
// may go unnotified: the newer one is.)
func TestNotifyEveryStoredValue(t *testing.T) {
	n := natstest.JetStream(t)
	a, b := open(t, n.URL()), open(t, n.URL())
	type seen struct {
		mu sync.Mutex
		m  map[string]int
	}
	watch := func(s *Store) *seen {
		w := &seen{m: map[string]int{}}
		s.Notify(func(name, key string) {
			r, _ := s.Get(name, key) // what a decider reads when told
			w.mu.Lock()
			w.m[name+"/"+key] = max(w.m[name+"/"+key], int(r.Value.Value))
			w.mu.Unlock()
		})
		return w
	}
	wa, wb := watch(a), watch(b)
	const rounds, skus = 20, 25
	for r := range rounds {
		var ins []Input
		for i := range skus {
			ins = append(ins, in(feat("line1.pack.parts", "units", t0.Add(time.Duration(r)*10*time.Second), float64(r), "sku", fmt.Sprintf("S%d", i)), uint64(r*skus+i)))
		}
		a.Apply(ins)
		if err := a.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	for _, w := range []*seen{wa, wb} {
		testutil.WaitFor(t, 10*time.Second, "every write notified", func() bool {
			w.mu.Lock()
			defer w.mu.Unlock()
			if len(w.m) != skus {
				return false
			}
			for _, last := range w.m {
				if last != rounds-1 {
					return false
				}
			}
			return true
		})
	}
}
