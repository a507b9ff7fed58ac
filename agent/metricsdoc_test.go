package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gemba-io/gemba/internal/doccheck"
	"github.com/gemba-io/gemba/internal/promtext"
	"github.com/gemba-io/gemba/internal/testutil"
)

// hubMetric tells the hub's metrics (checked in ./hub) from the agent's.
func hubMetric(name string) bool {
	return strings.HasPrefix(name, "gemba_hub_") || strings.HasPrefix(name, "gemba_commerce_")
}

// inFamily reports whether a family the docs name as a whole (gemba_hub_kpi_*) holds name.
func inFamily(name string, families []string) bool {
	for _, f := range families {
		if strings.HasPrefix(name, f) {
			return true
		}
	}
	return false
}

// TestMetricsDocumented runs a real agent with both collector types (gopcua's server, mosquitto,
// an embedded NATS, the Badger buffer) and a feature rule. Every agent metric the docs name is
// registered by it (a vector without series too), and every gemba_ metric its /metrics serves is
// named somewhere in docs/ or README.md, or
// is in a family they name as a whole (gemba_hub_kpi_*).
func TestMetricsDocumented(t *testing.T) {
	dir := t.TempDir()
	ns := startNATS(t)
	opc := startOPC(t, testutil.FreePort(t), 0, "c1")
	broker := startMosquitto(t)
	yml := fmt.Sprintf(`
agent: {id: gw-docs, site: plant1, shutdown_timeout: 5s}
http: {listen: "127.0.0.1:0"}
buffer: {dir: %s, max_bytes: 64MiB}
uplink: {nats: {servers: [%s], create_stream: true}}
collectors:
  - name: plc
    type: opcua
    endpoint: %s
    security: {policy: None, mode: None}
    nodes: [{node: "%s", signal: plc.c1}]
  - name: sensors
    type: mqtt
    broker: tcp://%s
    subscriptions: [{topic: line1/+/telemetry, format: json, signal: "line1.{topic.1}.{field}"}]
features:
  - {signal: plc.c1, window: 1m, compute: [mean]}
`, filepath.Join(dir, "buffer"), ns.ClientURL(), opc.url(), opc.node("c1"), broker)
	cfg, err := Parse([]byte(yml), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan string, 1)
	a := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Ready: ready})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("agent did not start: %v", err)
	}
	for _, c := range []string{"plc", "sensors"} {
		testutil.WaitFor(t, 20*time.Second, "collector "+c+" up", func() bool {
			return testutil.Metric(t, a.Registry(), "gemba_collector_up", "collector", c) == 1
		})
	}

	regs := []*prometheus.Registry{a.m.reg}
	for _, s := range a.supervisors() {
		regs = append(regs, s.reg)
	}
	docs := doccheck.ReadCorpus(t, "..")
	mentioned, families := docs.Metrics(), docs.Families()
	for name, at := range mentioned {
		if !hubMetric(name) && !doccheck.Registered(name, regs...) {
			t.Errorf("%s:%d names %s, which the agent does not register", at.File, at.Line, name)
		}
	}
	scrape, err := promtext.Scrape("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for name := range scrape {
		if _, ok := mentioned[name]; strings.HasPrefix(name, "gemba_") && !ok && !inFamily(name, families) {
			t.Errorf("the agent serves %s, which docs/ and README.md name nowhere", name)
		}
	}
}
