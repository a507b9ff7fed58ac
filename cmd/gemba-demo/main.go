// Command gemba-demo runs the whole system on loopback: an embedded NATS JetStream, an embedded
// MQTT broker, the plant simulator (sim: OPC UA, MQTT JSON and a Sparkplug B edge node), one
// gemba-agent (configs/demo/agent.yaml), gemba-hub (configs/demo/hub.yaml) and the commerce
// simulator (sim/commerce) selling what the plant makes. It prints a live view and each decision
// of the hub, cuts the uplink for a while, counts the stream at the end to show that every
// acknowledged sample arrived exactly once, and checks the four moments of the demo: a promotion,
// a hold, an approval waiting, and no decision taken on the data replayed after the outage.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
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

// options are what a run of the demo varies.
type options struct {
	agentFile, hubFile string
	// duration is how long the plant runs; the uplink is cut at outageAt for outage (0: no cut).
	duration, outageAt, outage time.Duration
	plant                      sim.Config
}

func main() {
	o := options{}
	flag.DurationVar(&o.duration, "duration", 90*time.Second, "how long the plant runs")
	flag.DurationVar(&o.outageAt, "outage-at", 50*time.Second, "when the uplink is cut, from the plant's start")
	flag.DurationVar(&o.outage, "outage", 15*time.Second, "how long the uplink is cut (0: no cut)")
	flag.DurationVar(&o.plant.Tick, "tick", 100*time.Millisecond, "plant step: one MQTT message per machine per step")
	flag.Float64Var(&o.plant.Speed, "speed", 20, "simulated seconds per wall second (machines change state every few seconds)")
	flag.Uint64Var(&o.plant.Seed, "seed", 1, "plant and market seed (the opening stock is chosen for seed 1's first SKUs)")
	flag.StringVar(&o.agentFile, "config", "configs/demo/agent.yaml", "agent config")
	flag.StringVar(&o.hubFile, "hub-config", "configs/demo/hub.yaml", "hub config")
	flag.BoolVar(&verbose, "v", false, "print every decision the guard suppressed too")
	flag.Parse()
	m, err := run(o)
	if errors.Is(err, context.Canceled) {
		fmt.Println("\ninterrupted while starting: stopped")
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gemba-demo:", err)
		os.Exit(1)
	}
	if m != nil && len(m.problems) > 0 {
		fmt.Fprintln(os.Stderr, "gemba-demo: "+strings.Join(m.problems, "; "))
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

// outcome is what a finished run saw.
type outcome struct {
	*moments
	replayed uint64   // messages the agent replayed after the outage (marked historical)
	problems []string // moments missing, or a decision acted on replayed data
}

// run runs the demo; it returns nil without an error when interrupted (Ctrl-C).
func run(o options) (*outcome, error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	dir, err := os.MkdirTemp("", "gemba-demo-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	pt, err := pickPorts()
	if err != nil {
		return nil, err
	}
	env := map[string]string{
		"GEMBA_DEMO_DIR":      dir,
		"GEMBA_DEMO_NATS":     fmt.Sprintf("nats://127.0.0.1:%d", pt.nats),
		"GEMBA_DEMO_MQTT":     fmt.Sprintf("tcp://127.0.0.1:%d", pt.mqtt),
		"GEMBA_DEMO_OPCUA":    fmt.Sprintf("opc.tcp://127.0.0.1:%d", pt.opcua),
		"GEMBA_DEMO_HTTP":     fmt.Sprintf("127.0.0.1:%d", pt.http),
		"GEMBA_DEMO_HUB_HTTP": fmt.Sprintf("127.0.0.1:%d", pt.hub),
	}
	base := "http://" + env["GEMBA_DEMO_HUB_HTTP"]
	// The console is served by the hub's listener: its address comes first, before any setup.
	fmt.Printf("gemba demo — console: %s/console/ (user demo, password demo)\n\n", base)

	store := filepath.Join(dir, "jetstream")
	hub, err := chaos.StartJetStream(pt.nats, store)
	if err != nil {
		return nil, fmt.Errorf("nats: %w", err)
	}
	defer func() { hub.Shutdown() }() // the server is restarted after the outage: shut down the latest
	broker, err := sim.StartBroker(fmt.Sprintf("127.0.0.1:%d", pt.mqtt), nil)
	if err != nil {
		return nil, fmt.Errorf("mqtt broker: %w", err)
	}
	defer broker.Close()

	lookup := func(k string) (string, bool) {
		if v, ok := env[k]; ok {
			return v, true
		}
		return os.LookupEnv(k)
	}
	cfg, err := agent.Load(o.agentFile, lookup)
	if err != nil {
		return nil, fmt.Errorf("%s:\n%w", o.agentFile, err)
	}
	// The hub is a client of the demo's NATS server (which the outage stops and restarts).
	hcfg, err := gembahub.Load(o.hubFile, lookup)
	if err != nil {
		return nil, fmt.Errorf("%s:\n%w", o.hubFile, err)
	}
	hcfg.NATS.Servers = []string{env["GEMBA_DEMO_NATS"]}
	hlog := hcfg.Hub.Log.NewLogger(os.Stderr)
	hb, err := gembahub.New(hcfg, gembahub.Options{Logger: hlog})
	if err != nil {
		return nil, fmt.Errorf("hub: %w", err)
	}
	hubCtx, hubStop := context.WithCancel(context.Background())
	hubDone := make(chan error, 1)
	go func() { hubDone <- hb.Run(hubCtx) }()
	defer func() {
		hubStop()
		<-hubDone
	}()
	if err := waitReady(ctx, base, hubDone); err != nil {
		return nil, err
	}

	// The plant first (the OPC UA server must be there for the agent to subscribe), publishing
	// once the agent listens: MQTT brokers deliver only to subscriptions that exist.
	plant := o.plant
	plant.Site = "plant1"
	s, err := sim.New(sim.Options{Plant: plant, OPCUA: fmt.Sprintf("127.0.0.1:%d", pt.opcua), Broker: env["GEMBA_DEMO_MQTT"], ClientID: "gemba-demo-sim"})
	if err != nil {
		return nil, fmt.Errorf("simulator: %w", err)
	}
	defer s.Close()

	// The market: a week of sales and the opening stock reach the hub before the plant starts, so
	// its first decisions see each SKU's cover.
	mk, err := openMarket(env["GEMBA_DEMO_NATS"], hcfg, plant, cfg.Agent.Site, s, hlog)
	if err != nil {
		return nil, err
	}
	defer mk.close()
	perDay, err := mk.backfill(ctx, hcfg.Commerce.Prefix)
	if err != nil {
		return nil, err
	}
	if err := waitInventory(ctx, base, len(demoCover)); err != nil {
		return nil, err
	}

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
	fmt.Printf("a plant of 2 lines x 3 machines (%d signals) streaming through one agent into JetStream, a hub deciding, a market buying\n", st.Signals)
	fmt.Printf("  OPC UA server   %s   line1 press, weld\n  MQTT broker     %s   line2 press, weld (JSON); line1/line2 pack (Sparkplug B edge node)\n",
		env["GEMBA_DEMO_OPCUA"], env["GEMBA_DEMO_MQTT"])
	fmt.Printf("  NATS JetStream  %s   stream %s (store %s)\n  agent health    http://%s/readyz  /metrics\n",
		env["GEMBA_DEMO_NATS"], cfg.Uplink.NATS.Stream, store, env["GEMBA_DEMO_HTTP"])
	fmt.Printf("  hub API         %s/api/v1/decisions  /api/v1/approvals  /api/v1/inventory  /api/v1/features  /readyz\n", base)
	fmt.Printf("  market          %d days of sales published; opening cover %s\n\n", historyDays, describeCover(perDay))

	watch, err := newWatcher(env["GEMBA_DEMO_NATS"], cfg.Uplink.NATS.Stream, cfg.Uplink.NATS.SubjectPrefix+"."+cfg.Agent.Site+"."+cfg.Agent.ID+".>")
	if err != nil {
		return nil, err
	}
	defer watch.Close()

	for len(broker.Topics.Subscribers("plant1/line2/press/telemetry").Subscriptions) == 0 {
		select {
		case <-ctx.Done():
			return nil, nil
		case err := <-agentDone:
			return nil, fmt.Errorf("agent stopped: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	simCtx, simStop := context.WithCancel(ctx)
	defer simStop()
	simDone := make(chan error, 1)
	go func() { simDone <- s.Run(simCtx) }()
	mk.run(simCtx)

	start := time.Now()
	mo := newMoments(base, start)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	end := time.NewTimer(o.duration)
	defer end.Stop()
	v := &view{}
	cut, interrupted := false, false
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			interrupted = true
		case <-end.C:
		case <-tick.C:
		}
		if interrupted || time.Since(start) >= o.duration {
			break
		}
		el := time.Since(start)
		if o.outage > 0 && !cut && el >= o.outageAt && el < o.outageAt+o.outage {
			fmt.Printf("\n>>> %4.0fs  cutting the uplink: NATS stops for %v; the agent keeps collecting into its disk buffer\n\n", el.Seconds(), o.outage)
			hub.Shutdown()
			hub.WaitForShutdown()
			cut = true
		}
		if cut && el >= o.outageAt+o.outage && !hub.Running() {
			if hub, err = chaos.StartJetStream(pt.nats, store); err != nil {
				return nil, fmt.Errorf("nats restart: %w", err)
			}
			fmt.Printf("\n>>> %4.0fs  uplink back: the agent drains its buffer (replayed batches are marked historical)\n\n", el.Seconds())
		}
		if hub.Running() {
			_ = mo.poll() // the log is unreadable while NATS is down; the next poll catches up
		}
		if n%3 == 0 {
			v.print(el, ag, watch)
		}
	}
	simStop()
	<-simDone
	mk.close()
	if interrupted {
		// The agent first: gopcua's server waits up to 10 s on Close for a client still connected.
		agentStop()
		agentDone <- <-agentDone // stopped; left for the deferred wait
		s.Close()
		fmt.Println("\ninterrupted: stopping cleanly")
		return nil, nil
	}
	s.Close() // waits for the last acknowledgements
	if !hub.Running() {
		if hub, err = chaos.StartJetStream(pt.nats, store); err != nil {
			return nil, err
		}
	}
	acked := s.Ledger().Samples()
	fmt.Printf("\nplant stopped: the broker acknowledged %d MQTT samples (JSON + Sparkplug B); waiting for the agent to drain...\n", acked)
	replayed, err := verify(ctx, hub, ag, watch, s, cfg.Uplink.NATS.Stream, gsignal.Subject(cfg.Uplink.NATS.SubjectPrefix, cfg.Agent.Site, cfg.Agent.ID, gsignal.StreamSamples))
	if err != nil {
		return nil, err
	}
	if err := showHub(base); err != nil {
		return nil, err
	}
	if err := mo.poll(); err != nil {
		return nil, fmt.Errorf("hub decisions: %w", err)
	}
	out := &outcome{moments: mo, replayed: replayed}
	out.problems = mo.summary(replayed)
	return out, nil
}

// waitReady waits for the hub to be ready but for the agents' stream, which the agent creates
// when it first connects (after the hub).
func waitReady(ctx context.Context, base string, done <-chan error) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		rd, err := readiness(base)
		waiting := err != nil
		for _, r := range rd.Reasons {
			if !strings.HasPrefix(r, "agents ingest") {
				waiting = true
			}
		}
		if !waiting {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("hub not ready after 60s: %v %v", err, rd.Reasons)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-done:
			return fmt.Errorf("hub stopped: %v", err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// readiness reads /readyz, whose body says why when it answers 503.
func readiness(base string) (gembahub.Readiness, error) {
	var rd gembahub.Readiness
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(base + "/readyz")
	if err != nil {
		return rd, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusServiceUnavailable {
		return rd, fmt.Errorf("/readyz: %s", resp.Status)
	}
	return rd, json.NewDecoder(resp.Body).Decode(&rd)
}

// waitInventory waits for the hub to hold a position with a demand rate for each of n SKUs.
func waitInventory(ctx context.Context, base string, n int) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		var inv struct {
			Positions []struct {
				SKU       string  `json:"sku"`
				DailyRate float64 `json:"daily_rate"`
			} `json:"positions"`
		}
		err := getJSON(base+"/api/v1/inventory", &inv)
		got := 0
		for _, p := range inv.Positions {
			if p.DailyRate > 0 {
				got++
			}
		}
		if err == nil && got >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the hub holds a demand rate for %d of %d SKUs after 60s (%v)", got, n, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// verify waits for the agent to drain, then reads the whole stream back and checks it against the
// simulator's ledger.
func verify(ctx context.Context, hub *server.Server, ag *agent.Agent, w *watcher, s *sim.Sim, stream, subject string) (replayed uint64, err error) {
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
		return 0, err
	}
	defer nc.Close()
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	sc, err := chaos.CountStream(cctx, js, stream, subject)
	if err != nil {
		return 0, fmt.Errorf("count stream: %w", err)
	}
	t := sim.Check(s.Ledger().Snapshot(), sc.Counter)
	fmt.Printf("\nstream %s: %d messages (%d replayed after the outage, %d repeated ids), %d samples\n", stream, sc.Messages, sc.Historical, sc.DupMessages, sc.Samples)
	fmt.Printf("  MQTT (JSON + Sparkplug B): %d acknowledged by the broker, %d in the stream, %d missing, %d duplicated\n", t.Acked, t.Delivered, t.Missing, t.Duplicates)
	fmt.Printf("  OPC UA (subscriptions report changes): %d samples\n", t.Other)
	if !t.OK() || sc.DupMessages > 0 || t.Other == 0 {
		return 0, fmt.Errorf("MISMATCH: %s; repeated message ids %d\n  %s", t, sc.DupMessages, strings.Join(t.Examples, "\n  "))
	}
	fmt.Println("nothing lost, nothing duplicated, through an uplink outage.")
	return sc.Historical, nil
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
