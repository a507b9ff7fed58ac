package agent

import (
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the agent's own Prometheus metrics. The buffer, the uplink and each collector
// register theirs on the same registry.
type metrics struct {
	reg *prometheus.Registry

	samples     *prometheus.CounterVec // by collector
	collErrors  *prometheus.CounterVec // by collector
	restarts    *prometheus.CounterVec // by collector
	collUp      *prometheus.GaugeVec   // by collector: 1 running, 0 not
	written     *prometheus.CounterVec // by stream: records written to the buffer
	refused     *prometheus.CounterVec // by stream: refused by a full buffer (drop_newest)
	writeErrors *prometheus.CounterVec // by stream: appends that failed
	oversized   prometheus.Counter     // samples whose value alone exceeded max_chunk
}

func newMetrics() *metrics {
	reg := prometheus.NewRegistry()
	f := func(c prometheus.Collector) { reg.MustRegister(c) }
	m := &metrics{
		reg: reg,
		samples: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gemba_collector_samples_total", Help: "Samples emitted by each collector and accepted by the agent.",
		}, []string{"collector"}),
		collErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gemba_collector_errors_total", Help: "Collector runs that ended in an error.",
		}, []string{"collector"}),
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gemba_collector_restarts_total", Help: "Collector restarts after a failure.",
		}, []string{"collector"}),
		collUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gemba_collector_up", Help: "1 while the collector is running, 0 while it backs off or has failed.",
		}, []string{"collector"}),
		written: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gemba_buffer_written_records_total", Help: "Samples or features written durably to the buffer.",
		}, []string{"stream"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gemba_buffer_refused_records_total", Help: "Samples or features refused by a full buffer (policy drop_newest).",
		}, []string{"stream"}),
		writeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gemba_buffer_write_errors_total", Help: "Buffer appends that failed (I/O errors, disk full).",
		}, []string{"stream"}),
	}
	f(m.samples)
	f(m.collErrors)
	f(m.restarts)
	f(m.collUp)
	f(m.written)
	f(m.refused)
	f(m.writeErrors)
	m.oversized = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gemba_writer_oversized_samples_total", Help: "Samples whose value alone exceeded agent.max_chunk; sent as Bad without the value.",
	})
	f(m.oversized)
	f(collectors.NewGoCollector())
	f(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	bi := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "gemba_build_info",
		Help:        "Build information; the value is 1.",
		ConstLabels: prometheus.Labels{"version": Version, "commit": Commit, "goversion": runtime.Version()},
	})
	bi.Set(1)
	f(bi)
	return m
}
