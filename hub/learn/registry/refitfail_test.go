package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub/ingest/commerce"
	"github.com/gemba-io/gemba/hub/learn/demand"
)

// salesStream publishes days of one SKU's daily sales at s1 (channels given) to a COMMERCE stream.
func salesStream(t *testing.T, js jetstream.JetStream, days int, channels ...string) demand.Source {
	t.Helper()
	ctx := context.Background()
	ccfg := commerce.DefaultConfig()
	if _, err := commerce.EnsureStream(ctx, js, ccfg); err != nil {
		t.Fatal(err)
	}
	pub, err := commerce.NewPublisher(js, ccfg)
	if err != nil {
		t.Fatal(err)
	}
	var evs []commerce.Event
	for d := range days {
		for i, ch := range channels {
			evs = append(evs, commerce.Sale{OrderID: fmt.Sprintf("o%d-%s", d, ch), Line: 1, SKU: "A", Site: "s1", Channel: ch,
				Quantity: float64(3 + (d+i)%4), UnitPrice: 1, Currency: "EUR", Time: monday.AddDate(0, 0, d).Add(10 * time.Hour)})
		}
	}
	for _, r := range pub.Publish(ctx, evs) {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	return demand.Source{Stream: ccfg.Stream, Prefix: ccfg.Prefix}
}

// A refit whose set was stored but could not be promoted did not refresh anything: the scheduled
// refit (FreshFor) must not take that set as a fresh one and wait a whole period, and the registry
// must say the last refit failed. While the state stays unreadable, the retries store no set.
func TestFailedPromotionIsNotFresh(t *testing.T) {
	srv := startServer(t)
	js := connect(t, srv)
	ctx := context.Background()
	src := salesStream(t, js, 50, "web")
	other := openRegistry(t, connect(t, srv), Options{})
	// The refitting replica's clock: armed, its second reading (its change's timestamp, after the
	// set is stored and the state read) is when the state key is overwritten with something unreadable.
	calls, armed := 0, false
	r := openRegistry(t, js, Options{Now: func() time.Time {
		calls++
		if armed && calls == 2 {
			if _, err := other.kv.Put(ctx, stateKey, []byte("{not json")); err != nil {
				t.Error(err)
			}
		}
		return time.Now()
	}})
	now := monday.AddDate(0, 0, 50).Add(time.Hour)
	opts := RefitOptions{Source: src, Now: func() time.Time { return now }, FreshFor: 24 * time.Hour,
		Fit: FitOptions{By: "replica-a", Horizon: 14}}
	first, err := r.Refit(ctx, js, opts)
	if err != nil || first.Change == nil {
		t.Fatalf("first refit: %+v, %v", first.Change, err)
	}
	good, _, err := r.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	calls, armed = 0, true
	now = now.Add(25 * time.Hour)
	failed, err := r.Refit(ctx, js, opts)
	armed = false
	if err == nil || failed.Version == "" || failed.Change != nil {
		t.Fatalf("refit whose state became unreadable: %+v, %v", failed, err)
	}
	st, ok, err := r.LastRefit(ctx)
	if err != nil || !ok || st.Err == "" || st.Version != failed.Version || st.By != "replica-a" {
		t.Errorf("last refit after the failed promotion: %+v, %v, %v; want its version %s and an error", st, ok, err, failed.Version)
	}
	if _, fresh, err := r.Fresh(ctx, opts.FreshFor, now); err != nil || fresh {
		t.Errorf("the set whose promotion failed counts as fresh (%v, %v)", fresh, err)
	}
	// The next check, minutes later, refits; while the state is unreadable it fails before fitting,
	// storing nothing, and the set is still not fresh.
	before, err := r.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Minute)
	if res, err := r.Refit(ctx, js, opts); err == nil || errors.Is(err, ErrFresh) || res.Version != "" {
		t.Errorf("a refit while the state is unreadable: %+v, %v; want it to fail before fitting", res, err)
	}
	if after, err := r.List(ctx); err != nil || len(after) != len(before) {
		t.Errorf("%d sets stored after a refit against an unreadable state, %d before (%v)", len(after), len(before), err)
	}
	if _, fresh, err := r.Fresh(ctx, opts.FreshFor, now); err != nil || fresh {
		t.Errorf("after a second failed refit the newest set counts as fresh (%v, %v)", fresh, err)
	}
	// The state is readable again: the next check refits and promotes.
	val, _ := json.Marshal(good)
	if _, err := r.kv.Put(ctx, stateKey, val); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Minute)
	next, err := r.Refit(ctx, js, opts)
	if err != nil {
		t.Fatalf("the refit after a failed promotion: %v", err)
	}
	if next.Change == nil || next.Change.Active != next.Version {
		t.Fatalf("the refit after a failed promotion: change %+v", next.Change)
	}
	if st, ok, err := r.LastRefit(ctx); err != nil || !ok || st.Err != "" || st.Version != next.Version {
		t.Errorf("last refit after the good one: %+v, %v, %v", st, ok, err)
	}
	if _, fresh, err := r.Fresh(ctx, opts.FreshFor, now); err != nil || !fresh {
		t.Errorf("the set just promoted is not fresh (%v, %v)", fresh, err)
	}
	if _, err := r.Refit(ctx, js, opts); !errors.Is(err, ErrFresh) {
		t.Errorf("a refit right after a good one: %v", err)
	}
}
