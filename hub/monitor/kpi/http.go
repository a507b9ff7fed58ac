package kpi

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Handler serves GET /api/v1/kpis (the lead mounts it): the figures as JSON.
func (t *Tracker) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "kpis: only GET", http.StatusMethodNotAllowed)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		f := t.Figures(ctx)
		// Encoded whole before the status is sent: a figure that does not encode is a 500 that says
		// so, never a 200 with an empty body.
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetIndent("", "  ")
		if err := enc.Encode(f); err != nil {
			t.log.Error("kpis: the figures could not be encoded", "err", err)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusInternalServerError)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": "kpis: encoding the figures: " + err.Error()})
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(buf.Bytes())
	})
}

// Collector returns the KPIs' Prometheus collector. The figures come from the decision log, the
// same on every replica: aggregate them with max, not sum (gemba_hub_kpi_refollows_total, the
// follower's new consumers, is this replica's own).
func (t *Tracker) Collector() prometheus.Collector { return t.collector }

type collector struct{ t *Tracker }

var (
	decisionsDesc = prometheus.NewDesc("gemba_hub_kpi_decisions", "Decision records on the decision log by outcome and mode.",
		[]string{"outcome", "mode"}, nil)
	ruleDesc = prometheus.NewDesc("gemba_hub_kpi_rule_decisions", "Decision records per rule and outcome.",
		[]string{"rule", "outcome"}, nil)
	discountDesc = prometheus.NewDesc("gemba_hub_kpi_discount_points", "Sum of the discounts (percent points) of fired promotions.",
		nil, nil)
	promotionsDesc = prometheus.NewDesc("gemba_hub_kpi_promotions_fired", "Fired promotions (shadow excluded).", nil, nil)
	qualityDesc    = prometheus.NewDesc("gemba_hub_kpi_quality_events", "Quality events on the decision log by kind and state.",
		[]string{"kind", "state"}, nil)
	liftDesc = prometheus.NewDesc("gemba_hub_kpi_lift", "Measured lift per rule and arm (from the experiments).",
		[]string{"rule", "arm"}, nil)
	refollowsDesc = prometheus.NewDesc("gemba_hub_kpi_refollows_total",
		"New consumers made by this replica's KPI follower of the decision log (the last one's node went away, or it lagged).", nil, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{decisionsDesc, ruleDesc, discountDesc, promotionsDesc, qualityDesc, liftDesc, refollowsDesc} {
		ch <- d
	}
	c.t.latencyH.Describe(ch)
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	t := c.t
	t.latencyH.Collect(ch)
	ch <- prometheus.MustNewConstMetric(refollowsDesc, prometheus.CounterValue, float64(t.Stats.Refollows.Load()))
	t.mu.RLock()
	for k, n := range t.outcomes {
		ch <- prometheus.MustNewConstMetric(decisionsDesc, prometheus.GaugeValue, float64(n), k[0], k[1])
	}
	for _, rf := range t.byRule {
		for o, n := range rf.Outcomes {
			ch <- prometheus.MustNewConstMetric(ruleDesc, prometheus.GaugeValue, float64(n), rf.Rule, o)
		}
	}
	ch <- prometheus.MustNewConstMetric(discountDesc, prometheus.GaugeValue, t.discount.PointsTotal)
	ch <- prometheus.MustNewConstMetric(promotionsDesc, prometheus.GaugeValue, float64(t.discount.Promotions))
	for k, n := range t.quality {
		ch <- prometheus.MustNewConstMetric(qualityDesc, prometheus.GaugeValue, float64(n), k[0], k[1])
	}
	t.mu.RUnlock()
	if t.o.Lifts != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if lifts, err := t.o.Lifts.Lifts(ctx); err == nil {
			for _, l := range lifts {
				ch <- prometheus.MustNewConstMetric(liftDesc, prometheus.GaugeValue, l.Lift, l.Rule, l.Arm)
			}
		}
	}
}
