package act

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/internal/natstest"
)

// BenchmarkEnqueueToPublished measures one replica from Enqueue to the promotion on the ACTIONS
// stream (seen by a subscriber), NATS only; reports p50 and p99.
func BenchmarkEnqueueToPublished(b *testing.B) {
	n := natstest.JetStream(b)
	nc, js := connect(b, n)
	o, err := Open(context.Background(), js, testConfig(""), nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = o.Run(ctx) }()
	defer func() { cancel(); <-done }()
	seen := make(chan string, 1024)
	sub, err := nc.Subscribe("gemba.actions.promotions.store", func(m *nats.Msg) { seen <- m.Header.Get(jetstream.MsgIDHeader) })
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		id := fmt.Sprintf("bench-%d", i)
		t0 := time.Now()
		if _, err := o.Enqueue(ctx, promo(id, "store", time.Now().Add(time.Hour))); err != nil {
			b.Fatal(err)
		}
		for got := <-seen; got != id; got = <-seen {
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}
