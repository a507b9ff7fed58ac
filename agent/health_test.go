package agent

import (
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"sync"
	"testing"

	"github.com/gemba-io/gemba/collectors"
	"github.com/gemba-io/gemba/internal/testutil"
)

// reporting is a collector that only reports what the test sets: state and details.
type reporting struct {
	mu      sync.Mutex
	state   string
	details map[string]string
}

func (c *reporting) Run(ctx context.Context, _ collectors.Emitter) error { <-ctx.Done(); return nil }
func (c *reporting) set(state string, details map[string]string) {
	c.mu.Lock()
	c.state, c.details = state, details
	c.mu.Unlock()
}
func (c *reporting) State() (string, map[string]string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state, maps.Clone(c.details)
}

var (
	reportMu sync.Mutex
	reports  = map[string]*reporting{}
)

func init() {
	collectors.Register(collectors.Factory{
		Type:      "reporting",
		NewConfig: func() any { return &scriptedConfig{} },
		New: func(_ string, cfg any, _ collectors.Deps) (collectors.Collector, error) {
			reportMu.Lock()
			defer reportMu.Unlock()
			return reports[cfg.(*scriptedConfig).Key], nil
		},
	})
}

// TestReadyzAndGaugesFollowCollectorHealth: a collector that cannot reach its source makes
// /readyz 503 and gemba_collector_up 0; one that reaches it only in part (quarantined nodes) is
// up, degraded (gauge 1) and /readyz 200 with status "degraded" and the reason.
func TestReadyzAndGaugesFollowCollectorHealth(t *testing.T) {
	plc := &reporting{state: "starting"}
	reportMu.Lock()
	reports["health-plc"] = plc
	reportMu.Unlock()
	h := start(t, baseConfig+`
collectors:
  - {name: plc, type: reporting, key: health-plc}
`)
	h.up.ready.Store(true)
	get := func() (int, Readiness) {
		resp, err := http.Get("http://" + h.addr + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var r Readiness
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, r
	}
	gauge := func(name string) float64 { return testutil.Metric(t, h.agent.Registry(), name, "collector", "plc") }
	check := func(r Readiness) Check {
		for _, c := range r.Checks {
			if c.Name == "collector plc" {
				return c
			}
		}
		t.Fatalf("no collector check in %+v", r)
		return Check{}
	}
	for _, c := range []struct {
		state   string
		details map[string]string
		code    int
		status  string
		up, deg float64
		reason  string
		beat    string // the state in the status heartbeat
	}{
		{"starting", nil, 503, StatusNotReady, 0, 0, "starting", "starting"},
		{"running", map[string]string{"nodes_active": "8", "nodes_pending": "0", "nodes_quarantined": "0"}, 200, StatusReady, 1, 0, "running", "running"},
		{"running", map[string]string{"nodes_active": "6", "nodes_pending": "0", "nodes_quarantined": "2",
			"node line1.b": "quarantined: BadNodeIdUnknown", "node line1.a": "quarantined: BadNodeIdUnknown"},
			200, StatusDegraded, 1, 1, "degraded: 2 of 8 nodes quarantined (line1.a: quarantined: BadNodeIdUnknown, line1.b: quarantined: BadNodeIdUnknown)", "degraded"},
		{"reconnecting", map[string]string{"last_error": "dial tcp 127.0.0.1:4840: connection refused", "nodes_quarantined": "2"}, 503, StatusNotReady, 0, 0,
			"reconnecting: dial tcp 127.0.0.1:4840: connection refused", "reconnecting"},
		{"degraded", map[string]string{"failed_subscriptions": "plant/#"}, 200, StatusDegraded, 1, 1, "degraded: subscriptions refused: plant/#", "degraded"},
		{"failed", map[string]string{"last_error": "bad credentials"}, 503, StatusNotReady, 0, 0, "failed: bad credentials", "failed"},
		// A name outside the documented set (what collectors said before) is not taken for healthy.
		{"connected", nil, 503, StatusNotReady, 0, 0, `starting: collector reported unknown state "connected"`, "starting"},
	} {
		plc.set(c.state, c.details)
		if got := h.agent.Status().Collectors["plc"].State; got != c.beat {
			t.Errorf("%s %v: heartbeat state %q, want %q", c.state, c.details, got, c.beat)
		}
		checkStatusSchema(t, h.agent.Status())
		code, r := get()
		ch := check(r)
		if code != c.code || r.Status != c.status || r.Ready != (c.code == 200) || ch.Reason != c.reason {
			t.Errorf("%s %v: %d %s %+v; want %d %s %q", c.state, c.details, code, r.Status, ch, c.code, c.status, c.reason)
		}
		if up, deg := gauge("gemba_collector_up"), gauge("gemba_collector_degraded"); up != c.up || deg != c.deg {
			t.Errorf("%s %v: up %v degraded %v, want %v %v", c.state, c.details, up, deg, c.up, c.deg)
		}
	}
}
