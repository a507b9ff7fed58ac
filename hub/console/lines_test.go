package console

import (
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub/decide"
	"github.com/gemba-io/gemba/hub/state/features"
	"github.com/gemba-io/gemba/hub/state/graph"
)

// fakeFeatures answers the Lines table's reads from fixed readings (the store's own freshness is
// tested in hub/state/features; here the readings say whether they are stale).
type fakeFeatures struct {
	defs features.Definitions
	vals []features.Reading
}

func (f *fakeFeatures) Get(name, key string) (features.Reading, bool) {
	for _, r := range f.vals {
		if r.Name == name && r.Key == key {
			return r, true
		}
	}
	return features.Reading{}, false
}

func (f *fakeFeatures) Groups(name string, limit int, group func(*features.Reading) string, cmp func(a, b *features.Reading) int) map[string]*features.Group {
	out := map[string]*features.Group{}
	for _, r := range f.vals {
		if k := group(&r); r.Name == name && k != "" {
			if out[k] == nil {
				out[k] = &features.Group{}
			}
			out[k].First = append(out[k].First, r)
			out[k].Count++
		}
	}
	for _, g := range out {
		slices.SortFunc(g.First, func(a, b features.Reading) int { return cmp(&a, &b) })
		g.First = g.First[:min(limit, len(g.First))]
	}
	return out
}

func (f *fakeFeatures) Definitions() (features.Definitions, string) { return f.defs, "v1" }

const linesGraph = `version: t
sites: [{id: s1}]
lines: [{id: l1, site: s1}, {id: l2, site: s1}]
machines: [{id: l1.pack, line: l1}, {id: l2.pack, line: l2}]
signals: [{id: l1.pack.parts, machine: l1.pack}, {id: l2.pack.parts, machine: l2.pack}]
skus: [{id: A}, {id: B}, {id: C}, {id: D}, {id: E}]
edges:
  - {kind: produces, from: l1, to: A}
  - {kind: produces, from: l1, to: B}
  - {kind: produces, from: l1, to: C}
  - {kind: produces, from: l2, to: B}
  - {kind: produces, from: l2, to: D}
`

// reading is a units value of window length win that ended age seconds before end.
func reading(name, key, signal string, v float64, win time.Duration, end time.Time, age float64, stale bool) features.Reading {
	return features.Reading{Value: features.Value{Name: name, Key: key, Value: v, WindowStart: end.Add(-win), WindowEnd: end,
		Lineage: features.Lineage{Agent: "gw1", Signal: signal}}, AgeSeconds: age, Stale: stale}
}

// Units per hour per SKU: each line lists the SKUs the graph says it produces and those its signals
// reported (not in the graph), each with the SKU's latest window scaled to an hour and its
// freshness; a SKU whose latest reading came from another line says so; stale readings are marked
// and not running; the running ones come first, fastest first.
func TestLineSKUs(t *testing.T) {
	g, err := graph.Load([]byte(linesGraph))
	if err != nil {
		t.Fatal(err)
	}
	end := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	ff := &fakeFeatures{
		defs: features.Definitions{{Name: "availability", Key: features.ByLine}, {Name: "units", Key: features.BySKU}},
		vals: []features.Reading{
			reading("availability", "l1", "l1.pack.state", 0.9, time.Minute, end, 5, false),
			reading("units", "A", "l1.pack.parts", 30, 10*time.Minute, end, 5, false),                // 180/h on l1
			reading("units", "B", "l2.pack.parts", 50, time.Minute, end, 5, false),                   // 3000/h on l2 (l1 too produces B)
			reading("units", "C", "l1.pack.parts", 12, time.Minute, end.Add(-time.Hour), 3605, true), // stale: 720/h, not running
			reading("units", "E", "l1.pack.parts", 5, 5*time.Minute, end, 5, false),                  // 60/h, made on l1 though not in the graph
			reading("units", "D", "x9.pack.parts", 2, time.Minute, end, 5, false),                    // signal not in the graph: D's producer l2
		},
	}
	e := newEnv(t, nil)
	e.c.src.Lines = decide.Lines{Availability: "availability", RunningAbove: 0.5}
	rows, note := e.c.lineRows(ff, g)
	if note != "" || len(rows) != 2 {
		t.Fatalf("rows %d, note %q", len(rows), note)
	}
	type want struct {
		sku              string
		perHour          float64
		running, produce bool
		elsewhere        string
		reading          bool
	}
	check := func(line string, got []skuRate, ws []want) {
		t.Helper()
		if len(got) != len(ws) {
			t.Fatalf("%s: %d SKUs %+v, want %d", line, len(got), got, len(ws))
		}
		for i, w := range ws {
			s := got[i]
			if s.SKU != w.sku || s.PerHour != w.perHour || s.Running != w.running || s.Produces != w.produce || s.Elsewhere != w.elsewhere || (s.Units != nil) != w.reading {
				t.Errorf("%s[%d]: %+v, want %+v", line, i, s, w)
			}
		}
	}
	check("l1", rows[0].SKUs, []want{
		{sku: "A", perHour: 180, running: true, produce: true, reading: true},
		{sku: "E", perHour: 60, running: true, reading: true},
		{sku: "C", perHour: 720, produce: true, reading: true},
		{sku: "B", produce: true, elsewhere: "l2"},
	})
	check("l2", rows[1].SKUs, []want{
		{sku: "B", perHour: 3000, running: true, produce: true, reading: true},
		{sku: "D", perHour: 120, running: true, produce: true, reading: true},
	})

	w := httptest.NewRecorder()
	e.c.render(w, httptest.NewRequest("GET", "/console/features", nil), http.StatusOK, "features", page{Title: "Lines & features",
		Data: map[string]any{"LineRows": rows, "SKUUnits": "units"}})
	body := w.Body.String()
	if w.Code != 200 {
		t.Fatalf("render: %d %s\n%s", w.Code, body, e.logs.String())
	}
	text := regexp.MustCompile(`<[^>]+>`).ReplaceAllString(body, "")
	text = strings.Join(strings.Fields(text), " ")
	for _, want := range []string{"Units/h per SKU",
		"A: 180/h (30 in 10m0s, 5s old)", "E not in graph: 60/h (5 in 5m0s, 5s old)",
		"C: 720/h (12 in 1m0s, 1h0m5s old STALE)", "B: latest made on l2",
		"B: 3000/h (50 in 1m0s, 5s old)", "D: 120/h (2 in 1m0s, 5s old)",
		"latest window of units scaled to an hour"} {
		if !strings.Contains(text, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if !strings.Contains(body, `class="sku stale" data-sku="C"`) || !strings.Contains(body, `class="sku running" data-sku="A"`) {
		t.Errorf("C not marked stale or A not running:\n%s", body)
	}

	// A sku_units that is not a feature keyed by SKU: the lines still show, with the reason.
	e.c.cfg.SKUUnits = "availability"
	rows, note = e.c.lineRows(ff, g)
	if len(rows) != 2 || rows[0].SKUs != nil || !strings.Contains(note, `"availability" (console.sku_units) is keyed by line, not by sku`) {
		t.Errorf("sku_units keyed by line: %d rows, SKUs %v, note %q", len(rows), rows[0].SKUs, note)
	}
}

// A line making more SKUs than the table lists shows the first maxLineSKUs and counts the rest.
func TestLineSKUsCapped(t *testing.T) {
	var b strings.Builder
	b.WriteString("version: t\nsites: [{id: s1}]\nlines: [{id: l1, site: s1}]\nskus:\n")
	for i := range 20 {
		b.WriteString("  - {id: S" + string(rune('a'+i)) + "}\n")
	}
	b.WriteString("edges:\n")
	for i := range 20 {
		b.WriteString("  - {kind: produces, from: l1, to: S" + string(rune('a'+i)) + "}\n")
	}
	g, err := graph.Load([]byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	end := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	ff := &fakeFeatures{defs: features.Definitions{{Name: "units", Key: features.BySKU}},
		vals: []features.Reading{reading("units", "St", "l1.pack.parts", 1, time.Minute, end, 1, false)}}
	e := newEnv(t, nil)
	e.c.src.Lines = decide.Lines{Availability: "availability", RunningAbove: 0.5}
	rows, _ := e.c.lineRows(ff, g)
	if len(rows) != 1 || len(rows[0].SKUs) != maxLineSKUs || rows[0].MoreSKUs != 20-maxLineSKUs || rows[0].SKUs[0].SKU != "St" || rows[0].SKUs[1].SKU != "Sa" {
		t.Fatalf("rows %+v", rows)
	}
}
