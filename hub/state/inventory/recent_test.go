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
