package hubbench

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub"
	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
)

// plant is the modelled fleet: each agent is one site of lines × machines × fields. At every window
// close an agent emits, for every signal, the gauge features mean/min/max/count, plus per line the
// units of the SKU running (pack.parts, label sku) and the line's availability (pack.state): what
// its writer packs into one chunk (agent.max_chunk 256 KiB by default; see chunkBytes).
type plant struct {
	agents, lines, machines, fields int
	skus                            int // SKUs per site; line j runs SKU (window+j) % skus
}

// Every plant has machines = 4 (press, weld, paint, pack): pack.parts and pack.state sit on the pack.

// defaultPlant: 810 records per agent and window, one 106 KiB chunk (134 B per record; under the agent's 256 KiB max_chunk).
var defaultPlant = plant{agents: 10, lines: 5, machines: 4, fields: 10, skus: 50}

var machineNames = []string{"press", "weld", "paint", "pack", "mill", "oven"}

func (p plant) site(a int) string  { return fmt.Sprintf("site%d", a+1) }
func (p plant) agent(a int) string { return fmt.Sprintf("gw%d", a+1) }
func (p plant) line(a, l int) string {
	return fmt.Sprintf("s%dl%d", a+1, l+1)
}
func (p plant) sku(w, l int) string { return fmt.Sprintf("SKU-%06d", (w+l)%p.skus) }

// perWindow is the records one agent emits per window.
func (p plant) perWindow() int { return p.lines*p.machines*p.fields*4 + 2*p.lines }

// whenStored calls stored, on a goroutine of wg, with the time the server acknowledged f's message
// (stored in its stream); not at all if the publish fails or ctx ends first.
func whenStored(ctx context.Context, wg *sync.WaitGroup, f jetstream.PubAckFuture, stored func(at time.Time)) {
	wg.Go(func() {
		select {
		case <-f.Ok():
			stored(time.Now())
		case <-f.Err():
		case <-ctx.Done():
		}
	})
}

// paced calls send for window wi of agent a, for every window and agent, at the time that window
// closes: agent a's windows close at its own offset within each window, so the agents' messages
// are spread evenly (a steady rate, as a fleet sends).
func (p plant) paced(windows int, window time.Duration, start time.Time, send func(wi, a int, now time.Time)) {
	for wi := 1; wi <= windows; wi++ {
		for a := range p.agents {
			due := start.Add(time.Duration(wi-1)*window + time.Duration(a)*window/time.Duration(p.agents))
			if d := time.Until(due); d > 0 {
				time.Sleep(d) // pacing the load, not synchronising
			}
			send(wi, a, time.Now())
		}
	}
}

// batch is agent a's window w (1-based) as the agent sends it: one features message.
func (p plant) batch(a, w int, t0 time.Time, window time.Duration, sent time.Time) *signal.Batch {
	end := t0.Add(time.Duration(w) * window)
	start := end.Add(-window)
	fs := make([]signal.Feature, 0, p.perWindow())
	for l := range p.lines {
		for m := range p.machines {
			for f := range p.fields {
				sig := fmt.Sprintf("%s.%s.f%d", p.line(a, l), machineNames[m%len(machineNames)], f)
				v := float64((w*7+l*13+m*31+f)%1000) / 10
				for _, name := range []string{"mean", "min", "max", "count"} {
					fs = append(fs, signal.Feature{Signal: sig, Name: name, WindowStart: start, WindowEnd: end, Value: v, Count: 100})
				}
			}
		}
		fs = append(fs,
			signal.Feature{Signal: p.line(a, l) + ".pack.parts", Name: "units", WindowStart: start, WindowEnd: end,
				Value: float64(1 + (w+l)%9), Count: 10, Labels: signal.Labels{{Key: "sku", Value: p.sku(w, l)}}},
			signal.Feature{Signal: p.line(a, l) + ".pack.state", Name: "availability", WindowStart: start, WindowEnd: end,
				Value: 0.5 + float64((w+l)%50)/100, Count: 100})
	}
	return &signal.Batch{Header: signal.Header{Schema: signal.SchemaVersion, Agent: p.agent(a), Site: p.site(a),
		Incarnation: "b0e1", Stream: signal.StreamFeatures, ConfigVersion: "bench", FirstSeq: uint64(w), LastSeq: uint64(w),
		Count: len(fs), Oldest: start, Newest: end, Sent: sent}, Features: fs}
}

// msg encodes a batch as the agent's uplink publishes it (subject and Nats-Msg-Id).
func msg(b *signal.Batch) *nats.Msg {
	m := nats.NewMsg(signal.Subject("gemba", b.Site, b.Agent, b.Stream))
	m.Data = signal.AppendBatch(nil, b)
	m.Header.Set(jetstream.MsgIDHeader, b.MsgID())
	return m
}

// graphYAML places every signal of the plant (lines and machines) for the line/machine-keyed features.
func (p plant) graphYAML() string {
	var b strings.Builder
	b.WriteString("version: bench-1\nsites:\n")
	for a := range p.agents {
		fmt.Fprintf(&b, "  - {id: %s}\n", p.site(a))
	}
	b.WriteString("lines:\n")
	for a := range p.agents {
		for l := range p.lines {
			fmt.Fprintf(&b, "  - {id: %s, site: %s}\n", p.line(a, l), p.site(a))
		}
	}
	b.WriteString("machines:\n")
	for a := range p.agents {
		for l := range p.lines {
			for m := range p.machines {
				fmt.Fprintf(&b, "  - {id: %s.%s, line: %s}\n", p.line(a, l), machineNames[m], p.line(a, l))
			}
		}
	}
	b.WriteString("signals:\n")
	for a := range p.agents {
		for l := range p.lines {
			for m := range p.machines {
				for f := range p.fields {
					fmt.Fprintf(&b, "  - {id: %s.%s.f%d, machine: %s.%s}\n", p.line(a, l), machineNames[m], f, p.line(a, l), machineNames[m])
				}
			}
			fmt.Fprintf(&b, "  - {id: %s.pack.parts, machine: %s.pack}\n", p.line(a, l), p.line(a, l))
			fmt.Fprintf(&b, "  - {id: %s.pack.state, machine: %s.pack}\n", p.line(a, l), p.line(a, l))
		}
	}
	// At most 1,000 SKUs in the graph (the RSS run has 100,000 in the inventory): the memory measured is
	// the inventory's, not a graph of every SKU.
	b.WriteString("skus:\n")
	for s := range min(p.skus, 1000) {
		fmt.Fprintf(&b, "  - {id: SKU-%06d}\n", s)
	}
	return b.String()
}

// hubYAML is the replica's config: every record of the plant feeds a hub feature (so every record is
// stored, the expensive case), units count as production, dedup is always on.
const hubYAML = `
hub: {id: bench-hub, data_dir: %q, log: {level: warn, format: text}, shutdown_timeout: 30s}
http: {listen: "127.0.0.1:0"}
nats: {embedded: {listen: %q}}
ingest:
  production:
    - {signal: "*.pack.parts", feature: units}
features:
  - {name: mean, signal: "*.*.*", feature: mean, key: signal, max_age: 1m}
  - {name: min, signal: "*.*.*", feature: min, key: signal, max_age: 1m}
  - {name: max, signal: "*.*.*", feature: max, key: signal, max_age: 1m}
  - {name: samples, signal: "*.*.*", feature: count, key: signal, max_age: 1m}
  - {name: press_f0, signal: "*.press.f0", feature: mean, key: machine, max_age: 1m}
  - {name: availability, signal: "*.pack.state", feature: availability, key: line, max_age: 1m}
  - {name: units, signal: "*.pack.parts", feature: units, key: sku, max_age: 1m}
graph: {file: %q}
`

// hubConfig writes the graph and returns the parsed config for a hub in dir listening for NATS on port.
func hubConfig(tb testing.TB, p plant, dir string, port int) *hub.Config {
	tb.Helper()
	gf := filepath.Join(dir, "graph.yaml")
	if err := os.WriteFile(gf, []byte(p.graphYAML()), 0o644); err != nil {
		tb.Fatal(err)
	}
	cfg, err := hub.Parse([]byte(fmt.Sprintf(hubYAML, dir, fmt.Sprintf("127.0.0.1:%d", port), gf)), os.LookupEnv)
	if err != nil {
		tb.Fatal(err)
	}
	return cfg
}

// running is a hub replica started in this process (its embedded NATS server with it).
type running struct {
	h    *hub.Hub
	stop context.CancelFunc
	done chan error
}

func startHub(tb testing.TB, cfg *hub.Config) *running {
	tb.Helper()
	ready := make(chan string, 1)
	h, err := hub.New(cfg, hub.Options{Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})), Ready: ready})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{h: h, stop: cancel, done: make(chan error, 1)}
	go func() { r.done <- h.Run(ctx) }()
	select {
	case <-ready:
	case err := <-r.done:
		tb.Fatalf("hub stopped while starting: %v", err)
	case <-time.After(60 * time.Second):
		cancel()
		tb.Fatal("hub not ready within 60s")
	}
	return r
}

func (r *running) halt(tb testing.TB) {
	tb.Helper()
	r.stop()
	if err := <-r.done; err != nil {
		tb.Errorf("hub run: %v", err)
	}
}

func connect(tb testing.TB, url string) (*nats.Conn, jetstream.JetStream) {
	tb.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1))
	if err != nil {
		tb.Fatal(err)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		tb.Fatal(err)
	}
	return nc, js
}

// agentsStream creates the agents' stream as the agent's uplink does (defaults: 20 min duplicate window).
func agentsStream(tb testing.TB, js jetstream.JetStream) {
	tb.Helper()
	if _, err := js.CreateOrUpdateStream(context.Background(), jetstream.StreamConfig{Name: "GEMBA",
		Subjects: []string{"gemba.*.*.samples", "gemba.*.*.features", "gemba.*.*.status"}, Retention: jetstream.LimitsPolicy,
		MaxAge: 7 * 24 * time.Hour, Duplicates: 20 * time.Minute, Storage: jetstream.FileStorage}); err != nil {
		tb.Fatal(err)
	}
}

// drained waits until the hub's consumer has every message acknowledged.
func drained(tb testing.TB, js jetstream.JetStream, within time.Duration) {
	tb.Helper()
	testutil.WaitFor(tb, within, "the hub's consumer to settle every message", func() bool {
		c, err := js.Consumer(context.Background(), "GEMBA", "gemba-hub")
		if err != nil {
			return false
		}
		info, err := c.Info(context.Background())
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	})
}
