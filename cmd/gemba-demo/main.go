// Command gemba-demo runs a small plant end to end on loopback: an embedded NATS JetStream, an
// embedded MQTT broker, the simulator (sim: OPC UA, MQTT JSON and a Sparkplug B edge node), one
// gemba-agent (configs/demo/agent.yaml) and gemba-hub (configs/demo/hub.yaml). It prints a live
// view, cuts the uplink halfway through, counts the stream at the end to show that every
// acknowledged sample arrived exactly once, and shows what the hub made of it.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/gemba-io/gemba/agent"
	"github.com/gemba-io/gemba/chaos"
	_ "github.com/gemba-io/gemba/collectors/all"
	gembahub "github.com/gemba-io/gemba/hub"
	gsignal "github.com/gemba-io/gemba/signal"
	"github.com/gemba-io/gemba/sim"
)

func main() {
	duration := flag.Duration("duration", 60*time.Second, "how long the plant runs")
	outage := flag.Duration("outage", 20*time.Second, "how long the uplink is cut, halfway through (0: no cut)")
	tick := flag.Duration("tick", 100*time.Millisecond, "plant step: one MQTT message per machine per step")
	speed := flag.Float64("speed", 20, "simulated seconds per wall second (machines change state every few seconds)")
	seed := flag.Uint64("seed", 1, "plant seed")
	cfgFile := flag.String("config", "configs/demo/agent.yaml", "agent config")
	hubFile := flag.String("hub-config", "configs/demo/hub.yaml", "hub config")
	flag.Parse()
	if err := run(*cfgFile, *hubFile, *duration, *outage, sim.Config{Seed: *seed, Tick: *tick, Speed: *speed}); err != nil {
		fmt.Fprintln(os.Stderr, "gemba-demo:", err)
		os.Exit(1)
	}
}

type ports struct{ nats, mqtt, opcua, http, hub int }

func pickPorts() (p ports, err error) {
	for _, f := range []*int{&p.nats, &p.mqtt, &p.opcua, &p.http, &p.hub} {
		if *f, err = sim.FreePort(); err != nil {
			return p, err
		}
	}
	return p, nil
}

func run(cfgFile, hubFile string, duration, outage time.Duration, plant sim.Config) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	dir, err := os.MkdirTemp("", "gemba-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	pt, err := pickPorts()
	if err != nil {
		return err
	}
	store := filepath.Join(dir, "jetstream")
	hub, err := chaos.StartJetStream(pt.nats, store)
	if err != nil {
		return fmt.Errorf("nats: %w", err)
	}
	defer func() { hub.Shutdown() }() // the hub is restarted after the outage: shut down the latest
	broker, err := sim.StartBroker(fmt.Sprintf("127.0.0.1:%d", pt.mqtt), nil)
	if err != nil {
		return fmt.Errorf("mqtt broker: %w", err)
	}
	defer broker.Close()

	env := map[string]string{
		"GEMBA_DEMO_DIR":      dir,
		"GEMBA_DEMO_NATS":     fmt.Sprintf("nats://127.0.0.1:%d", pt.nats),
		"GEMBA_DEMO_MQTT":     fmt.Sprintf("tcp://127.0.0.1:%d", pt.mqtt),
		"GEMBA_DEMO_OPCUA":    fmt.Sprintf("opc.tcp://127.0.0.1:%d", pt.opcua),
		"GEMBA_DEMO_HTTP":     fmt.Sprintf("127.0.0.1:%d", pt.http),
		"GEMBA_DEMO_HUB_HTTP": fmt.Sprintf("127.0.0.1:%d", pt.hub),
	}
	lookup := func(k string) (string, bool) {
		if v, ok := env[k]; ok {
			return v, true
		}
		return os.LookupEnv(k)
	}
	cfg, err := agent.Load(cfgFile, lookup)
	if err != nil {
		return fmt.Errorf("%s:\n%w", cfgFile, err)
	}
	// The hub is a client of the demo's NATS server (which the outage stops and restarts).
	hcfg, err := gembahub.Load(hubFile, lookup)
	if err != nil {
		return fmt.Errorf("%s:\n%w", hubFile, err)
	}
	hcfg.NATS.Servers = []string{env["GEMBA_DEMO_NATS"]}
	hb, err := gembahub.New(hcfg, gembahub.Options{Logger: hcfg.Hub.Log.NewLogger(os.Stderr)})
	if err != nil {
		return fmt.Errorf("hub: %w", err)
	}
	hubCtx, hubStop := context.WithCancel(context.Background())
	hubDone := make(chan error, 1)
	go func() { hubDone <- hb.Run(hubCtx) }()
	defer func() {
		hubStop()
		<-hubDone
	}()

	// The plant first (the OPC UA server must be there for the agent to subscribe), publishing
	// once the agent listens: MQTT brokers deliver only to subscriptions that exist.
	plant.Site = "plant1"
	s, err := sim.New(sim.Options{Plant: plant, OPCUA: fmt.Sprintf("127.0.0.1:%d", pt.opcua), Broker: env["GEMBA_DEMO_MQTT"], ClientID: "gemba-demo-sim"})
	if err != nil {
		return fmt.Errorf("simulator: %w", err)
	}
	defer s.Close()

	lvl, _ := agent.ParseLevel(cfg.Agent.Log.Level)
	ag := agent.New(cfg, agent.Options{Logger: agent.NewLogger(io.Writer(os.Stderr), cfg.Agent.Log.Format, lvl)})
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

	st := s.Stats()
	fmt.Printf("gemba demo: a plant of 2 lines x 3 machines (%d signals) streaming through one agent into JetStream\n", st.Signals)
	fmt.Printf("  OPC UA server   %s   line1 press, weld\n  MQTT broker     %s   line2 press, weld (JSON); line1/line2 pack (Sparkplug B edge node)\n",
		env["GEMBA_DEMO_OPCUA"], env["GEMBA_DEMO_MQTT"])
	fmt.Printf("  NATS JetStream  %s   stream %s (store %s)\n  agent health    http://%s/readyz  /metrics\n",
		env["GEMBA_DEMO_NATS"], cfg.Uplink.NATS.Stream, store, env["GEMBA_DEMO_HTTP"])
	fmt.Printf("  hub API         http://%s/api/v1/inventory  /api/v1/features  /api/v1/fleet  /readyz\n\n", env["GEMBA_DEMO_HUB_HTTP"])

	watch, err := newWatcher(env["GEMBA_DEMO_NATS"], cfg.Uplink.NATS.Stream, cfg.Uplink.NATS.SubjectPrefix+"."+cfg.Agent.Site+"."+cfg.Agent.ID+".>")
	if err != nil {
		return err
	}
	defer watch.Close()

	for len(broker.Topics.Subscribers("plant1/line2/press/telemetry").Subscriptions) == 0 {
		select {
		case <-ctx.Done():
			return nil
		case err := <-agentDone:
			return fmt.Errorf("agent stopped: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	simCtx, simStop := context.WithCancel(ctx)
	defer simStop()
	simDone := make(chan error, 1)
	go func() { simDone <- s.Run(simCtx) }()

	cutAt, restoreAt := duration/2-outage/2, duration/2+outage/2
	start := time.Now()
	tick := time.NewTicker(3 * time.Second)
	defer tick.Stop()
	end := time.NewTimer(duration)
	defer end.Stop()
	v := &view{}
	cut, interrupted := false, false
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
			fmt.Printf("\n>>> %3.0fs  cutting the uplink: NATS stops for %v; the agent keeps collecting into its disk buffer\n\n", el.Seconds(), outage)
			hub.Shutdown()
			hub.WaitForShutdown()
			cut = true
		}
		if cut && el >= restoreAt && !hub.Running() {
			if hub, err = chaos.StartJetStream(pt.nats, store); err != nil {
				return fmt.Errorf("nats restart: %w", err)
			}
			fmt.Printf("\n>>> %3.0fs  uplink back: the agent drains its buffer (replayed batches are marked historical)\n\n", el.Seconds())
		}
		v.print(el, ag, watch)
	}
	simStop()
	<-simDone
	s.Close() // waits for the last acknowledgements
	if interrupted {
		fmt.Println("\ninterrupted: stopping cleanly")
		return nil
	}
	if !hub.Running() {
		if hub, err = chaos.StartJetStream(pt.nats, store); err != nil {
			return err
		}
	}
	acked := s.Ledger().Samples()
	fmt.Printf("\nplant stopped: the broker acknowledged %d MQTT samples (JSON + Sparkplug B); waiting for the agent to drain...\n", acked)
	if err := verify(ctx, hub, ag, watch, s, cfg.Uplink.NATS.Stream, gsignal.Subject(cfg.Uplink.NATS.SubjectPrefix, cfg.Agent.Site, cfg.Agent.ID, gsignal.StreamSamples)); err != nil {
		return err
	}
	return showHub("http://" + env["GEMBA_DEMO_HUB_HTTP"])
}

// verify waits for the agent to drain, then reads the whole stream back and checks it against the
// simulator's ledger.
func verify(ctx context.Context, hub *server.Server, ag *agent.Agent, w *watcher, s *sim.Sim, stream, subject string) error {
	deadline := time.Now().Add(60 * time.Second)
	var last uint64
	for time.Now().Before(deadline) && ctx.Err() == nil {
		n := w.Samples()
		if depth(ag) == 0 && n == last && n >= s.Ledger().Samples() {
			break // nothing buffered and the stream stopped growing
		}
		last = n
		time.Sleep(time.Second)
	}
	js, nc, err := chaos.Connect(hub.ClientURL())
	if err != nil {
		return err
	}
	defer nc.Close()
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	sc, err := chaos.CountStream(cctx, js, stream, subject)
	if err != nil {
		return fmt.Errorf("count stream: %w", err)
	}
	t := sim.Check(s.Ledger().Snapshot(), sc.Counter)
	fmt.Printf("\nstream %s: %d messages (%d replayed after the outage, %d repeated ids), %d samples\n", stream, sc.Messages, sc.Historical, sc.DupMessages, sc.Samples)
	fmt.Printf("  MQTT (JSON + Sparkplug B): %d acknowledged by the broker, %d in the stream, %d missing, %d duplicated\n", t.Acked, t.Delivered, t.Missing, t.Duplicates)
	fmt.Printf("  OPC UA (subscriptions report changes): %d samples\n", t.Other)
	if !t.OK() || sc.DupMessages > 0 || t.Other == 0 {
		return fmt.Errorf("MISMATCH: %s; repeated message ids %d\n  %s", t, sc.DupMessages, strings.Join(t.Examples, "\n  "))
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

// view prints one block per tick: rates in and out, buffer depth, uplink state, features by line.
type view struct {
	header  bool
	in, out uint64
	at      time.Duration
}

func (v *view) print(el time.Duration, a *agent.Agent, w *watcher) {
	if !v.header {
		fmt.Printf("%5s %9s %9s %9s %11s %7s\n", "t", "in/s", "out/s", "buffered", "in stream", "uplink")
		v.header = true
	}
	in, out := inAgent(a), w.Samples()
	dt := (el - v.at).Seconds()
	ready := "up"
	for _, c := range a.Readiness().Checks {
		if c.Name == "uplink" && !c.OK {
			ready = "DOWN"
		}
	}
	fmt.Printf("%4.0fs %9.0f %9.0f %9d %11d %7s\n", el.Seconds(), float64(in-v.in)/dt, float64(out-v.out)/dt, depth(a), out, ready)
	for _, l := range w.Lines() {
		fmt.Printf("        %s\n", l)
	}
	v.in, v.out, v.at = in, out, el
}
