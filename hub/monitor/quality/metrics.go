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
	per, miss := x.m.tally()
	for f, c := range per {
		for cond, v := range map[string]float64{"all": c.all, "stale": c.stale, "gap": c.gap, "bad": c.bad, "drifting": c.drifting, "stuck": c.stuck} {
			ch <- prometheus.MustNewConstMetric(x.keys, prometheus.GaugeValue, v, f, cond)
		}
		ch <- prometheus.MustNewConstMetric(x.psi, prometheus.GaugeValue, c.psi, f)
	}
	for a, v := range miss {
		ch <- prometheus.MustNewConstMetric(x.miss, prometheus.GaugeValue, v, a)
	}
}

type tally struct {
	all, stale, gap, bad, drifting, stuck float64
	psi                                   float64
}

// tally counts the keys per feature and condition, and the missing records per agent, in one
// pass under the read lock without building each key's Quality (a scrape of 100,000 keys must
// not take seconds).
func (m *Monitor) tally() (map[string]*tally, map[string]float64) {
	now := m.now().UTC()
	per := map[string]*tally{}
	for _, n := range m.names {
		per[n] = &tally{}
	}
	miss := map[string]float64{}
	m.mu.RLock()
	defer m.mu.RUnlock()
	gapped := make(map[streamRef]bool, len(m.streams))
	for ref, t := range m.streams {
		hs, missing := t.holes(now, m.cfg.GapAfter)
		gapped[ref] = len(hs) > 0
		miss[ref.Agent] += float64(missing + t.lost)
	}
	for feature, byKey := range m.keys {
		c := per[feature]
		if c == nil {
			continue
		}
		for _, k := range byKey {
			c.all++
			if !k.newest.IsZero() && k.maxAge > 0 && now.Sub(k.newest) > k.maxAge {
				c.stale++
			}
			if gapped[k.feeder] {
				c.gap++
			}
			if k.bad {
				c.bad++
			}
			if k.drifting || k.stuck { // as Quality.Drifting
				c.drifting++
			}
			if k.stuck {
				c.stuck++
			}
			c.psi = max(c.psi, num(k.psi))
		}
	}
	return per, miss
}
