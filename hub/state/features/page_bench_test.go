package features

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/gemba-io/gemba/signal"
)

// BenchmarkPage is the /api/v1/features page of 1000 (the default) from a store of 300,000 values,
// first page and one from the middle: List and the filter the API ran before (a copy and a sort of
// the whole store per request) against Page.
func BenchmarkPage(b *testing.B) {
	const n = 300_000
	s := newStore(Config{Definitions: Definitions{
		{Name: "mean", Signal: "*", Feature: "mean", Key: BySignal, MaxAge: time.Minute},
		{Name: "max", Signal: "*", Feature: "max", Key: BySignal, MaxAge: time.Minute},
	}}, nil, slog.New(slog.DiscardHandler))
	fs := make([]signal.Feature, n)
	ins := make([]Input, n)
	for i := range fs {
		fs[i] = signal.Feature{Signal: fmt.Sprintf("s%06d", (i/2*7919)%(n/2)), Name: []string{"mean", "max"}[i%2], WindowStart: t0.Add(-time.Second), WindowEnd: t0, Value: 1}
		ins[i] = Input{Feature: &fs[i], Lineage: Lineage{Agent: "gw1", StreamSeq: uint64(i + 1)}}
	}
	s.Apply(ins)
	if len(s.vals) != n {
		b.Fatalf("%d values, want %d", len(s.vals), n)
	}
	const limit = 1000
	for _, cur := range []struct{ name, afterName, afterKey string }{{"first", "", ""}, {"middle", "mean", "s075000"}} {
		b.Run("list/"+cur.name, func(b *testing.B) {
			for b.Loop() {
				list := s.List("")
				page := list[:0]
				for _, v := range list {
					if (cur.afterName != "" || cur.afterKey != "") && !valueLess(cur.afterName, cur.afterKey, &v.Value) {
						continue
					}
					if page = append(page, v); len(page) == limit {
						break
					}
				}
				if len(page) != limit {
					b.Fatal(len(page))
				}
			}
		})
		b.Run("page/"+cur.name, func(b *testing.B) {
			for b.Loop() {
				if page, _ := s.Page("", "", cur.afterName, cur.afterKey, limit); len(page) != limit {
					b.Fatal(len(page))
				}
			}
		})
	}
}
