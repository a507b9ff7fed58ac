package opcua

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
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
	}
	var err error
	m.samples = register(reg, m.samples, &err)
	m.reconnects = register(reg, m.reconnects, &err)
	m.sessionUp = register(reg, m.sessionUp, &err)
	m.nodes = register(reg, m.nodes, &err)
	m.quarantined = register(reg, m.quarantined, &err)
	m.arrayDrops = register(reg, m.arrayDrops, &err)
	m.deadband = register(reg, m.deadband, &err)
	return m, err
}

// register adds c, or returns the one already registered (a collector rebuilt on config reload
// gets the same registerer).
func register[T prometheus.Collector](reg prometheus.Registerer, c T, errp *error) T {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(T); ok {
				return existing
			}
		}
		if *errp == nil {
			*errp = err
		}
	}
	return c
}
