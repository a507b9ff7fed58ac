package mqtt

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gemba-io/gemba/internal/promreg"
)

// metrics are the collector's Prometheus series. Deps.Metrics already carries collector=<name>.
type metrics struct {
	messages     *prometheus.CounterVec // by subscription
	samples      *prometheus.CounterVec
	bad          *prometheus.CounterVec // by subscription, reason
	unmatched    prometheus.Counter
	droppedQoS0  prometheus.Counter
	emitErrors   prometheus.Counter
	acks         prometheus.Counter
	redelivered  prometheus.Counter
	retainedDups prometheus.Counter
	connects     prometheus.Counter
	lost         prometheus.Counter
	stalls       *prometheus.CounterVec
	subFails     prometheus.Counter
	seqGaps      *prometheus.CounterVec
	rebirths     *prometheus.CounterVec
	connected    prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	var err error
	cv := func(name, help string, labels ...string) *prometheus.CounterVec {
		return promreg.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gemba_mqtt_" + name, Help: help}, labels), &err)
	}
	c := func(name, help string) prometheus.Counter {
		return promreg.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{Name: "gemba_mqtt_" + name, Help: help}), &err)
	}
	m := &metrics{
		messages:     cv("messages_total", "MQTT messages received, by subscription.", "subscription"),
		samples:      cv("samples_total", "Samples mapped from MQTT messages, by subscription.", "subscription"),
		bad:          cv("bad_payloads_total", "Payload problems (malformed, oversized, wrong type, ...), by subscription and reason.", "subscription", "reason"),
		unmatched:    c("unmatched_messages_total", "Messages that matched no configured subscription (acknowledged and dropped)."),
		droppedQoS0:  c("dropped_qos0_total", "QoS 0 messages dropped because the collector was behind."),
		emitErrors:   c("emit_errors_total", "Batches the buffer refused; their messages were not acknowledged."),
		acks:         c("acks_total", "Messages acknowledged to the broker after their samples were durable."),
		redelivered:  c("redelivered_duplicates_total", "Redelivered messages (DUP) already stored, by this process or (journaled with the samples) before a crash: acknowledged again, not stored twice."),
		retainedDups: c("retained_duplicates_total", "Retained messages the broker sent again (on a subscribe) whose payload equals the last message stored from their topic: acknowledged, not stored twice."),
		connects:     c("connects_total", "Successful connections to a broker."),
		lost:         c("connection_lost_total", "Connections lost."),
		stalls:       cv("stalls_total", "Subscriptions silent past their stall_timeout while connected.", "subscription"),
		subFails:     c("subscribe_failures_total", "Topic filters the broker refused or did not confirm."),
		seqGaps:      cv("sparkplug_seq_gaps_total", "Sparkplug B seq numbers out of order.", "subscription"),
		rebirths:     cv("sparkplug_rebirth_requests_total", "Sparkplug B rebirth requests (NCMD) sent.", "subscription"),
		connected: promreg.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gemba_mqtt_connected", Help: "1 while connected to a broker.",
		}), &err),
	}
	return m, err
}
