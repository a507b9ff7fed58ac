package agent

import (
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/gemba-io/gemba/signal"
)

// metrics are the agent's own Prometheus metrics. The buffer and the uplink register theirs on the
// same registry; each collector's series live in its supervisor's registry (dropped with it).
type metrics struct {
	reg *prometheus.Registry

	reloads         *prometheus.CounterVec // by result: applied, invalid
	restartRequired prometheus.Gauge       // 1 while the file has changes a reload cannot apply
	written         *prometheus.CounterVec // by stream: records written to the buffer
	refused         *prometheus.CounterVec // by stream: refused by a full buffer (drop_newest)
	writeErrors     *prometheus.CounterVec // by stream: appends that failed
	oversized       prometheus.Counter     // samples whose value alone exceeded max_chunk
}

func newMetrics() *metrics {
	reg := prometheus.NewRegistry()
	f := func(c prometheus.Collector) { reg.MustRegister(c) }
	m := &metrics{
		reg: reg,
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gemba_agent_config_reloads_total", Help: "Config reloads (SIGHUP or POST /admin/reload) by result: applied, or invalid (the old config keeps running).",
		}, []string{"result"}),
		restartRequired: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gemba_agent_config_restart_required", Help: "1 while the config file has changes to agent, http, buffer, uplink or features that a reload does not apply.",
		}),
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
	f(m.reloads)
	f(m.restartRequired)
	f(m.written)
	f(m.refused)
	f(m.writeErrors)
	// The counters operations.md says to alert on exist at 0 from the start: an alert on
	// increase() sees the first failure instead of a series appearing with it.
	for _, r := range []string{"applied", "invalid"} {
		m.reloads.WithLabelValues(r)
	}
	for _, st := range []signal.Stream{signal.StreamSamples, signal.StreamFeatures} {
		m.written.WithLabelValues(st.String())
		m.refused.WithLabelValues(st.String())
		m.writeErrors.WithLabelValues(st.String())
	}
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
