package registry

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub/ingest/commerce"
	"github.com/gemba-io/gemba/hub/learn/demand"
)

func startServer(t testing.TB) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s
}

// connect opens one client (a replica) to s.
func connect(t testing.TB, s *server.Server) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func openRegistry(t testing.TB, js jetstream.JetStream, o Options) *Registry {
	t.Helper()
	r, err := Open(context.Background(), js, o)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

var monday = time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)

// synthetic returns a demand set of n SKUs at site s1 over days days (seeded: a third intermittent).
func synthetic(t testing.TB, n, days int, seed uint64) *demand.Set {
	t.Helper()
	ds, err := demand.New(demand.Options{From: monday, To: monday.AddDate(0, 0, days)})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, 1))
	for i := range n {
		sku := fmt.Sprintf("sku-%05d", i)
		level := 2 + 20*rng.Float64()
		for d := range days {
			q := level + rng.NormFloat64()*level/4
			if i%3 == 0 {
				q = 0
				if rng.Float64() < 0.2 {
					q = 1 + float64(rng.IntN(8))
				}
			}
			q = float64(int(max(q, 0)))
			if q <= 0 {
				continue
			}
			ds.Add(commerce.Sale{OrderID: fmt.Sprintf("o%d-%d", i, d), Line: 1, SKU: sku, Site: "s1", Channel: "web",
				Quantity: q, UnitPrice: 1, Currency: "EUR", Time: monday.AddDate(0, 0, d).Add(10 * time.Hour)})
		}
	}
	return ds
}

func fitSet(t testing.TB, ds *demand.Set, by string) *Set {
	t.Helper()
	s, err := Fit(context.Background(), ds, FitOptions{By: by, Horizon: 14})
	if err != nil {
		t.Fatal(err)
	}
	return s
}
