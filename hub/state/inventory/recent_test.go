package inventory

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/gemba-io/gemba/internal/natstest"
)

// A key this Store wrote last is updated with one request (the compare-and-set on the revision it
// wrote); once another replica has written it, the update fails that compare-and-set or has
// forgotten the value from the watch, reads, and nothing is lost or counted twice.
func TestRecentWritesSkipTheRead(t *testing.T) {
	n := natstest.JetStream(t)
	ncA, jsA := natstest.Connect(t, n.URL())
	_, jsB := natstest.Connect(t, n.URL())
	clock := newTestClock(t0)
	a, b := openStore(t, jsA, testConfig(clock)), openStore(t, jsB, testConfig(clock))
	ctx := context.Background()
	moveAll := func(s *Store, id string) {
		t.Helper()
		if _, bad, err := s.MoveAll(ctx, []Movement{mv(id, Produced, 1, time.Minute)}); err != nil || bad[0] != nil {
			t.Fatalf("%s: %v %v", id, err, bad)
		}
	}
	moveAll(a, "m0")
	before := ncA.Stats().OutMsgs
	for i := 1; i <= 5; i++ {
		moveAll(a, fmt.Sprint("m", i))
	}
	if sent := ncA.Stats().OutMsgs - before; sent != 5 {
		t.Fatalf("5 updates of a key this store wrote last sent %d requests, want 5 (no reads)", sent)
	}
	// Replicas alternate on the key: each write may find the key changed by the other.
	for i := 6; i < 26; i++ {
		s := a
		if i%2 == 0 {
			s = b
		}
		moveAll(s, fmt.Sprint("m", i))
	}
	moveAll(a, "m3") // a repeat: counted once
	for _, s := range []*Store{a, b} {
		st, _, _, err := s.read(ctx, keyOf("S1", "SKU"))
		if err != nil {
			t.Fatal(err)
		}
		if got := st.summary().position("S1", "SKU").Produced; got != 26 {
			t.Fatalf("produced %v, want 26", got)
		}
	}
}

// recent stays within its bounds in entries and bytes, keeps the newest, and never serves a value
// it was told is outdated.
func TestRecentBounds(t *testing.T) {
	var r recent
	for i := range 3 * maxRecent {
		r.put(fmt.Sprint("k", i), uint64(i+1), make([]byte, 100))
	}
	if len(r.vals) != maxRecent || r.bytes != 100*maxRecent {
		t.Fatalf("%d values, %d bytes; want %d, %d", len(r.vals), r.bytes, maxRecent, 100*maxRecent)
	}
	if _, _, ok := r.get(fmt.Sprint("k", 3*maxRecent-1)); !ok {
		t.Fatal("the newest value was evicted")
	}
	if _, _, ok := r.get("k0"); ok {
		t.Fatal("the oldest value was kept")
	}
	// Rewriting one key many times: its older refs do not evict its newest value.
	for i := range 5 * maxRecent {
		r.put("hot", uint64(10_000+i), make([]byte, 10))
	}
	if _, rev, ok := r.get("hot"); !ok || rev != uint64(10_000+5*maxRecent-1) {
		t.Fatalf("hot: rev %d, %v", rev, ok)
	}
	if len(r.order) > 4*maxRecent+1 {
		t.Fatalf("%d refs kept for %d values", len(r.order), len(r.vals))
	}
	// Bytes: large values push the others out; a value over the per-value bound is not kept.
	for i := range 40 {
		r.put(fmt.Sprint("big", i), 1, make([]byte, maxRecentValue))
	}
	if r.bytes > maxRecentBytes {
		t.Fatalf("%d bytes kept, bound %d", r.bytes, maxRecentBytes)
	}
	r.put("huge", 1, make([]byte, maxRecentValue+1))
	if _, _, ok := r.get("huge"); ok {
		t.Fatal("a value over maxRecentValue was kept")
	}
	// A later revision seen forgets; an older one (the echo of an earlier write of ours) does not.
	r.put("k", 5, []byte("x"))
	r.seen("k", 4)
	if _, _, ok := r.get("k"); !ok {
		t.Fatal("an older revision forgot the value")
	}
	r.seen("k", 6)
	if _, _, ok := r.get("k"); ok {
		t.Fatal("a later revision did not forget the value")
	}
}
