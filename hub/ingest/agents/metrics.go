package agents

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the consumer's Prometheus collectors (gemba_hub_ingest_*).
type Metrics struct {
	messages, records, production                          *prometheus.CounterVec
	malformed, duplicates, historical, redelivered, errors prometheus.Counter
	latency, stored                                        prometheus.Histogram
}

// latencyBuckets are the ingest latencies' buckets (seconds).
var latencyBuckets = []float64{.001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 5, 30}

// NewMetrics creates the collectors; Register adds them to a registry.
func NewMetrics() *Metrics {
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: "gemba_hub_ingest_" + name, Help: help})
	}
	return &Metrics{
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gemba_hub_ingest_messages_total",
			Help: "Agent messages decoded, by stream."}, []string{"stream"}),
		records: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gemba_hub_ingest_records_total",
			Help: "Records of fresh (not duplicate) agent messages, by stream."}, []string{"stream"}),
		production: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gemba_hub_ingest_production_total",
			Help: "Produced-units records given to the inventory, by outcome."}, []string{"outcome"}),
		malformed:   c("malformed_total", "Agent messages that could not be decoded (terminated, not redelivered)."),
		duplicates:  c("duplicates_total", "Agent messages whose identity was already applied (dropped)."),
		historical:  c("historical_total", "Fresh agent messages marked historical (state updated, never acted on)."),
		redelivered: c("redelivered_total", "Agent messages delivered more than once by JetStream."),
		errors:      c("errors_total", "Failed state writes of batches or heartbeats: handed back for redelivery, or retried in place once the batch's stock is moved."),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "gemba_hub_ingest_latency_seconds",
			Help:    "From the agent sending a message to its state being stored (the agent's clock to the hub's).",
			Buckets: latencyBuckets}),
		stored: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "gemba_hub_ingest_stored_latency_seconds",
			Help:    "From an agent message stored in its JetStream stream (the server's timestamp) to its state being stored: the hub's part of gemba_hub_ingest_latency_seconds, waiting in the stream included.",
			Buckets: latencyBuckets}),
	}
}

// Register adds every collector to reg.
func (m *Metrics) Register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.messages, m.records, m.production, m.malformed, m.duplicates,
		m.historical, m.redelivered, m.errors, m.latency, m.stored} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
