package console

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub/decide"
	"github.com/gemba-io/gemba/hub/monitor/fleet"
	"github.com/gemba-io/gemba/hub/state/features"
	"github.com/gemba-io/gemba/hub/state/graph"
	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
)

var skuAttr = regexp.MustCompile(`data-sku="([^"]+)"`)

// allocated is what one GET of the console's path allocates (bytes), and its answer: the least of
// three GETs, as the count is the process's (the test's NATS server allocates beside it now and then).
func (e *env) allocated(t *testing.T, path string, sc *http.Cookie) (uint64, *httptest.ResponseRecorder) {
	t.Helper()
	var before, after runtime.MemStats
	var w *httptest.ResponseRecorder
	least := uint64(1<<64 - 1)
	for range 3 {
		runtime.ReadMemStats(&before)
		w = e.do("GET", path, nil, []*http.Cookie{sc}, nil)
		runtime.ReadMemStats(&after)
		least = min(least, after.TotalAlloc-before.TotalAlloc)
	}
	if w.Code != http.StatusOK {
		t.Fatalf("%s: %d %s", path, w.Code, w.Body.String())
	}
	return least, w
}

// TestFeaturesPageMemoryBoundedByPage: the Lines & features page costs memory by its page (and the
// graph), not by the feature store. Each view copied and sorted every value of the store (List) to
// show a page of them, and every value of the SKU units feature again for the Lines table: with
// 100,000 values some 40 MB a view, so a few people with the page open (or a reload loop) held the
// hub's memory at a multiple of its store.
func TestFeaturesPageMemoryBoundedByPage(t *testing.T) {
	_, js := natstest.Connect(t, natstest.JetStream(t).URL())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	fs, err := features.Open(ctx, js, features.Config{Bucket: "F", Definitions: features.Definitions{
		{Name: "temp", Signal: "*", Feature: "mean", Key: features.BySignal, MaxAge: time.Hour},
		{Name: "units", Signal: "*.pack.parts", Feature: "units", Key: features.BySKU, MaxAge: time.Hour},
	}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	g, err := graph.Load([]byte(`version: t
sites: [{id: s1}]
lines: [{id: l1, site: s1}, {id: l2, site: s1}]
machines: [{id: l1.pack, line: l1}, {id: l2.pack, line: l2}]
signals: [{id: l1.pack.parts, machine: l1.pack}, {id: l2.pack.parts, machine: l2.pack}]
skus: [{id: SKU-000001}, {id: SKU-000002}]
edges:
  - {kind: produces, from: l1, to: SKU-000001}
  - {kind: produces, from: l2, to: SKU-000002}
`))
	if err != nil {
		t.Fatal(err)
	}
	const temps, skus = 50_000, 50_000
	const pageBound = 4 << 20
	end := time.Now().UTC().Add(-time.Minute)
	ins := make([]features.Input, 0, temps+skus)
	for i := range temps {
		ins = append(ins, features.Input{Feature: &signal.Feature{Signal: fmt.Sprintf("s%06d", temps-i), Name: "mean",
			WindowStart: end.Add(-time.Minute), WindowEnd: end, Value: float64(i), Count: 1}, Lineage: features.Lineage{Agent: "gw", StreamSeq: uint64(i + 1)}})
	}
	for i := range skus {
		// Every other SKU made on l1, the others on l2; the stale ones (window ended 2 h ago) every tenth.
		we := end
		if i%10 == 0 {
			we = end.Add(-2 * time.Hour)
		}
		ins = append(ins, features.Input{Feature: &signal.Feature{Signal: fmt.Sprintf("l%d.pack.parts", 1+i%2), Name: "units",
			WindowStart: we.Add(-time.Minute), WindowEnd: we, Value: float64(1 + i%97), Count: 1,
			Labels: signal.Labels{{Key: "sku", Value: fmt.Sprintf("SKU-%06d", i+1)}}}, Lineage: features.Lineage{Agent: "gw", StreamSeq: uint64(temps + i + 1)}})
	}
	fs.Apply(ins)
	t.Logf("%d feature values applied", temps+skus)

	// Each line's first SKUs: the running ones (not stale) of the largest value, by id.
	var l1, l2 []string
	for i := range skus {
		if i%10 != 0 && i%97 == 96 {
			if i%2 == 0 {
				l1 = append(l1, fmt.Sprintf("SKU-%06d", i+1))
			} else {
				l2 = append(l2, fmt.Sprintf("SKU-%06d", i+1))
			}
		}
	}
	l1, l2 = l1[:maxLineSKUs], l2[:maxLineSKUs]

	e := newEnv(t, nil)
	e.c.src.Features = func() *features.Store { return fs }
	e.c.src.Graph = func() *graph.Graph { return g }
	e.c.src.Lines = decide.Lines{Availability: "availability", RunningAbove: 0.5}
	sc, _ := e.login(t, "vera", "viewer-pw")
	for _, c := range []struct {
		path  string
		wants []string
	}{
		{"/console/features", []string{"100000 values", "5000 stale", "Showing 1–200", ">s000001<", ">s000200<",
			`href="?after_key=s000200&amp;after_name=temp&amp;key=&amp;name="`}},
		{"/console/features?name=units&key=SKU-0001", []string{"100 values", "10 stale", "Showing 1–100", ">SKU-000100<"}},
		{"/console/features?name=temp&after_name=temp&after_key=s025000", []string{"50000 values", "Showing 25001–25200", ">s025001<", ">s025200<"}},
	} {
		n, w := e.allocated(t, c.path, sc)
		body := w.Body.String()
		for _, want := range c.wants {
			if !strings.Contains(body, want) {
				t.Errorf("%s: the page lacks %q", c.path, want)
			}
		}
		// The Lines table: each line's 12 fastest SKUs, the rest counted.
		i := strings.Index(body, `id="lines"`)
		j := strings.Index(body, `id="features"`)
		if i < 0 || j < i {
			t.Fatalf("%s: no Lines table", c.path)
		}
		got := skuAttr.FindAllStringSubmatch(body[i:j], -1)
		var order []string
		for _, m := range got {
			order = append(order, m[1])
		}
		if want := append(l1, l2...); strings.Join(order, " ") != strings.Join(want, " ") ||
			strings.Count(body[i:j], fmt.Sprintf("and %d more", skus/2-maxLineSKUs)) != 2 {
			t.Errorf("%s: the Lines table lists %v, want %v, each with %d more", c.path, order, want, skus/2-maxLineSKUs)
		}
		t.Logf("%s: %d kB", c.path, n>>10)
		if n > pageBound {
			t.Errorf("%s: a page of 200 allocated %d kB (the store: %d values), want at most %d kB", c.path, n>>10, temps+skus, pageBound>>10)
		}
	}
}

// TestFleetPageMemoryBoundedByPage: the fleet page shows a page of agents (with the whole fleet's
// counts), not every agent: it copied, sorted and rendered them all on each view (10,000 agents:
// some 30 MB a view and a page of 10,000 rows).
func TestFleetPageMemoryBoundedByPage(t *testing.T) {
	_, js := natstest.Connect(t, natstest.JetStream(t).URL())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	fl, err := fleet.Open(ctx, js, "FLEET", 1, time.Minute, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer fl.Close()
	const agents = 10_000
	for i := range agents {
		id := fmt.Sprintf("gw%05d", agents-i)
		at := time.Now().UTC()
		if i%4 == 0 {
			at = at.Add(-2 * time.Minute) // stale: no heartbeat for stale_after (1 m)
		}
		hb, _ := json.Marshal(fleet.Agent{Agent: id, Site: "s", Received: at, LastSeen: at, Version: "1.0"})
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
	testutil.WaitFor(t, 30*time.Second, "the fleet to hold every agent", func() bool { return len(fl.List()) == agents })

	e := newEnv(t, nil)
	e.c.src.Fleet = func() *fleet.Fleet { return fl }
	sc, _ := e.login(t, "vera", "viewer-pw")
	for _, c := range []struct {
		path  string
		wants []string
	}{
		{"/console/fleet", []string{"10000 agents", "2500 stale", "<td>gw00001</td>", "<td>gw00200</td>", `href="?after_agent=gw00200&amp;after_site=s"`}},
		{"/console/fleet?after_site=s&after_agent=gw09900", []string{"10000 agents", "<td>gw09901</td>", "<td>gw10000</td>"}},
	} {
		n, w := e.allocated(t, c.path, sc)
		body := w.Body.String()
		for _, want := range c.wants {
			if !strings.Contains(body, want) {
				t.Errorf("%s: the page lacks %q", c.path, want)
			}
		}
		if rows := strings.Count(body, "<td>gw"); rows > 200 {
			t.Errorf("%s: %d agents on the page, want at most a page (200)", c.path, rows)
		}
		t.Logf("%s: %d kB", c.path, n>>10)
		if n > 4<<20 {
			t.Errorf("%s: a page of 200 allocated %d kB (the fleet: %d agents), want at most %d kB", c.path, n>>10, agents, 4<<10)
		}
	}
}
