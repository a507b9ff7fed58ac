package hub

import (
	"context"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/internal/doccheck"
	"github.com/gemba-io/gemba/internal/promtext"
	"github.com/gemba-io/gemba/internal/testutil"
)

// hubMetric tells the hub's metrics from the agent's (checked in ./agent).
func hubMetric(name string) bool {
	return strings.HasPrefix(name, "gemba_hub_") || strings.HasPrefix(name, "gemba_commerce_")
}

// TestMetricsDocumented runs a real hub (embedded NATS, the decision room, the model registry,
// monitoring) until it is ready. Every hub metric the docs name is registered by it (a vector
// without series too), and every gemba_ metric its /metrics serves is named in docs/ or README.md, or
// is in a family they name as a whole (gemba_hub_kpi_*).
func TestMetricsDocumented(t *testing.T) {
	cfg := testConfig(t, `
hub: {id: t1, data_dir: "${DIR}", log: {level: error}}
http: {listen: "127.0.0.1:${HTTP_PORT}"}
nats: {embedded: {listen: "127.0.0.1:${NATS_PORT}"}}
commerce: {channels: [web]}
features:
  - {name: temperature, signal: "line1.press.temperature", feature: mean, key: signal, max_age: 1h}
graph: {file: ../configs/demo/graph.yaml}
guard: {max_discount: 20}
learn: {enabled: true}
`)
	r := start(t, cfg)
	base := "http://" + r.h.Addr()
	var rd Readiness
	testutil.WaitFor(t, 10*time.Second, "waiting for the agents' stream", func() bool {
		get(t, base+"/readyz", &rd)
		return !rd.Ready && len(rd.Reasons) > 0 && strings.Contains(rd.Reasons[0], "waiting for stream GEMBA")
	})
	nc, err := nats.Connect("nats://" + cfg.NATS.Embedded.Listen)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "GEMBA", Subjects: []string{"gemba.*.*.features", "gemba.*.*.status", "gemba.*.*.samples"}}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, "ready", func() bool { return get(t, base+"/readyz", &rd) == 200 && rd.Ready })

	docs := doccheck.ReadCorpus(t, "..")
	mentioned, families := docs.Metrics(), docs.Families()
	var missing []string
	// The parts of the hub register as they open: poll until each named metric is there.
	testutil.Poll(20*time.Second, func() bool {
		missing = missing[:0]
		for name := range mentioned {
			if hubMetric(name) && !doccheck.Registered(name, r.h.reg) {
				missing = append(missing, name)
			}
		}
		return len(missing) == 0
	})
	sort.Strings(missing)
	for _, name := range missing {
		at := mentioned[name]
		t.Errorf("%s:%d names %s, which the hub does not register", at.File, at.Line, name)
	}
	scrape, err := promtext.Scrape(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	var served []string
	for name := range scrape {
		served = append(served, name)
	}
	sort.Strings(served)
	for _, name := range served {
		if _, ok := mentioned[name]; strings.HasPrefix(name, "gemba_") && !ok && !inFamily(name, families) {
			t.Errorf("the hub serves %s, which docs/ and README.md name nowhere", name)
		}
	}
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
