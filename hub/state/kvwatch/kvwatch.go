// Package kvwatch mirrors a KV bucket into a replica's memory: it hands every current entry, then
// every later change, to one function, so each store's view follows the other replicas' writes.
package kvwatch

import (
	"context"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// Follow calls apply for every entry of kv (returning once the current ones are applied, so a new
// replica starts complete), then for every change until stop is called. stop waits for the last
// apply to return. The watch lives until stop, not until a caller's context: nats.go ties the
// subscription to the context it is given.
func Follow(kv jetstream.KeyValue, apply func(jetstream.KeyValueEntry)) (stop func(), err error) {
	ctx, cancel := context.WithCancel(context.Background())
	w, err := kv.WatchAll(ctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("watch bucket %s: %w", kv.Bucket(), err)
	}
	for e := range w.Updates() { // the current entries end with a nil entry
		if e == nil {
			break
		}
		apply(e)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		defer func() { _ = w.Stop() }()
		for {
			select {
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e != nil {
					apply(e)
				}
			case <-ctx.Done():
				return
			}
		}
	})
	return func() { cancel(); wg.Wait() }, nil
}
