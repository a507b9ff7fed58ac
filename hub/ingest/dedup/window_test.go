package dedup

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestClaimAllBeyondWindow: a batch of more claims than are kept in flight at once gets every
// verdict, in order: redeliveries of the claiming message fresh, other messages duplicates, new
// identities fresh.
func TestClaimAllBeyondWindow(t *testing.T) {
	js := startJS(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := Open(ctx, js, Config{Bucket: "D", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	id := func(i int) string { return fmt.Sprintf("gw1:features:aa:%d", i) }
	const first, n = 3 * maxInFlight, 6 * maxInFlight
	var claims []Claim
	for i := range first {
		claims = append(claims, Claim{ID: id(i), StreamSeq: uint64(i + 1)})
	}
	if _, err := m.ClaimAll(ctx, claims); err != nil {
		t.Fatal(err)
	}
	claims = claims[:0]
	want := make([]Verdict, n)
	for i := range n {
		switch {
		case i < first/2: // the same stream message again
			claims = append(claims, Claim{ID: id(i), StreamSeq: uint64(i + 1)})
		case i < first: // another copy
			claims = append(claims, Claim{ID: id(i), StreamSeq: uint64(i + 100000)})
			want[i] = Duplicate
		default:
			claims = append(claims, Claim{ID: id(i), StreamSeq: uint64(i + 1)})
		}
	}
	got, err := m.ClaimAll(ctx, claims)
	if err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("claim %d (%s seq %d): %s, want %s", i, claims[i].ID, claims[i].StreamSeq, got[i], want[i])
		}
	}
}
