package hub

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/gemba-io/gemba/hub/act"
	"github.com/gemba-io/gemba/hub/api"
	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/console"
	"github.com/gemba-io/gemba/hub/decide/guard"
	"github.com/gemba-io/gemba/hub/learn/registry"
	"github.com/gemba-io/gemba/hub/monitor/fleet"
	"github.com/gemba-io/gemba/hub/monitor/kpi"
	"github.com/gemba-io/gemba/hub/monitor/quality"
	"github.com/gemba-io/gemba/hub/state/features"
	"github.com/gemba-io/gemba/hub/state/graph"
	"github.com/gemba-io/gemba/hub/state/inventory"
)

// writeTimeout bounds the writing of one response; a variable for tests.
var writeTimeout = time.Minute

// Readiness is /readyz's body.
type Readiness struct {
	Ready   bool     `json:"ready"`
	Reasons []string `json:"reasons,omitempty"`
}

// Readiness says whether this replica is ingesting, and why not.
func (h *Hub) Readiness() Readiness {
	h.mu.Lock()
	why, nc, ing, cons := h.why, h.nc, h.ingest, h.cons
	h.mu.Unlock()
	var r []string
	if why != "" {
		r = append(r, why)
	}
	if w := h.pres.Load().reason(); w != "" {
		r = append(r, w)
	}
	if nc != nil && !nc.IsConnected() {
		r = append(r, "not connected to NATS ("+nc.Status().String()+")")
	}
	if ing != nil {
		if ok, w := ing.Ready(); !ok {
			r = append(r, "agents ingest: "+w)
		}
	}
	if cons != nil {
		if ok, w := cons.Ready(); !ok {
			r = append(r, "commerce ingest: "+w)
		}
	}
	if d := h.dec.Load(); d != nil {
		for _, w := range d.reasons() {
			r = append(r, "decisions: "+w)
		}
		if w := d.outbox.Problem(); w != "" {
			r = append(r, "decisions: action delivery: "+w)
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
	writers := make([]api.Writer, len(h.cfg.HTTP.Writers))
	for i, w := range h.cfg.HTTP.Writers {
		writers[i] = api.Writer{Name: w.Name, Token: w.Token.Value()}
	}
	dh := api.DecisionsHandler(func() api.Decisions {
		if d := h.dec.Load(); d != nil {
			return decisionsAPI{d, h.pres.Load}
		}
		return nil
	}, h.cfg.HTTP.ReadToken.Value(), h.cfg.HTTP.WriteToken.Value(), writers...)
	for _, p := range []string{"/api/v1/decisions", "/api/v1/decisions/", "/api/v1/approvals", "/api/v1/approvals/", "/api/v1/kill", "/api/v1/rules"} {
		mux.Handle(p, dh)
	}
	mh := h.monitorHandlers(func() *monitoring { return h.mon.Load() })
	for _, p := range []string{"/api/v1/kpis", "/api/v1/quality", "/api/v1/quality/gaps"} {
		mux.Handle(p, mh)
	}
	if h.cfg.Console.Enabled {
		mux.Handle(console.Prefix+"/", h.console())
	}
	mux.Handle("/api/v1/", api.Handler(api.Sources{
		Fleet:     func() *fleet.Fleet { return h.fleet.Load() },
		Features:  func() *features.Store { return h.feats.Load() },
		Inventory: func() *inventory.Store { return h.inv.Load() },
		Graph:     func() *graph.Graph { return h.graph.Load() },
	}, h.cfg.HTTP.ReadToken.Value()))
	return mux
}

// console builds the web console over the same sources as the API (a config that passed Validate
// cannot fail here; if it does, the console answers with the reason).
func (h *Hub) console() http.Handler {
	c, err := console.New(h.cfg.Console, console.Sources{
		Fleet:     func() *fleet.Fleet { return h.fleet.Load() },
		Features:  func() *features.Store { return h.feats.Load() },
		Inventory: func() *inventory.Store { return h.inv.Load() },
		Graph:     func() *graph.Graph { return h.graph.Load() },
		Decisions: func() api.Decisions {
			if d := h.dec.Load(); d != nil {
				return decisionsAPI{d, h.pres.Load}
			}
			return nil
		},
		Rules: func() console.Rules {
			if d := h.dec.Load(); d != nil {
				return d.registry
			}
			return nil
		},
		Learning: func() console.Learning { return hubLearning{h} },
		Cover:    h.Cover,
		Lines:    h.cfg.Decide.Lines,
		Timeline: func(feature, key string) ([]quality.Span, bool) {
			if m := h.mon.Load(); m != nil && m.quality != nil {
				return m.quality.Timeline(feature, key)
			}
			return nil, false
		},
	}, console.Options{Logger: h.log})
	if err != nil {
		h.log.Error("console not served", "err", err)
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "console: "+err.Error(), http.StatusInternalServerError)
		})
	}
	return c
}

// decisionsAPI serves the decision endpoints from the decision room.
// decisionsAPI serves the decision room; pres is the replica's hold on its name (an answer is refused
// once the name is lost: the room stops then).
type decisionsAPI struct {
	d    *decisions
	pres func() *presence
}

func (a decisionsAPI) Recent(ctx context.Context, f audit.Filter) ([]audit.Record, error) {
	return a.d.log.Recent(ctx, f)
}

func (a decisionsAPI) RecentPage(ctx context.Context, f audit.Filter) (audit.Page, error) {
	return a.d.log.RecentPage(ctx, f)
}

func (a decisionsAPI) History(ctx context.Context, id string) ([]audit.Record, error) {
	return a.d.log.History(ctx, id)
}

func (a decisionsAPI) Delivery(ctx context.Context, id string) (*act.Record, error) {
	r, err := a.d.outbox.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &r, nil
}

func (a decisionsAPI) PendingPage(ctx context.Context, after uint64, limit int) (guard.QueuePage, error) {
	return a.d.guard.PendingPage(ctx, after, limit)
}

func (a decisionsAPI) Answer(ctx context.Context, id, by, reason string, approve bool) (guard.Verdict, error) {
	if w := a.pres().reason(); w != "" {
		return guard.Verdict{}, errors.New(w)
	}
	return a.d.approver.Answer(ctx, id, by, reason, approve)
}

func (a decisionsAPI) Kill(ctx context.Context) (guard.KillSwitch, error) { return a.d.guard.Kill(ctx) }

func (a decisionsAPI) SetKill(ctx context.Context, k guard.KillSwitch) error {
	return a.d.guard.SetKillSwitch(ctx, k)
}

func (a decisionsAPI) Rules(ctx context.Context) (audit.Change, []audit.Change, error) {
	cur, err := a.d.log.Current(ctx)
	if err != nil {
		return cur, nil, err
	}
	hist, err := a.d.log.Changes(ctx)
	return cur, hist, err
}

// hubLearning is the console's view of the model registry and the experiments' lifts.
type hubLearning struct{ h *Hub }

func (l hubLearning) ModelSets(ctx context.Context) (active, shadow string, sets []registry.Meta, err error) {
	lr := l.h.learn.Load()
	if lr == nil {
		return "", "", nil, errors.New("learning is off on this hub (learn.enabled) or its registry is not open yet")
	}
	if live := lr.follow.Live(); live != nil {
		active, shadow = live.Change.Active, live.Change.Shadow
	}
	sets, err = lr.reg.List(ctx)
	return active, shadow, sets, err
}

func (l hubLearning) Lifts(ctx context.Context) ([]kpi.Lift, error) {
	d := l.h.dec.Load()
	if d == nil || d.outcomes == nil {
		return nil, errors.New("no experiments: the decision room is off (no guard section) or starting")
	}
	return d.outcomes.Lifts(ctx)
}
