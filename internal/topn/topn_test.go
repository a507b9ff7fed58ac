package topn

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// The items kept are the first n of all offered, in order, whatever the order they come in.
func TestFirstKeepsTheFirstN(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, c := range []struct{ items, n int }{{0, 5}, {3, 5}, {5, 5}, {1000, 10}, {1000, 1}, {50, 0}} {
		all := r.Perm(c.items)
		f := New(c.n, len(all), func(a, b int) bool { return a < b })
		for _, x := range all {
			f.Offer(x)
		}
		got := f.Sorted()
		want := slices.Sorted(slices.Values(all))[:min(c.n, c.items)]
		if !slices.Equal(got, want) {
			t.Errorf("%d items, first %d: %v, want %v", c.items, c.n, got, want)
		}
	}
}
