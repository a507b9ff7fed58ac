package api

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub/monitor/fleet"
	"github.com/gemba-io/gemba/hub/state/features"
	"github.com/gemba-io/gemba/hub/state/graph"
	"github.com/gemba-io/gemba/hub/state/inventory"
	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/signal"
)

// walk follows "next" from query (the whole next query, nothing else kept by the client) and
// counts the id of every item listed, failing on a page over limit or a paging that never ends.
func walk[T any](t *testing.T, h http.Handler, path, query, field string, limit int, id func(T) string) map[string]int {
	t.Helper()
	seen := map[string]int{}
	for pages := 0; query != ""; pages++ {
		if pages > 50 {
			t.Fatalf("%s: still paging after %d pages (seen %v)", path, pages, seen)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", path+"?"+query, nil))
		if w.Code != 200 {
			t.Fatalf("%s?%s: %d %s", path, query, w.Code, w.Body.String())
		}
		var out map[string]json.RawMessage
		if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
			t.Fatal(err)
		}
		var items []T
		if err := json.Unmarshal(out[field], &items); err != nil {
			t.Fatalf("%s: %v\n%s", field, err, w.Body.String())
		}
		if len(items) > limit {
			t.Fatalf("%s?%s: a page of %d %s, want at most limit=%d", path, query, len(items), field, limit)
		}
		for _, x := range items {
			seen[id(x)]++
		}
		query = ""
		if n, ok := out["next"]; ok {
			if err := json.Unmarshal(n, &query); err != nil {
				t.Fatal(err)
			}
		}
	}
	return seen
}

func onceEach(t *testing.T, what string, seen map[string]int, want []string) {
	t.Helper()
	for _, k := range want {
		if seen[k] != 1 {
			t.Errorf("%s: %q listed %d times, want once (all: %v)", what, k, seen[k], seen)
		}
	}
	if len(seen) != len(want) {
		t.Errorf("%s: listed %v, want %v", what, seen, want)
	}
}

// TestFeaturesAndFleetPaging: the feature values and the fleet are listed a page at a time, as
// inventory and quality are (limit, 1000 by default and at most 10000; a full page carries next,
// the next page's whole query), not in one response as large as the store. Following next lists
// each value once whatever its key holds ("&", "+", "#", "%"), filters kept.
func TestFeaturesAndFleetPaging(t *testing.T) {
	_, js := natstest.Connect(t, natstest.JetStream(t).URL())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	fs, err := features.Open(ctx, js, features.Config{Bucket: "F", Definitions: features.Definitions{
		{Name: "temp", Signal: "*", Feature: "mean", Key: features.BySignal, MaxAge: time.Hour},
		{Name: "units", Signal: "*", Feature: "units", Key: features.BySignal, MaxAge: time.Hour},
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

	end := time.Now().UTC().Add(-time.Minute)
	keys := []string{"a", "a&b", "a+b", "a#1", "a%20", "b"}
	var ins []features.Input
	var wantAll, wantTemp []string
	for i, k := range keys {
		for _, name := range []string{"mean", "units"} {
			ins = append(ins, features.Input{Feature: &signal.Feature{Signal: k, Name: name, WindowStart: end.Add(-time.Minute),
				WindowEnd: end, Value: float64(i), Count: 1}, Lineage: features.Lineage{Agent: "gw", StreamSeq: uint64(i + 1)}})
		}
		wantAll = append(wantAll, "temp/"+k, "units/"+k)
		wantTemp = append(wantTemp, "temp/"+k)
	}
	fs.Apply(ins)
	var wantAgents []string
	for _, site := range []string{"s1", "s&2"} {
		for _, agent := range []string{"gw1", "gw+2", "gw#3"} {
			if err := fl.Heartbeat(ctx, &signal.Header{Site: site, Agent: agent}, &signal.Status{Time: time.Now(), Site: site, Agent: agent}, time.Time{}); err != nil {
				t.Fatal(err)
			}
			wantAgents = append(wantAgents, site+"/"+agent)
		}
	}
	h := Handler(Sources{
		Fleet:     func() *fleet.Fleet { return fl },
		Features:  func() *features.Store { return fs },
		Inventory: func() *inventory.Store { return nil },
		Graph:     func() *graph.Graph { return nil },
	}, "")
	value := func(v features.Reading) string { return v.Name + "/" + v.Key }
	onceEach(t, "features limit=1", walk(t, h, "/api/v1/features", "limit=1", "values", 1, value), wantAll)
	onceEach(t, "features limit=5", walk(t, h, "/api/v1/features", "limit=5", "values", 5, value), wantAll)
	onceEach(t, "features name=temp limit=2", walk(t, h, "/api/v1/features", "name=temp&limit=2", "values", 2, value), wantTemp)
	onceEach(t, "features key=a&b limit=1", walk(t, h, "/api/v1/features", "key=a%26b&limit=1", "values", 1, value), []string{"temp/a&b", "units/a&b"})
	agent := func(v fleet.View) string { return v.Site + "/" + v.Agent.Agent }
	onceEach(t, "fleet limit=1", walk(t, h, "/api/v1/fleet", "limit=1", "agents", 1, agent), wantAgents)
	onceEach(t, "fleet limit=4", walk(t, h, "/api/v1/fleet", "limit=4", "agents", 4, agent), wantAgents)
	// Without limit, a page of 1000 at most: this store fits in one, and says there is no more.
	onceEach(t, "features", walk(t, h, "/api/v1/features", "name=", "values", 1000, value), wantAll)

	for _, q := range []string{"/api/v1/features?limit=0", "/api/v1/features?limit=10001", "/api/v1/features?limit=x",
		"/api/v1/fleet?limit=0", "/api/v1/fleet?limit=20000"} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", q, nil))
		if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "1..10000") {
			t.Errorf("%s: %d %s, want 400 naming 1..10000", q, w.Code, strings.TrimSpace(w.Body.String()))
		}
	}
}

// TestFeaturesUnknownName: a feature name no definition has and no value carries (a typo: "tmep")
// is the client's mistake, answered 404 with the names there are, as /quality answers; an empty
// 200 reads as "no values yet".
func TestFeaturesUnknownName(t *testing.T) {
	_, js := natstest.Connect(t, natstest.JetStream(t).URL())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	fs, err := features.Open(ctx, js, features.Config{Bucket: "F", Definitions: features.Definitions{
		{Name: "temp", Signal: "*", Feature: "mean", Key: features.BySignal, MaxAge: time.Hour},
	}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	h := Handler(Sources{
		Fleet:     func() *fleet.Fleet { return nil },
		Features:  func() *features.Store { return fs },
		Inventory: func() *inventory.Store { return nil },
		Graph:     func() *graph.Graph { return nil },
	}, "")
	for _, c := range []struct {
		query string
		code  int
		says  string
	}{{"name=tmep", 404, "temp"}, {"name=temp", 200, `"values": []`}, {"", 200, `"values": []`}} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", "/api/v1/features?"+c.query, nil))
		if w.Code != c.code || !strings.Contains(w.Body.String(), c.says) {
			t.Errorf("%s: %d %s, want %d with %q", c.query, w.Code, strings.TrimSpace(w.Body.String()), c.code, c.says)
		}
	}
}
