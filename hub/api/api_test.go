package api

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"go.uber.org/goleak"

	"github.com/gemba-io/gemba/hub/monitor/fleet"
	"github.com/gemba-io/gemba/hub/state/features"
	"github.com/gemba-io/gemba/hub/state/graph"
	"github.com/gemba-io/gemba/hub/state/inventory"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var none = Sources{
	Fleet:     func() *fleet.Fleet { return nil },
	Features:  func() *features.Store { return nil },
	Inventory: func() *inventory.Store { return nil },
	Graph:     func() *graph.Graph { return nil },
}

func do(h http.Handler, path, token string) int {
	req := httptest.NewRequest("GET", path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w.Code
}

// TestStartingAndAuth: before the state is loaded every read says so (503, not an empty answer);
// with a read token, requests without it are refused.
func TestStartingAndAuth(t *testing.T) {
	open := Handler(none, "")
	for _, p := range []string{"/api/v1/fleet", "/api/v1/features", "/api/v1/inventory", "/api/v1/features/a/b", "/api/v1/inventory/s/k"} {
		if c := do(open, p, ""); c != http.StatusServiceUnavailable {
			t.Errorf("%s while starting: %d, want 503", p, c)
		}
	}
	if c := do(open, "/api/v1/graph", ""); c != http.StatusNotFound {
		t.Errorf("graph without a graph: %d, want 404", c)
	}
	locked := Handler(none, "t0ken")
	if c := do(locked, "/api/v1/fleet", ""); c != http.StatusUnauthorized {
		t.Errorf("no token: %d, want 401", c)
	}
	if c := do(locked, "/api/v1/fleet", "wrong"); c != http.StatusUnauthorized {
		t.Errorf("wrong token: %d, want 401", c)
	}
	if c := do(locked, "/api/v1/fleet", "t0ken"); c != http.StatusServiceUnavailable {
		t.Errorf("right token: %d, want 503 (starting)", c)
	}
	if c := do(open, "/api/v1/fleet", ""); c == http.StatusUnauthorized {
		t.Error("no read token configured, yet refused")
	}
}
