package quality

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics: gauges computed from the state at scrape time, per feature (not per key: 10k keys ×
// several gauges would swamp Prometheus; the API has the keys) and per agent, and a counter of
// the events this replica raised. Every replica folds the same log, so the gauges agree across
// replicas: aggregate them with max, not sum.
type metrics struct {
	m      *Monitor
	events *prometheus.CounterVec
	keys   *prometheus.Desc
	psi    *prometheus.Desc
	miss   *prometheus.Desc
}

func newMetrics(m *Monitor) *metrics {
	return &metrics{m: m,
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gemba_hub_quality_events_total",
			Help: "Quality breaches and recoveries raised by this replica, by kind and state."}, []string{"kind", "state"}),
		keys: prometheus.NewDesc("gemba_hub_quality_keys", "Monitored keys per feature in each condition (all: every key).",
			[]string{"feature", "condition"}, nil),
		psi: prometheus.NewDesc("gemba_hub_quality_psi_max", "The largest PSI of the feature's keys in their last evaluation.",
			[]string{"feature"}, nil),
		miss: prometheus.NewDesc("gemba_hub_quality_missing_records", "Records of the agent's streams missing longer than gap_after.",
			[]string{"agent"}, nil),
	}
}

// Collector returns the monitor's Prometheus collector.
func (m *Monitor) Collector() prometheus.Collector { return m.metrics }

func (x *metrics) Describe(ch chan<- *prometheus.Desc) {
	x.events.Describe(ch)
	ch <- x.keys
	ch <- x.psi
	ch <- x.miss
}

func (x *metrics) Collect(ch chan<- prometheus.Metric) {
	x.events.Collect(ch)
	m := x.m
	type counts struct {
		all, stale, gap, bad, drifting float64
		psi                            float64
	}
	per := map[string]*counts{}
	for _, n := range m.names {
		per[n] = &counts{}
	}
	for _, q := range m.List("") {
		c := per[q.Feature]
		if c == nil {
			continue
		}
		c.all++
		for _, b := range []struct {
			on bool
			n  *float64
		}{{q.Stale, &c.stale}, {q.Gap, &c.gap}, {q.Bad, &c.bad}, {q.Drifting, &c.drifting}} {
			if b.on {
				*b.n++
			}
		}
		c.psi = max(c.psi, q.PSI)
	}
	for f, c := range per {
		for cond, v := range map[string]float64{"all": c.all, "stale": c.stale, "gap": c.gap, "bad": c.bad, "drifting": c.drifting} {
			ch <- prometheus.MustNewConstMetric(x.keys, prometheus.GaugeValue, v, f, cond)
		}
		ch <- prometheus.MustNewConstMetric(x.psi, prometheus.GaugeValue, c.psi, f)
	}
	miss := map[string]float64{}
	for _, g := range m.Gaps("") {
		miss[g.Agent] += float64(g.Missing)
	}
	for a, v := range miss {
		ch <- prometheus.MustNewConstMetric(x.miss, prometheus.GaugeValue, v, a)
	}
}
