package opcua

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gemba-io/gemba/internal/promreg"
)

// metrics of one collector. The registerer the agent passes already carries collector=<name>.
type metrics struct {
	samples     prometheus.Counter
	reconnects  *prometheus.CounterVec
	sessionUp   prometheus.Gauge
	nodes       *prometheus.GaugeVec
	quarantined *prometheus.GaugeVec
	arrayDrops  prometheus.Counter
	deadband    prometheus.Counter
	unfiltered  prometheus.Gauge
	repeated    prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &metrics{
		samples: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gemba_opcua_samples_total", Help: "Samples emitted (durable) by the OPC UA collector."}),
		reconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gemba_opcua_session_rebuilds_total", Help: "Sessions rebuilt, by reason."}, []string{"reason"}),
		sessionUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gemba_opcua_session_up", Help: "1 while a session with all groups set up is running."}),
		nodes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gemba_opcua_nodes", Help: "Configured nodes by state (pending, active, quarantined)."}, []string{"state"}),
		quarantined: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gemba_opcua_node_quarantined", Help: "1 for each node the server rejected; retried periodically."}, []string{"signal"}),
		arrayDrops: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gemba_opcua_array_elements_dropped_total", Help: "Array elements beyond max_array, not emitted."}),
		deadband: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gemba_opcua_deadband_suppressed_total", Help: "Samples suppressed by the client-side deadband."}),
		unfiltered: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gemba_opcua_percent_deadband_not_applied", Help: "Nodes whose percent deadband the server refused: every change of them is stored (only absolute deadbands are applied by the collector)."}),
		repeated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gemba_opcua_repeated_values_total", Help: "First values of new monitored items (after a session rebuild or a quarantine retry) identical to the value stored last (source time, status, value): not stored again."}),
	}
	var err error
	m.samples = promreg.Register(reg, m.samples, &err)
	m.reconnects = promreg.Register(reg, m.reconnects, &err)
	m.sessionUp = promreg.Register(reg, m.sessionUp, &err)
	m.nodes = promreg.Register(reg, m.nodes, &err)
	m.quarantined = promreg.Register(reg, m.quarantined, &err)
	m.arrayDrops = promreg.Register(reg, m.arrayDrops, &err)
	m.deadband = promreg.Register(reg, m.deadband, &err)
	m.unfiltered = promreg.Register(reg, m.unfiltered, &err)
	m.repeated = promreg.Register(reg, m.repeated, &err)
	return m, err
}
