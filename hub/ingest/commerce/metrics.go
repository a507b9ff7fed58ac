package commerce

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gemba-io/gemba/internal/promreg"
)

// Metrics are the package's counters. The caller passes the registry; nothing is registered globally.
type Metrics struct {
	// Received counts events offered by HTTP and CSV, by source (http, csv), kind (sale, inventory) and
	// outcome (accepted, duplicate, invalid, failed).
	Received *prometheus.CounterVec
	// Requests counts HTTP requests by route kind and status code (401s included).
	Requests *prometheus.CounterVec
	// Consumed counts stream messages by kind and outcome (applied, duplicate, malformed, rejected,
	// sink_error, claim_error). A sink_error or claim_error is retried; the others are final.
	Consumed *prometheus.CounterVec
}

// NewMetrics creates the counters and registers them on reg (a nil reg registers nothing). Building
// twice on one registry shares the series.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		Received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gemba_commerce_events_received_total",
			Help: "Commerce events offered over HTTP or CSV, by source, kind and outcome.",
		}, []string{"source", "kind", "outcome"}),
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gemba_commerce_http_requests_total",
			Help: "Requests to the commerce HTTP endpoint, by kind and status code.",
		}, []string{"kind", "code"}),
		Consumed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gemba_commerce_events_consumed_total",
			Help: "Messages of the COMMERCE stream handled by the consumer, by kind and outcome.",
		}, []string{"kind", "outcome"}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	m.Received = promreg.Register(reg, m.Received, &err)
	m.Requests = promreg.Register(reg, m.Requests, &err)
	m.Consumed = promreg.Register(reg, m.Consumed, &err)
	if err != nil {
		return nil, err
	}
	return m, nil
}

const (
	outcomeAccepted   = "accepted"
	outcomeDuplicate  = "duplicate"
	outcomeInvalid    = "invalid"
	outcomeFailed     = "failed"
	outcomeApplied    = "applied"
	outcomeMalformed  = "malformed"
	outcomeRejected   = "rejected"
	outcomeSinkError  = "sink_error"
	outcomeClaimError = "claim_error"
)
