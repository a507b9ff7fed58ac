package demand

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub/ingest/commerce"
	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/sim"
	simcommerce "github.com/gemba-io/gemba/sim/commerce"
)

// startJS starts a JetStream server for the test and connects to it.
func startJS(t testing.TB) jetstream.JetStream {
	t.Helper()
	_, js := natstest.Connect(t, natstest.JetStream(t).URL())
	return js
}

var monday = time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)

// The simulator publishes a week of sales through the hub's publisher; the series built from the
// stream hold exactly the ledger's units and orders per SKU × channel, day by day in range, and copies
// published again without their message id (past the duplicate window) change nothing.
func TestSeriesEqualLedger(t *testing.T) {
	js := startJS(t)
	ctx := context.Background()
	ccfg := commerce.DefaultConfig()
	if _, err := commerce.EnsureStream(ctx, js, ccfg); err != nil {
		t.Fatal(err)
	}
	pub, err := commerce.NewPublisher(js, ccfg)
	if err != nil {
		t.Fatal(err)
	}
	plant := sim.DefaultConfig()
	plant.Seed, plant.Speed = 7, 3600 // one simulated hour per step
	s, err := simcommerce.New(simcommerce.Config{Plant: plant, Start: monday, DemandScale: 0.05})
	if err != nil {
		t.Fatal(err)
	}
	var sales []commerce.Sale
	for range 7 * 24 {
		for _, ev := range s.Step() {
			if sale, ok := ev.(commerce.Sale); ok {
				sales = append(sales, sale)
			}
		}
		if err := s.Flush(ctx, pub); err != nil {
			t.Fatal(err)
		}
	}
	n, _ := s.Ledger().Events()
	if n < 200 {
		t.Fatalf("the simulator sold %d times in a week; want at least 200 for a meaningful check", n)
	}
	// Copies of the first 50 sales, published without a Nats-Msg-Id so the stream keeps them.
	for _, sale := range sales[:50] {
		data, err := commerce.EncodeSale(sale)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(ctx, commerce.SalesSubject(ccfg.Prefix, sale.Channel), data); err != nil {
			t.Fatal(err)
		}
	}
	// And a message that is no sale.
	if _, err := js.Publish(ctx, commerce.SalesSubject(ccfg.Prefix, "web"), []byte(`{"nonsense":1}`)); err != nil {
		t.Fatal(err)
	}

	set, err := Build(ctx, js, Source{Stream: ccfg.Stream, Prefix: ccfg.Prefix},
		Options{From: monday, To: monday.AddDate(0, 0, 7), ByChannel: true})
	if err != nil {
		t.Fatal(err)
	}
	if set.Days != 7 {
		t.Fatalf("days = %d, want 7", set.Days)
	}
	if set.Stats.Duplicates != 50 || set.Stats.Undecodable != 1 || set.Stats.Sales != n || set.Stats.OutOfRange != 0 {
		t.Fatalf("stats %+v: want 50 duplicates, 1 undecodable, %d sales, none out of range", set.Stats, n)
	}
	// Day by day from the events the simulator generated (the ledger keeps totals only).
	daily := map[Key][]float64{}
	for _, sale := range sales {
		k := Key{SKU: sale.SKU, Site: sale.Site, Channel: sale.Channel}
		if daily[k] == nil {
			daily[k] = make([]float64, 7)
		}
		daily[k][int(sale.Time.Sub(monday)/(24*time.Hour))] += sale.Quantity
	}
	checked := 0
	for _, sku := range s.SKUs() {
		for _, ch := range s.Channels() {
			k := Key{SKU: sku.Name, Site: s.Site(), Channel: ch}
			sr := set.Series[k]
			want := s.Ledger().Sold(sku.Name, ch)
			var got float64
			if sr != nil {
				for d, v := range sr.Values {
					got += v
					if v != daily[k][d] {
						t.Errorf("%s day %d: %v units, the simulator sold %v", k, d, v, daily[k][d])
					}
				}
			}
			if math.Abs(got-want) > 1e-9 {
				t.Errorf("%s: series total %v, ledger %v", k, got, want)
			}
			if want > 0 {
				checked++
			}
		}
	}
	if checked < 10 || len(set.Series) != checked {
		t.Fatalf("%d series checked against the ledger, the set has %d", checked, len(set.Series))
	}

	// Summed over channels: one series per SKU × site with the same units.
	all, err := Build(ctx, js, Source{Stream: ccfg.Stream, Prefix: ccfg.Prefix}, Options{From: monday, To: monday.AddDate(0, 0, 7)})
	if err != nil {
		t.Fatal(err)
	}
	for _, sku := range s.SKUs() {
		var want float64
		for _, ch := range s.Channels() {
			want += s.Ledger().Sold(sku.Name, ch)
		}
		var got float64
		if sr := all.Series[Key{SKU: sku.Name, Site: s.Site()}]; sr != nil {
			for _, v := range sr.Values {
				got += v
			}
		}
		if math.Abs(got-want) > 1e-9 {
			t.Errorf("%s: summed series %v, ledger %v", sku.Name, got, want)
		}
	}

	// A range of the last two days only: the rest is out of range.
	last, err := Build(ctx, js, Source{Stream: ccfg.Stream, Prefix: ccfg.Prefix}, Options{From: monday.AddDate(0, 0, 5), To: monday.AddDate(0, 0, 7)})
	if err != nil {
		t.Fatal(err)
	}
	if last.Days != 2 || last.Stats.OutOfRange == 0 || last.Stats.Sales+last.Stats.OutOfRange != n {
		t.Fatalf("two-day range: %d days, stats %+v", last.Days, last.Stats)
	}
}

// A range reaching before the stream's first sale starts at that sale's day; once the stream has
// dropped messages, at the day after (that day is no longer whole).
func TestRangeTrimmedToTheStream(t *testing.T) {
	ctx := context.Background()
	js, ccfg, st, publish := salesStream(t)
	publish(threeADay(4)...)
	src := Source{Stream: ccfg.Stream, Prefix: ccfg.Prefix}
	set, err := Build(ctx, js, src, Options{From: monday.AddDate(0, 0, -10), To: monday.AddDate(0, 0, 4)})
	if err != nil {
		t.Fatal(err)
	}
	if !set.Stats.Trimmed || !set.From.Equal(monday) || set.Days != 4 || len(set.Series[Key{SKU: "A", Site: "s1"}].Values) != 4 {
		t.Fatalf("a young stream: from %v, %d days, trimmed %v", set.From, set.Days, set.Stats.Trimmed)
	}
	if err := st.DeleteMsg(ctx, 1); err != nil {
		t.Fatal(err)
	}
	set, err = Build(ctx, js, src, Options{From: monday.AddDate(0, 0, -10), To: monday.AddDate(0, 0, 4)})
	if err != nil {
		t.Fatal(err)
	}
	sr := set.Series[Key{SKU: "A", Site: "s1"}]
	if !set.From.Equal(monday.AddDate(0, 0, 1)) || set.Days != 3 || len(sr.Values) != 3 || sr.Values[0] != 3 {
		t.Fatalf("a stream that dropped its first message: from %v, %d days, values %v", set.From, set.Days, sr.Values)
	}
}

func TestEmptyStreamAndBadRange(t *testing.T) {
	js := startJS(t)
	ctx := context.Background()
	ccfg := commerce.DefaultConfig()
	if _, err := commerce.EnsureStream(ctx, js, ccfg); err != nil {
		t.Fatal(err)
	}
	set, err := Build(ctx, js, Source{Stream: ccfg.Stream, Prefix: ccfg.Prefix}, Options{From: monday, To: monday.AddDate(0, 0, 3)})
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Series) != 0 || set.Days != 3 {
		t.Fatalf("empty stream: %d series over %d days", len(set.Series), set.Days)
	}
	if _, err := Build(ctx, js, Source{Stream: ccfg.Stream, Prefix: ccfg.Prefix}, Options{From: monday, To: monday}); err == nil {
		t.Fatal("an empty range was accepted")
	}
	if _, err := Build(ctx, js, Source{Stream: "NOPE", Prefix: ccfg.Prefix}, Options{From: monday, To: monday.AddDate(0, 0, 1)}); err == nil {
		t.Fatal("a missing stream was accepted")
	}
}

// Once the stream has dropped messages, the days it lost are the ones before its oldest stored sale,
// whatever the date of a sale uploaded late: a shop that comes back online with a sale dated weeks
// back must not turn the days the stream lost into days without demand for every series.
func TestLateUploadDoesNotUndoTheTrim(t *testing.T) {
	ctx := context.Background()
	js, ccfg, st, publish := salesStream(t)
	evs := threeADay(4)
	// Stored last, dated eight days before the stream's first sale.
	evs = append(evs, commerce.Sale{OrderID: "late", Line: 1, SKU: "B", Site: "s1", Channel: "retail",
		Quantity: 2, UnitPrice: 1, Currency: "EUR", Time: monday.AddDate(0, 0, -8).Add(12 * time.Hour)})
	publish(evs...)
	// The stream drops its oldest message (max_age, max_bytes): monday is no longer whole.
	if err := st.DeleteMsg(ctx, 1); err != nil {
		t.Fatal(err)
	}
	set, err := Build(ctx, js, Source{Stream: ccfg.Stream, Prefix: ccfg.Prefix}, Options{From: monday.AddDate(0, 0, -10), To: monday.AddDate(0, 0, 4)})
	if err != nil {
		t.Fatal(err)
	}
	sr := set.Series[Key{SKU: "A", Site: "s1"}]
	if !set.Stats.Trimmed || !set.From.Equal(monday.AddDate(0, 0, 1)) || set.Days != 3 || sr == nil || len(sr.Values) != 3 {
		t.Fatalf("a late upload in a stream that dropped messages: from %v, %d days, trimmed %v, series A %v", set.From, set.Days,
			set.Stats.Trimmed, sr)
	}
	if !set.Stats.Oldest.Equal(monday.AddDate(0, 0, -8).Add(12 * time.Hour)) {
		t.Errorf("oldest sale %v, want the late upload's time", set.Stats.Oldest)
	}
}

// A build whose consumer stops delivering (its node lost, or paused) fails after Source.Idle,
// naming the stream: it waited until shutdown, holding the refit lock.
func TestBuildGivesUpOnASilentConsumer(t *testing.T) {
	ctx := context.Background()
	js, ccfg, _, publish := salesStream(t)
	publish(threeADay(1)...)
	onRead = func(c jetstream.Consumer) {
		if _, err := js.PauseConsumer(ctx, ccfg.Stream, c.CachedInfo().Name, time.Now().Add(time.Hour)); err != nil {
			t.Error(err)
		}
	}
	defer func() { onRead = nil }()
	done := make(chan error, 1)
	go func() {
		_, err := Build(ctx, js, Source{Stream: ccfg.Stream, Prefix: ccfg.Prefix, Idle: time.Second}, Options{From: monday, To: monday.AddDate(0, 0, 2)})
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), ccfg.Stream) || !strings.Contains(err.Error(), "stopped delivering") {
			t.Fatalf("build on a paused consumer: %v, want an error naming %s and the silent consumer", err, ccfg.Stream)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("build on a paused consumer still running after 20s")
	}
}

// salesStream starts a server with the COMMERCE stream; publish stores sales on it.
func salesStream(t *testing.T) (jetstream.JetStream, commerce.Config, jetstream.Stream, func(...commerce.Event)) {
	t.Helper()
	js := startJS(t)
	ctx := context.Background()
	ccfg := commerce.DefaultConfig()
	st, err := commerce.EnsureStream(ctx, js, ccfg)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := commerce.NewPublisher(js, ccfg)
	if err != nil {
		t.Fatal(err)
	}
	return js, ccfg, st, func(evs ...commerce.Event) {
		t.Helper()
		for _, r := range pub.Publish(ctx, evs) {
			if r.Err != nil {
				t.Fatal(r.Err)
			}
		}
	}
}

// threeADay is one sale of A at s1 on web at 01:00, 02:00 and 03:00 of each of days days from monday.
func threeADay(days int) []commerce.Event {
	var evs []commerce.Event
	for d := range days {
		for h := range 3 {
			evs = append(evs, commerce.Sale{OrderID: fmt.Sprintf("o%d-%d", d, h), Line: 1, SKU: "A", Site: "s1", Channel: "web",
				Quantity: 1, UnitPrice: 1, Currency: "EUR", Time: monday.AddDate(0, 0, d).Add(time.Duration(h+1) * time.Hour)})
		}
	}
	return evs
}

// A build reads the sales the stream holds when it starts, not those stored while it reads: under
// a steady flow of sales a read that follows them may never catch up, holding the refit lock.
func TestBuildStopsAtTheStreamsEndWhenItStarted(t *testing.T) {
	ctx := context.Background()
	js, ccfg, _, publish := salesStream(t)
	publish(threeADay(2)...)
	onRead = func(jetstream.Consumer) {
		publish(commerce.Sale{OrderID: "during", Line: 1, SKU: "A", Site: "s1", Channel: "web", Quantity: 1, UnitPrice: 1,
			Currency: "EUR", Time: monday.AddDate(0, 0, 1).Add(5 * time.Hour)})
	}
	defer func() { onRead = nil }()
	set, err := Build(ctx, js, Source{Stream: ccfg.Stream, Prefix: ccfg.Prefix}, Options{From: monday, To: monday.AddDate(0, 0, 2)})
	if err != nil {
		t.Fatal(err)
	}
	if set.Stats.Messages != 6 || set.Stats.Sales != 6 {
		t.Errorf("read %d messages, %d sales; want the 6 stored when the build started", set.Stats.Messages, set.Stats.Sales)
	}
}

// A stream that has dropped messages (commerce.max_age shorter than learn.history_days, the
// defaults after a month) holds only its retention's days: the series are sized to those days, not
// to the whole range asked for (3,650 days × 8 bytes per series for a few weeks of data).
func TestSeriesSizedToWhatTheStreamHolds(t *testing.T) {
	ctx := context.Background()
	js, ccfg, st, publish := salesStream(t)
	const skus = 20
	var evs []commerce.Event
	for i := range skus {
		for _, e := range threeADay(10) {
			s := e.(commerce.Sale)
			s.SKU, s.OrderID = fmt.Sprintf("sku-%d", i), fmt.Sprintf("%s-%d", s.OrderID, i)
			evs = append(evs, s)
		}
	}
	publish(evs...)
	if err := st.DeleteMsg(ctx, 1); err != nil { // retention dropped the oldest sale
		t.Fatal(err)
	}
	to := monday.AddDate(0, 0, 10)
	src := Source{Stream: ccfg.Stream, Prefix: ccfg.Prefix}
	build := func(days int) (*Set, uint64) {
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		set, err := Build(ctx, js, src, Options{From: to.AddDate(0, 0, -days), To: to})
		if err != nil {
			t.Fatal(err)
		}
		runtime.ReadMemStats(&m1)
		return set, m1.TotalAlloc - m0.TotalAlloc
	}
	_, short := build(10)
	set, long := build(36500) // a century: 292 KB a series if sized to the range
	sr := set.Series[Key{SKU: "sku-0", Site: "s1"}]
	if !set.Stats.Trimmed || !set.From.Equal(monday.AddDate(0, 0, 1)) || set.Days != 9 || sr == nil || len(sr.Values) != 9 {
		t.Fatalf("from %v, %d days, trimmed %v, series %v", set.From, set.Days, set.Stats.Trimmed, sr)
	}
	if sr.Values[0] != 3 || set.Stats.Sales != skus*27 {
		t.Errorf("values %v, stats %+v: want 3 a day from the first whole day", sr.Values, set.Stats)
	}
	// 20 series of 36,500 days would be 5.8 MB more than of 10.
	if long > short+2<<20 {
		t.Errorf("a build over a century allocated %d KiB, over 10 days %d KiB: the series are sized to the range, not to the stream's days",
			long>>10, short>>10)
	}
}
