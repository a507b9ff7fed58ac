package uplink

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are kept in atomics (read by Health) and exported to Prometheus through CounterFuncs,
// so the hot path pays one atomic add per event.
type metrics struct {
	published, acked, ackedRecords, errors, duplicates, corrupt atomic.Uint64
	collisions                                                  atomic.Uint64
	latency                                                     prometheus.Histogram
}

func newMetrics(u *Uplink, reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "gemba_uplink_publish_ack_seconds",
			Help:    "Time from publishing a message to its JetStream PubAck.",
			Buckets: []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}),
	}
	if reg == nil {
		return m, nil
	}
	counter := func(name, help string, v *atomic.Uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return float64(v.Load()) })
	}
	cs := []prometheus.Collector{
		m.latency,
		counter("gemba_uplink_published_messages_total", "Messages published to JetStream (including re-sends).", &m.published),
		counter("gemba_uplink_acked_messages_total", "Messages acknowledged by JetStream (PubAck).", &m.acked),
		counter("gemba_uplink_acked_records_total", "Records (samples or features) in acknowledged messages.", &m.ackedRecords),
		counter("gemba_uplink_publish_errors_total", "Failed publishes (timeouts, disconnects, stream refusals) and corrupt buffer records.", &m.errors),
		counter("gemba_uplink_duplicates_total", "PubAcks reporting a duplicate (a re-send JetStream dropped by message id).", &m.duplicates),
		counter("gemba_uplink_id_collisions_total", "PubAcks reporting a duplicate for a message id this buffer incarnation had never published: JetStream dropped new data (see the ERROR log).", &m.collisions),
		counter("gemba_uplink_corrupt_records_total", "Buffer records that could not be decoded and were skipped.", &m.corrupt),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "gemba_uplink_inflight_messages", Help: "Messages published and awaiting a PubAck."},
			func() float64 { return float64(u.win.count()) }),
		// Connected is not enough: a missing or wrong stream, a full stream or a refused message
		// stops forwarding on a live connection, and a stream that is not usable publishes nothing
		// for an error counter to count.
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "gemba_uplink_ready", Help: "1 while the uplink is ready (connected, stream usable, publishes acknowledged, heartbeats stored); 0 with the reason in /readyz."},
			func() float64 {
				if ok, _ := u.Health().Ready(); ok {
					return 1
				}
				return 0
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "gemba_uplink_connected", Help: "1 while connected to NATS."},
			func() float64 {
				if u.Health().Connected {
					return 1
				}
				return 0
			}),
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
