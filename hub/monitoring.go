package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gemba-io/gemba/config"
	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/ingest/agents"
	"github.com/gemba-io/gemba/hub/monitor/kpi"
	"github.com/gemba-io/gemba/hub/monitor/quality"
)

// monitoring is the monitor room of one replica: the quality monitor, folded from the monitor log
// that every replica's ingest observer writes, and the KPIs, folded from the decision log.
//
// Wiring in hub.go (for the lead; each a line or two):
//   - Hub gets a field `mon atomic.Pointer[monitoring]`;
//   - tryOpenState, after the decision room:
//     `if h.mon.Load() == nil { m, err := h.openMonitoring(octx, js, h.dec.Load()); if err != nil { return nil, err }; h.mon.Store(m) }`
//   - agents.Deps gets `Observer: h.mon.Load().observer()`;
//   - closeState calls `h.mon.Load().close()`;
//   - handler mounts `h.monitorHandlers(func() *monitoring { return h.mon.Load() })` (GET /api/v1/kpis,
//     /api/v1/quality, /api/v1/quality/gaps) before the catch-all /api/v1/;
//   - the rules read `h.mon.Load().source()` (nil until open) for `quality.*` inputs.
type monitoring struct {
	quality *quality.Monitor // nil when monitor.enabled is off
	kpis    *kpi.Tracker     // nil without the decision room
}

// openMonitoring opens what the config asks for: the quality monitor (events to the decision log
// when the decision room runs, d non-nil) and the KPI tracker over the decision log. Its metrics
// join the hub's registry once both are open (a failed attempt, retried by openState, leaves no
// collector behind).
func (h *Hub) openMonitoring(ctx context.Context, js jetstream.JetStream, d *decisions) (*monitoring, error) {
	cfg, log := h.cfg, h.log.With("component", "monitor")
	m := &monitoring{}
	if cfg.Monitor.Enabled {
		qc := cfg.Monitor
		if qc.Replicas == 0 {
			qc.Replicas = cfg.NATS.Replicas
		}
		var sink quality.Sink
		if d != nil {
			sink = auditSink{log: d.log, replica: cfg.Hub.ID}
		}
		q, err := quality.Open(ctx, js, quality.Options{Config: qc, Definitions: cfg.Features, Resolver: placer{h}, Sink: sink, Logger: log})
		if err != nil {
			return nil, err
		}
		m.quality = q
	}
	if d != nil {
		var lifts kpi.LiftSource
		if d.outcomes != nil {
			lifts = d.outcomes
		}
		t, err := kpi.Open(ctx, js, kpi.Options{Audit: d.log.Config(), Lifts: lifts, Logger: log})
		if err != nil {
			m.close()
			return nil, err
		}
		m.kpis = t
	}
	if err := m.register(h.reg); err != nil {
		m.close()
		return nil, fmt.Errorf("monitor metrics: %w", err)
	}
	return m, nil
}

func (m *monitoring) register(reg prometheus.Registerer) error {
	var cs []prometheus.Collector
	if q := m.quality; q != nil {
		cs = append(cs, q.Collector())
		obs := q.Observer()
		for name, v := range map[string]func() uint64{
			"gemba_hub_quality_observed_messages_total": obs.Stats.Chunks.Load,
			"gemba_hub_quality_observed_values_total":   obs.Stats.Values.Load,
			"gemba_hub_quality_truncated_total":         obs.Stats.Truncated.Load,
			"gemba_hub_quality_log_messages_total":      obs.Stats.Messages.Load,
			"gemba_hub_quality_log_unreadable_total":    q.Stats.Unreadable.Load,
			"gemba_hub_quality_log_refollows_total":     q.Stats.Refollows.Load,
			"gemba_hub_quality_future_total":            q.Stats.Future.Load,
			"gemba_hub_quality_events_unrecorded_total": func() uint64 { return q.Stats.EventsDropped.Load() + q.Stats.SinkErrors.Load() },
		} {
			cs = append(cs, prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: monitorHelp[name]},
				func() float64 { return float64(v()) }))
		}
	}
	if m.kpis != nil {
		cs = append(cs, m.kpis.Collector())
	}
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			for _, done := range cs[:i] {
				reg.Unregister(done)
			}
			return err
		}
	}
	return nil
}

var monitorHelp = map[string]string{
	"gemba_hub_quality_observed_messages_total": "Fresh agents' messages this replica's ingest wrote to the monitor log.",
	"gemba_hub_quality_observed_values_total":   "Monitored feature values this replica's ingest wrote to the monitor log.",
	"gemba_hub_quality_truncated_total":         "Agents' messages whose monitored values did not all fit in one monitor log message (the rest left out).",
	"gemba_hub_quality_log_messages_total":      "Messages this replica wrote to the monitor log.",
	"gemba_hub_quality_log_unreadable_total":    "Monitor log messages that could not be decoded (skipped).",
	"gemba_hub_quality_log_refollows_total":     "New consumers made by the monitor log follower (the last one's node went away, or it lagged).",
	"gemba_hub_quality_events_unrecorded_total": "Quality events that did not reach the decision log (queue full or write failed).",
	"gemba_hub_quality_future_total":            "Monitored values and sample counts dated more than monitor.max_ahead past their logging (counted as bad at the logging time).",
}

// observer is what the agents' ingest is given: nil when the quality monitor is off.
func (m *monitoring) observer() agents.Observer {
	if m == nil || m.quality == nil {
		return nil
	}
	return m.quality.Observer()
}

// source is the quality monitor for the rules (nil when off).
func (m *monitoring) source() quality.Source {
	if m == nil || m.quality == nil {
		return nil
	}
	return m.quality
}

func (m *monitoring) close() {
	if m == nil {
		return
	}
	if m.kpis != nil {
		m.kpis.Close()
	}
	if m.quality != nil {
		m.quality.Close()
	}
}

// monitorHandlers serves the KPI and quality read APIs once the monitor room is open.
func (h *Hub) monitorHandlers(get func() *monitoring) http.Handler {
	mux := http.NewServeMux()
	unavailable := func(w http.ResponseWriter, code int, msg string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
	}
	mux.HandleFunc("/api/v1/kpis", func(w http.ResponseWriter, r *http.Request) {
		m := get()
		switch {
		case m == nil:
			unavailable(w, http.StatusServiceUnavailable, "hub is starting: the monitor is not open yet")
		case m.kpis == nil:
			unavailable(w, http.StatusNotFound, "no KPIs: the decision room is off (no guard section)")
		default:
			m.kpis.Handler().ServeHTTP(w, r)
		}
	})
	q := func(w http.ResponseWriter, r *http.Request) {
		m := get()
		switch {
		case m == nil:
			unavailable(w, http.StatusServiceUnavailable, "hub is starting: the monitor is not open yet")
		case m.quality == nil:
			unavailable(w, http.StatusNotFound, "quality monitoring is off (monitor.enabled)")
		default:
			m.quality.Handler().ServeHTTP(w, r)
		}
	}
	mux.HandleFunc("/api/v1/quality", q)
	mux.HandleFunc("/api/v1/quality/gaps", q)
	return h.readAuth(mux)
}

// readAuth requires the read token when one is configured (as the rest of the read API does).
func (h *Hub) readAuth(next http.Handler) http.Handler {
	tok := h.cfg.HTTP.ReadToken.Value()
	if tok == "" {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || !config.TokenEqual(got, tok) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="gemba-hub"`)
			http.Error(w, "missing or wrong bearer token", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// auditSink records quality events on the decision log.
type auditSink struct {
	log     *audit.Log
	replica string
}

func (s auditSink) Record(ctx context.Context, e quality.Event) error {
	_, err := s.log.RecordMonitor(ctx, audit.MonitorEvent{ID: e.ID(), Kind: e.Kind, State: e.State, Feature: e.Feature, Key: e.Key,
		Agent: e.Agent, Stream: e.Stream, Incarnation: e.Incarnation, From: e.From, To: e.To, Time: e.Time, PSI: e.PSI, KS: e.KS,
		KSP: e.KSP, BadShare: e.BadShare, Current: e.Current, Reference: e.Reference, Why: e.Why, Replica: s.replica})
	return err
}
