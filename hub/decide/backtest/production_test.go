package backtest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub"
	"github.com/gemba-io/gemba/hub/decide/rules"
	"github.com/gemba-io/gemba/hub/ingest/commerce"
	"github.com/gemba-io/gemba/signal"
)

// productionHistory publishes, stored now (the stream's time is the wall clock): an ERP count of
// 100 A a day ago, a sale of 50 since, and 23 h of production since the count (10 A every 10
// minutes, one envelope an hour: 1380 A). It returns a From after what the agents' stream stored
// plus the longest max_age and the reorder window, so that the replay's agents' read for the
// features starts after the production: the live hub had it all, applied as it arrived.
func productionHistory(t *testing.T, js jetstream.JetStream, cfg *hub.Config, reorder time.Duration) (from time.Time, envelopes int) {
	t.Helper()
	ctx := context.Background()
	t0 := time.Now().UTC().Truncate(time.Second)
	pub, err := commerce.NewPublisher(js, cfg.Commerce)
	if err != nil {
		t.Fatal(err)
	}
	mustPublish(t, pub.Publish(ctx, []commerce.Event{
		commerce.Snapshot{SnapshotID: "erp-day", SKU: "A", Site: "s1", OnHand: 100, Time: t0.Add(-24 * time.Hour)},
		commerce.Sale{OrderID: "o-day", Line: 1, SKU: "A", Site: "s1", Channel: "web", Quantity: 50, UnitPrice: 2,
			Currency: "EUR", Time: t0.Add(-12 * time.Hour)},
	}))
	ag := &agent{js: js, id: "agent-1"}
	for end := t0.Add(-24 * time.Hour).Add(10 * time.Minute); !end.After(t0.Add(-time.Hour)); end = end.Add(10 * time.Minute) {
		ag.add("l1.pack.parts", "units", end, 10, signal.Label{Key: "sku", Value: "A"})
		if end.Minute() == 0 || len(ag.pending) == 6 {
			ag.flush(t)
			envelopes++
		}
	}
	if len(ag.pending) > 0 {
		ag.flush(t)
		envelopes++
	}
	st, err := js.Stream(ctx, cfg.Ingest.Stream)
	if err != nil {
		t.Fatal(err)
	}
	var longest time.Duration
	for _, d := range cfg.Features {
		longest = max(longest, d.MaxAge)
	}
	from = st.CachedInfo().State.LastTime.UTC().Add(longest + reorder + time.Millisecond)
	// One window in the span (stored before its end, well within max_future).
	ag.add("l1.pack.parts", "units", from.Add(10*time.Second), 1, signal.Label{Key: "sku", Value: "A"})
	ag.flush(t)
	return from, envelopes
}

func productionConfig(t *testing.T) (*hub.Config, *rules.Set) {
	t.Helper()
	cfg, _ := testConfig(t)
	for i := range cfg.Features {
		cfg.Features[i].MaxAge = time.Second
	}
	set, err := rules.Load([]byte(`name: stock
hit_policy: first
rules:
  - name: promote-stock
    when: inventory.position > 1000.0
    promote: {channels: [web], discount: 10, duration: 24h}
`), rules.KnownFeatures("availability", "units"))
	if err != nil {
		t.Fatal(err)
	}
	return cfg, set
}

// The stock position at From is the last ERP count before it plus what was produced since,
// less what was sold: the production since a count a day before From is read from the agents'
// stream (not only the last max_age and reorder window), and the replay promotes at From as the
// live hub, which applied it as it arrived, would have.
func TestBacktestPositionCountsProductionSinceTheCount(t *testing.T) {
	cfg, set := productionConfig(t)
	js := hubNATS(t, cfg)
	reorder := 100 * time.Millisecond
	from, _ := productionHistory(t, js, cfg, reorder)
	var pos float64
	inspect = func(r *replay) {
		p, _ := r.st.inv.Get("A", "s1")
		pos = p.Position
	}
	defer func() { inspect = nil }()
	var got []string
	sum, err := Run(context.Background(), Options{JS: js, Config: cfg, Rules: set, From: from, To: from.Add(time.Hour),
		Reorder: reorder, TempDir: t.TempDir(), Out: func(d Decision) { got = append(got, line(d)) }})
	if err != nil {
		t.Fatal(err)
	}
	// The inventory's arithmetic: 100 counted + 1380 + 1 produced since − 50 sold since.
	if want := 100.0 + 1380 + 1 - 50; pos != want {
		t.Errorf("position of A at s1 at the end %v, want %v (the count, the production since, the sale since)", pos, want)
	}
	// Promoted at From; the next hour's decision, if the span reaches it, meets the cooldown.
	want := from.Format("15:04:05") + " A web promote-stock promote fired"
	if len(got) == 0 || got[0] != want || len(got) > 2 || len(got) == 2 && !strings.HasSuffix(got[1], "suppressed by cooldown") {
		t.Fatalf("decisions %q, want [%s] and at most a later one suppressed by cooldown (summary %+v)", got, want, sum)
	}
	if len(sum.Warnings) != 0 {
		t.Errorf("warnings on streams that lost nothing: %q", sum.Warnings)
	}
}

// When the agents' stream no longer holds part of the production since the last count (its
// retention), the summary says so: the positions lack those units.
func TestBacktestSaysWhatRetentionRemovedOfProduction(t *testing.T) {
	cfg, set := productionConfig(t)
	js := hubNATS(t, cfg)
	reorder := 100 * time.Millisecond
	from, _ := productionHistory(t, js, cfg, reorder)
	st, err := js.Stream(context.Background(), cfg.Ingest.Stream)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Purge(context.Background(), jetstream.WithPurgeSequence(3)); err != nil {
		t.Fatal(err)
	}
	sum, err := Run(context.Background(), Options{JS: js, Config: cfg, Rules: set, From: from, To: from.Add(time.Hour),
		Reorder: reorder, TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Warnings) != 1 || !strings.Contains(sum.Warnings[0], "agents stream "+cfg.Ingest.Stream) ||
		!strings.Contains(sum.Warnings[0], "production") {
		t.Fatalf("warnings %q; want one naming the agents stream %s and the production it lacks", sum.Warnings, cfg.Ingest.Stream)
	}
}
