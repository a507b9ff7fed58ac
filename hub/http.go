package hub

import (
	"encoding/json"
	"net/http"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/gemba-io/gemba/hub/api"
	"github.com/gemba-io/gemba/hub/monitor/fleet"
	"github.com/gemba-io/gemba/hub/state/features"
	"github.com/gemba-io/gemba/hub/state/graph"
	"github.com/gemba-io/gemba/hub/state/inventory"
)

// Readiness is /readyz's body.
type Readiness struct {
	Ready   bool     `json:"ready"`
	Reasons []string `json:"reasons,omitempty"`
}

// Readiness says whether this replica is ingesting, and why not.
func (h *Hub) Readiness() Readiness {
	h.mu.Lock()
	why, nc, ing := h.why, h.nc, h.ingest
	h.mu.Unlock()
	var r []string
	if why != "" {
		r = append(r, why)
	}
	if nc != nil && !nc.IsConnected() {
		r = append(r, "not connected to NATS ("+nc.Status().String()+")")
	}
	if ing != nil {
		if ok, w := ing.Ready(); !ok {
			r = append(r, "agents ingest: "+w)
		}
	}
	return Readiness{Ready: len(r) == 0, Reasons: r}
}

func (h *Hub) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		rd := h.Readiness()
		w.Header().Set("Content-Type", "application/json")
		if !rd.Ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(rd)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(h.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/api/v1/commerce/", func(w http.ResponseWriter, r *http.Request) {
		if hd := h.commerceHTTP.Load(); hd != nil {
			(*hd).ServeHTTP(w, r)
			return
		}
		msg := "hub is starting: the commerce stream is not ready yet"
		code := http.StatusServiceUnavailable
		if why := h.commerceWhy.Load(); why != nil {
			msg, code = *why, http.StatusNotFound
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
	})
	mux.Handle("/api/v1/", api.Handler(api.Sources{
		Fleet:     func() *fleet.Fleet { return h.fleet.Load() },
		Features:  func() *features.Store { return h.feats.Load() },
		Inventory: func() *inventory.Store { return h.inv.Load() },
		Graph:     func() *graph.Graph { return h.graph.Load() },
	}, h.cfg.HTTP.ReadToken.Value()))
	return mux
}
