package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub/monitor/fleet"
	"github.com/gemba-io/gemba/hub/state/features"
	"github.com/gemba-io/gemba/hub/state/graph"
	"github.com/gemba-io/gemba/hub/state/inventory"
	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
)

// allocated is what one GET of h allocates (bytes), and its body: the least of three GETs, as the
// count is the process's (the test's NATS server allocates beside it now and then).
func allocated(t *testing.T, h http.Handler, target string) (uint64, map[string]json.RawMessage) {
	t.Helper()
	var before, after runtime.MemStats
	var w *httptest.ResponseRecorder
	least := uint64(1<<64 - 1)
	for range 3 {
		w = httptest.NewRecorder()
		r := httptest.NewRequest("GET", target, nil)
		runtime.ReadMemStats(&before)
		h.ServeHTTP(w, r)
		runtime.ReadMemStats(&after)
		least = min(least, after.TotalAlloc-before.TotalAlloc)
	}
	if w.Code != 200 {
		t.Fatalf("%s: %d %s", target, w.Code, w.Body.String())
	}
	var out map[string]json.RawMessage
	if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
		t.Fatal(err)
	}
	return least, out
}

// TestPageMemoryBoundedByLimit: a page of the feature values or of the fleet costs memory by its
// limit, not by the store. Each request copied and sorted the whole store to answer a page of 10
// (50,000 values: some 13 MB per request, the response a few kB), so a few clients paging a large
// store held the hub's memory at a multiple of the store.
func TestPageMemoryBoundedByLimit(t *testing.T) {
	_, js := natstest.Connect(t, natstest.JetStream(t).URL())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	fs, err := features.Open(ctx, js, features.Config{Bucket: "F", Definitions: features.Definitions{
		{Name: "temp", Signal: "*", Feature: "mean", Key: features.BySignal, MaxAge: time.Hour},
	}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	fl, err := fleet.Open(ctx, js, "FLEET", 1, time.Minute, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer fl.Close()
	const values, agents = 50_000, 10_000
	end := time.Now().UTC().Add(-time.Minute)
	ins := make([]features.Input, values)
	for i := range ins {
		ins[i] = features.Input{Feature: &signal.Feature{Signal: fmt.Sprintf("s%06d", values-i), Name: "mean", WindowStart: end.Add(-time.Minute),
			WindowEnd: end, Value: float64(i), Count: 1}, Lineage: features.Lineage{Agent: "gw", StreamSeq: uint64(i + 1)}}
	}
	fs.Apply(ins)
	t.Logf("%d feature values applied", values)
	for i := range agents {
		id := fmt.Sprintf("gw%05d", agents-i)
		hb, _ := json.Marshal(fleet.Agent{Agent: id, Site: "s", Received: time.Now().UTC(), LastSeen: time.Now().UTC()})
		if _, err := js.PublishAsync("$KV.FLEET.s."+id, hb); err != nil {
			t.Fatal(err)
		}
		if i%1000 == 999 {
			select {
			case <-js.PublishAsyncComplete():
			case <-ctx.Done():
				t.Fatal("publishing the fleet entries")
			}
		}
	}
	t.Logf("%d fleet entries published", agents)
	testutil.WaitFor(t, 30*time.Second, "the fleet to hold every agent", func() bool { return len(fl.List()) == agents })
	h := Handler(Sources{
		Fleet:     func() *fleet.Fleet { return fl },
		Features:  func() *features.Store { return fs },
		Inventory: func() *inventory.Store { return nil },
		Graph:     func() *graph.Graph { return nil },
	}, "")
	for _, c := range []struct {
		target, field, first, next string
		bound                      uint64
	}{
		{"/api/v1/features?limit=10", "values", "s000001", "after_key=s000010&after_name=temp&limit=10", 512 << 10},
		{"/api/v1/features?name=temp&limit=10&after_name=temp&after_key=s025000", "values", "s025001", "after_key=s025010&after_name=temp&limit=10&name=temp", 512 << 10},
		{"/api/v1/fleet?limit=10", "agents", "gw00001", "after_agent=gw00010&after_site=s&limit=10", 512 << 10},
	} {
		n, out := allocated(t, h, c.target)
		var items []struct {
			Key   string `json:"key"`
			Agent string `json:"agent"`
		}
		if err := json.Unmarshal(out[c.field], &items); err != nil {
			t.Fatal(err)
		}
		var next string
		_ = json.Unmarshal(out["next"], &next)
		if len(items) != 10 || items[0].Key+items[0].Agent != c.first || next != c.next {
			t.Errorf("%s: %d %s from %+v, next %q; want 10 from %s, next %q", c.target, len(items), c.field, items[0], next, c.first, c.next)
		}
		t.Logf("%s: %d kB", c.target, n>>10)
		if n > c.bound {
			t.Errorf("%s: a page of 10 allocated %d kB (the store: %d values, %d agents), want at most %d kB", c.target, n>>10, values, agents, c.bound>>10)
		}
	}
}
