// Command gemba-demo runs a small plant end to end on loopback: an embedded NATS JetStream, an
// embedded MQTT broker, a publisher simulating two lines, and one gemba-agent (configs/demo.yaml).
// It prints a live view, cuts the uplink halfway through, and at the end counts the stream to show
// that every published sample arrived exactly once.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gemba-io/gemba/agent"
	_ "github.com/gemba-io/gemba/collectors/all"
	gsignal "github.com/gemba-io/gemba/signal"
)

func main() {
	duration := flag.Duration("duration", 60*time.Second, "how long the plant runs")
	outage := flag.Duration("outage", 20*time.Second, "how long the uplink is cut, halfway through (0: no cut)")
	rate := flag.Int("rate", 20, "messages per second per machine")
	cfgFile := flag.String("config", "configs/demo.yaml", "agent config")
	flag.Parse()
	if err := run(*cfgFile, *duration, *outage, *rate); err != nil {
		fmt.Fprintln(os.Stderr, "gemba-demo:", err)
		os.Exit(1)
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func run(cfgFile string, duration, outage time.Duration, rate int) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	dir, err := os.MkdirTemp("", "gemba-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	natsPort, err := freePort()
	if err != nil {
		return err
	}
	mqttPort, err := freePort()
	if err != nil {
		return err
	}
	httpPort, err := freePort()
	if err != nil {
		return err
	}

	hub, err := startNATS(natsPort, filepath.Join(dir, "jetstream"))
	if err != nil {
		return fmt.Errorf("nats: %w", err)
	}
	defer func() { hub.Shutdown() }() // the hub is restarted after the outage: shut down the latest
	broker, err := startBroker(mqttPort)
	if err != nil {
		return fmt.Errorf("mqtt broker: %w", err)
	}
	defer broker.Close()

	env := map[string]string{
		"GEMBA_DEMO_DIR":  dir,
		"GEMBA_DEMO_NATS": fmt.Sprintf("nats://127.0.0.1:%d", natsPort),
		"GEMBA_DEMO_MQTT": fmt.Sprintf("tcp://127.0.0.1:%d", mqttPort),
		"GEMBA_DEMO_HTTP": fmt.Sprintf("127.0.0.1:%d", httpPort),
	}
	cfg, err := agent.Load(cfgFile, func(k string) (string, bool) {
		if v, ok := env[k]; ok {
			return v, true
		}
		return os.LookupEnv(k)
	})
	if err != nil {
		return fmt.Errorf("%s:\n%w", cfgFile, err)
	}
	logw := io.Writer(os.Stderr)
	lvl, _ := agent.ParseLevel(cfg.Agent.Log.Level)
	ag := agent.New(cfg, agent.Options{Logger: agent.NewLogger(logw, cfg.Agent.Log.Format, lvl)})
	agentCtx, agentStop := context.WithCancel(context.Background())
	agentDone := make(chan error, 1)
	go func() { agentDone <- ag.Run(agentCtx) }()
	defer func() {
		agentStop()
		select {
		case <-agentDone:
		case <-time.After(cfg.Agent.ShutdownTimeout + 5*time.Second):
		}
	}()

	fmt.Printf("gemba demo: a plant of 2 lines x 2 machines publishing over MQTT to one agent, forwarding to JetStream\n")
	fmt.Printf("  NATS JetStream  %s (store %s)\n  MQTT broker     %s\n  agent health    http://%s/readyz  /metrics\n\n",
		env["GEMBA_DEMO_NATS"], filepath.Join(dir, "jetstream"), env["GEMBA_DEMO_MQTT"], env["GEMBA_DEMO_HTTP"])

	watch, err := newWatcher(env["GEMBA_DEMO_NATS"], cfg.Agent.Site, cfg.Agent.ID)
	if err != nil {
		return err
	}
	defer watch.Close()

	// MQTT brokers deliver only to subscriptions that exist: start the plant once the agent listens.
	for len(broker.Topics.Subscribers("plant/line1/press/telemetry").Subscriptions) == 0 {
		select {
		case <-ctx.Done():
			return nil
		case err := <-agentDone:
			return fmt.Errorf("agent stopped: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	plant, err := startPlant(env["GEMBA_DEMO_MQTT"], rate)
	if err != nil {
		return fmt.Errorf("plant: %w", err)
	}

	cutAt, restoreAt := duration/2-outage/2, duration/2+outage/2
	start := time.Now()
	tick := time.NewTicker(3 * time.Second)
	defer tick.Stop()
	end := time.NewTimer(duration)
	defer end.Stop()
	cut := false
	interrupted := false
loop:
	for {
		select {
		case <-ctx.Done():
			interrupted = true
			break loop
		case <-end.C:
			break loop
		case <-tick.C:
		}
		el := time.Since(start)
		if outage > 0 && !cut && el >= cutAt && el < restoreAt {
			fmt.Printf("\n>>> %3.0fs  cutting the uplink: NATS stops for %v; the agent buffers on disk\n\n", el.Seconds(), outage)
			hub.Shutdown()
			hub.WaitForShutdown()
			cut = true
		}
		if cut && el >= restoreAt && !hub.Running() {
			if hub, err = startNATS(natsPort, filepath.Join(dir, "jetstream")); err != nil {
				return fmt.Errorf("nats restart: %w", err)
			}
			fmt.Printf("\n>>> %3.0fs  uplink back: the agent drains its buffer\n\n", el.Seconds())
		}
		printView(el, plant, ag, watch)
	}
	plant.Stop()
	published := plant.Samples()
	if interrupted {
		fmt.Println("\ninterrupted: stopping cleanly")
		return nil
	}
	if !hub.Running() {
		if hub, err = startNATS(natsPort, filepath.Join(dir, "jetstream")); err != nil {
			return err
		}
	}
	fmt.Printf("\nplant stopped after publishing %d samples; waiting for the agent to drain...\n", published)
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if inAgent(ag) >= published && depth(ag) == 0 && watch.Samples() >= published {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	total, unique, err := watch.CountStream()
	if err != nil {
		return fmt.Errorf("count stream: %w", err)
	}
	fmt.Printf("\nstream %s holds %d samples from this agent: %d unique, %d duplicates; the plant published %d\n",
		watch.stream, total, unique, total-unique, published)
	if unique != published || total != unique {
		return fmt.Errorf("MISMATCH: published %d, stored %d unique, %d total", published, unique, total)
	}
	fmt.Println("nothing lost, nothing duplicated, through an uplink outage.")
	return nil
}

func inAgent(a *agent.Agent) uint64 {
	var n uint64
	for _, c := range a.Status().Collectors {
		n += c.Samples
	}
	return n
}

func depth(a *agent.Agent) uint64 {
	var n uint64
	for _, b := range a.Status().Buffer {
		n += b.Records
	}
	return n
}

var header sync.Once

func printView(el time.Duration, p *plant, a *agent.Agent, w *watcher) {
	header.Do(func() {
		fmt.Printf("%5s %10s %10s %9s %10s %9s   %s\n", "t", "published", "agent in", "buffered", "in stream", "uplink", "features (last window)")
	})
	ready := "up"
	for _, c := range a.Readiness().Checks {
		if c.Name == "uplink" && !c.OK {
			ready = "DOWN"
		}
	}
	fmt.Printf("%4.0fs %10d %10d %9d %10d %9s   %s\n", el.Seconds(), p.Samples(), inAgent(a), depth(a), w.Samples(), ready, w.Summary())
}

// featureLine renders features sorted by key.
func featureLine(latest map[string]gsignal.Feature) string {
	keys := make([]string, 0, len(latest))
	for k := range latest {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		f := latest[k]
		parts = append(parts, k+"="+strconv.FormatFloat(f.Value, 'f', 1, 64))
	}
	return strings.Join(parts, " ")
}
