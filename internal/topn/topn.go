// Package topn keeps the first n of a run of items in an order, in memory bounded by n: a page of
// a store read without a copy of the store.
package topn

import (
	"container/heap"
	"slices"
)

// First keeps the first n items offered, by less.
type First[T any] struct {
	h lastOnTop[T]
}

// New returns a First keeping n items (none when n < 1); size hints how many will be offered.
func New[T any](n, size int, less func(a, b T) bool) *First[T] {
	return &First[T]{h: lastOnTop[T]{items: make([]T, 0, max(0, min(n, size))), n: n, less: less}}
}

// Offer keeps x if it is among the first n offered so far.
func (f *First[T]) Offer(x T) {
	h := &f.h
	switch {
	case len(h.items) < h.n:
		heap.Push(h, x)
	case h.n > 0 && h.less(x, h.items[0]):
		h.items[0] = x
		heap.Fix(h, 0)
	}
}

// Sorted returns the items kept, in order. The First is not to be used after.
func (f *First[T]) Sorted() []T {
	h := &f.h
	slices.SortFunc(h.items, func(a, b T) int {
		switch {
		case h.less(a, b):
			return -1
		case h.less(b, a):
			return 1
		}
		return 0
	})
	return h.items
}

// lastOnTop is a heap of the items kept, the one sorting last on top.
type lastOnTop[T any] struct {
	items []T
	n     int
	less  func(a, b T) bool
}

func (h *lastOnTop[T]) Len() int           { return len(h.items) }
func (h *lastOnTop[T]) Less(i, j int) bool { return h.less(h.items[j], h.items[i]) }
func (h *lastOnTop[T]) Swap(i, j int)      { h.items[i], h.items[j] = h.items[j], h.items[i] }
func (h *lastOnTop[T]) Push(x any)         { h.items = append(h.items, x.(T)) }
func (h *lastOnTop[T]) Pop() any {
	x := h.items[len(h.items)-1]
	h.items = h.items[:len(h.items)-1]
	return x
}
