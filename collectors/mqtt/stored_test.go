package mqtt

import (
	"slices"
	"testing"

	"github.com/gemba-io/gemba/buffer"
)

// metaMap applies meta writes like the buffer does (a later write of a key replaces it).
type metaMap map[string][]byte

func (m metaMap) put(meta []buffer.Meta) {
	for _, e := range meta {
		m[e.Key] = slices.Clone(e.Value)
	}
}

func (m metaMap) get(k string) ([]byte, bool, error) { v, ok := m[k]; return v, ok, nil }

// The journal keeps at least the last (slots-1) segments of digests across a restart, whatever the
// batch sizes; a prepared batch that was refused leaves no trace; a damaged key costs its segment.
func TestStoredJournalRoundTrip(t *testing.T) {
	store := metaMap{}
	j := newStoredJournal("c")
	if ds, err := j.load(store.get); len(ds) != 0 || err != nil {
		t.Fatalf("empty load = %v, %v", ds, err)
	}
	var all []uint64
	next := uint64(1)
	batch := func(n int, durable bool) {
		ds := make([]uint64, n)
		for i := range ds {
			ds[i] = next
			next++
		}
		meta, k := j.prepare(ds)
		if !durable {
			next -= uint64(n) // the broker redelivers them: the same digests come again
			return
		}
		store.put(meta)
		j.commit(k)
		all = append(all, ds...)
	}
	for _, n := range []int{1, 3, 64, 0, 5, 200, 1, 1, 63, 2} {
		batch(n, true)
		batch(7, false)
	}
	batch(journalRing+100, true) // larger than the ring: its newest are kept
	for range 300 {
		batch(17, true)
	}
	batch(5, false)

	j2 := newStoredJournal("c")
	got, err := j2.load(store.get)
	if err != nil {
		t.Fatal(err)
	}
	have := map[uint64]bool{}
	for _, d := range got {
		if have[d] {
			t.Fatalf("digest %d loaded twice", d)
		}
		have[d] = true
	}
	for i := len(all) - (journalSlots-1)*journalSegDigests; i < len(all); i++ {
		if !have[all[i]] {
			t.Fatalf("digest %d (%d from the end) not kept", all[i], len(all)-i)
		}
	}
	for d := range have {
		if d >= next {
			t.Fatalf("digest %d of a refused batch was journaled", d)
		}
	}
	// The reloaded journal goes on in a fresh segment: the newest of the old life's survive.
	meta, k := j2.prepare([]uint64{next})
	store.put(meta)
	j2.commit(k)
	j3 := newStoredJournal("c")
	got, _ = j3.load(store.get)
	if !slices.Contains(got, all[len(all)-1]) || !slices.Contains(got, next) {
		t.Fatal("after a restart and one more batch, the newest digests of both lives must be kept")
	}

	// A damaged key is reported and skipped; the others load.
	for k := range store {
		store[k] = []byte("junk")
		break
	}
	j4 := newStoredJournal("c")
	got, err = j4.load(store.get)
	if err == nil || len(got) == 0 {
		t.Fatalf("damaged journal: %d digests, err %v", len(got), err)
	}
}
