package hub

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
)

const monitorYAML = `
features:
  - {name: temp, signal: "*.oven.temp", feature: mean, key: signal, max_age: 10m}
monitor:
  gap_after: 1s
  every: 50ms
  window: 1h
  reference_lag: 2h
  features:
    temp: {psi: 0.3}
`

// The monitor room end to end: the ingest observer writes the monitor log, the quality monitor
// finds the gap, the event lands on the decision log once, the KPIs count it, the APIs show both.
func TestMonitoringWired(t *testing.T) {
	cfg, err := Parse([]byte(monitorYAML), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	h, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	alog, err := audit.Open(ctx, js, audit.Config{Prefix: "gemba"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	m, err := h.openMonitoring(ctx, js, &decisions{log: alog})
	if err != nil {
		t.Fatal(err)
	}
	defer m.close()
	obs := m.observer()
	now := time.Now().UTC()
	for _, seq := range []uint64{1, 2, 4} { // 3 never arrives
		obs.Observe(&signal.Batch{Header: signal.Header{Schema: 2, Agent: "gw1", Site: "s1", Stream: signal.StreamFeatures,
			Incarnation: "i1", FirstSeq: seq, LastSeq: seq, Count: 1},
			Features: []signal.Feature{{Signal: "line1.oven.temp", Name: "mean", WindowEnd: now, Value: 80, Count: 10}}})
	}
	if err := obs.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the gap on the decision log", func() bool {
		evs, err := alog.MonitorEvents(ctx, "gw1", "", 10)
		return err == nil && len(evs) == 1 && evs[0].Kind == "gap" && evs[0].From == 3 && evs[0].To == 3
	})
	testutil.WaitFor(t, 10*time.Second, "the KPIs to count the gap", func() bool {
		return m.kpis.Figures(ctx).Quality["gap/breach"] == 1
	})
	if src := m.source(); src == nil {
		t.Fatal("no quality source for the rules")
	} else if q, ok := src.Status("temp", "line1.oven.temp"); !ok || !q.Gap || q.Missing != 1 {
		t.Errorf("status for the rules: %+v %v", q, ok)
	}
	srv := httptest.NewServer(h.monitorHandlers(func() *monitoring { return m }))
	defer srv.Close()
	get := func(path string, out any) int {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		return resp.StatusCode
	}
	var gaps struct {
		Streams []struct {
			Agent   string
			Missing uint64
		} `json:"streams"`
	}
	if code := get("/api/v1/quality/gaps?agent=gw1", &gaps); code != 200 || len(gaps.Streams) != 1 || gaps.Streams[0].Missing != 1 {
		t.Errorf("gaps API: %d %+v", code, gaps)
	}
	var e map[string]string
	if code := get("/api/v1/quality?feature=temp&key=line9", &e); code != 404 || !strings.Contains(e["error"], "line9") {
		t.Errorf("unknown key: %d %v", code, e)
	}
	var k struct {
		Quality map[string]uint64 `json:"quality_events"`
	}
	if code := get("/api/v1/kpis", &k); code != 200 || k.Quality["gap/breach"] != 1 {
		t.Errorf("kpis API: %d %+v", code, k)
	}
	if v := testutil.Metric(t, h.reg, "gemba_hub_quality_missing_records", "agent", "gw1"); v != 1 {
		t.Errorf("missing records metric: %v", v)
	}
	starting := httptest.NewServer(h.monitorHandlers(func() *monitoring { return nil }))
	defer starting.Close()
	resp, err := http.Get(starting.URL + "/api/v1/kpis")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("before open: %d", resp.StatusCode)
	}
}

func TestMonitorConfigProblems(t *testing.T) {
	_, err := Parse([]byte(`
features:
  - {name: temp, signal: "*.oven.temp", feature: mean, key: signal, max_age: 10m}
monitor:
  slices: 0
  features:
    tmep: {psi: 0.3}
`), func(string) (string, bool) { return "", false })
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{"monitor.slices", `no feature "tmep" is defined`, "line 5"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("no %q in:\n%v", want, err)
		}
	}
}
