package registry

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub/ingest/commerce"
	"github.com/gemba-io/gemba/hub/learn/demand"
)

// Promoting the set already active and clearing a shadow that is not set change nothing: both are
// refused naming the state, and nothing is recorded in the history (as the rules commands refuse
// them).
func TestNoOpChangesRefused(t *testing.T) {
	js := connect(t, startServer(t))
	ctx := context.Background()
	r := openRegistry(t, js, Options{})
	v, err := r.Store(ctx, fitSet(t, synthetic(t, 3, 60, 21), "test"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Shadow(ctx, "", "ops", "nothing yet"); !errors.Is(err, ErrNothingToClear) || !strings.Contains(err.Error(), "no shadow model set") {
		t.Errorf("clear the shadow with none set, no state yet: %v", err)
	}
	if _, err := r.Promote(ctx, v, "alice", "first"); err != nil {
		t.Fatal(err)
	}
	c, err := r.Promote(ctx, v, "bob", "again")
	if !errors.Is(err, ErrUnchanged) || !strings.Contains(err.Error(), v) || !strings.Contains(err.Error(), "change #1") {
		t.Errorf("promote the active set: %v", err)
	}
	if c.Seq != 1 || c.Active != v {
		t.Errorf("promote the active set returned %+v, want the state (change #1, active %s)", c, v)
	}
	if _, err := r.Shadow(ctx, "", "carol", "tidy"); !errors.Is(err, ErrNothingToClear) || !strings.Contains(err.Error(), "no shadow model set") ||
		!strings.Contains(err.Error(), v) {
		t.Errorf("clear the shadow with none set: %v", err)
	}
	log, err := r.Changes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(log) != 1 {
		t.Errorf("%d changes recorded, want 1 (the first promotion): %+v", len(log), log)
	}
}

// A refit whose set is the one already active (the same sales fitted at the same time) stores it
// and changes nothing: no error, no change, nothing in the history.
func TestRefitOfTheActiveSetChangesNothing(t *testing.T) {
	js := connect(t, startServer(t))
	ctx := context.Background()
	ccfg := commerce.DefaultConfig()
	ccfg.Channels = []string{"web"}
	if _, err := commerce.EnsureStream(ctx, js, ccfg); err != nil {
		t.Fatal(err)
	}
	pub, err := commerce.NewPublisher(js, ccfg)
	if err != nil {
		t.Fatal(err)
	}
	var evs []commerce.Event
	for d := range 60 {
		evs = append(evs, commerce.Sale{OrderID: fmt.Sprintf("o%d", d), Line: 1, SKU: "A-100", Site: "plant1", Channel: "web",
			Quantity: float64(4 + d%5), UnitPrice: 3, Currency: "EUR", Time: monday.AddDate(0, 0, d).Add(9 * time.Hour)})
	}
	for _, res := range pub.Publish(ctx, evs) {
		if res.Err != nil {
			t.Fatal(res.Err)
		}
	}
	r := openRegistry(t, js, Options{})
	now := monday.AddDate(0, 0, 60).Add(time.Hour)
	opts := RefitOptions{Source: demand.Source{Stream: ccfg.Stream, Prefix: ccfg.Prefix}, Promote: PromoteActivate,
		Now: func() time.Time { return now }, Fit: FitOptions{By: "refit", Horizon: 7}}
	first, err := r.Refit(ctx, js, opts)
	if err != nil || first.Change == nil {
		t.Fatalf("first refit: %+v, %v", first.Change, err)
	}
	again, err := r.Refit(ctx, js, opts)
	if err != nil || again.Version != first.Version || again.Change != nil {
		t.Fatalf("the same refit again: version %s (first %s), change %+v, %v", again.Version, first.Version, again.Change, err)
	}
	if log, err := r.Changes(ctx); err != nil || len(log) != 1 {
		t.Fatalf("%d changes recorded (%v), want 1", len(log), err)
	}
}
