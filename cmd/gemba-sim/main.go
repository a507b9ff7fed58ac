// Command gemba-sim runs a simulated plant on the real protocols: an OPC UA server (security None)
// and MQTT telemetry (JSON and one Sparkplug B edge node) to an embedded broker or any broker. Point a
// gemba-agent at it to try a config; `gemba-sim -print-config` writes a matching collectors section.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	stdlog "log"
	"log/slog"
	"math"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/gemba-io/gemba/sim"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "gemba-sim:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("gemba-sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	d := sim.DefaultConfig()
	seed := fs.Uint64("seed", d.Seed, "random seed: the same seed gives the same plant")
	site := fs.String("site", d.Site, "site name: MQTT topic root and Sparkplug group")
	lines := fs.Int("lines", d.Lines, "production lines")
	machines := fs.Int("machines", d.MachinesPerLine, "machines per line")
	extra := fs.Int("extra-signals", 0, "extra analog sensors per machine (load tests)")
	tick := fs.Duration("tick", d.Tick, "wall-clock period of one step (one MQTT message per machine per step)")
	speed := fs.Float64("speed", d.Speed, "simulated seconds per wall second (state dwell times are minutes)")
	opcuaAddr := fs.String("opcua", "127.0.0.1:4840", "OPC UA listen address (empty: no OPC UA server)")
	broker := fs.String("broker", "", "MQTT broker URL to publish to (default: an embedded broker on -listen-mqtt)")
	listenMQTT := fs.String("listen-mqtt", "127.0.0.1:1883", "address of the embedded MQTT broker when -broker is empty")
	qos := fs.Int("qos", 1, "QoS of JSON telemetry (0 or 1)")
	printCfg := fs.Bool("print-config", false, "print an agent collectors section for this plant and exit")
	duration := fs.Duration("duration", 0, "stop after this long (0: until interrupted)")
	verbose := fs.Bool("v", false, "show the OPC UA server library's own log")
	shutdown := fs.Duration("shutdown-timeout", sim.DefaultShutdownTimeout, "on SIGTERM/SIGINT, wait at most this long for the MQTT broker's acknowledgements (and, with -commerce-nats, for the commerce flush); a broker that is gone is not waited for longer")
	commerceF := addCommerceFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *shutdown <= 0 {
		return fmt.Errorf("-shutdown-timeout %s: must be positive", *shutdown)
	}
	switch {
	case *lines <= 0:
		return fmt.Errorf("-lines %d: must be positive", *lines)
	case *machines <= 0:
		return fmt.Errorf("-machines %d: must be positive", *machines)
	case *extra < 0 || *extra > sim.MaxExtraSignals:
		return fmt.Errorf("-extra-signals %d: want 0 to %d", *extra, sim.MaxExtraSignals)
	case *tick <= 0:
		return fmt.Errorf("-tick %s: must be positive", *tick)
	case !(*speed > 0) || math.IsInf(*speed, 0):
		return fmt.Errorf("-speed %v: must be a positive number", *speed)
	}
	if *qos < 0 || *qos > 1 {
		return fmt.Errorf("-qos %d: want 0 or 1", *qos)
	}
	cfg := sim.Config{Seed: *seed, Site: *site, Lines: *lines, MachinesPerLine: *machines, ExtraSignals: *extra, Tick: *tick, Speed: *speed}
	embedded := *broker == "" // no broker given (or -broker ""): run our own
	if embedded {
		*broker = "tcp://" + *listenMQTT
	}
	if *printCfg {
		ep := ""
		if *opcuaAddr != "" {
			ep = "opc.tcp://" + *opcuaAddr
		}
		fmt.Fprint(stdout, sim.CollectorsYAML(sim.NewPlant(cfg), ep, *broker))
		return nil
	}

	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var opcuaLog *slog.Logger
	if *verbose {
		opcuaLog = log
	} else {
		stdlog.SetOutput(io.Discard) // gopcua's server prints its nodeset import through the standard logger
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	if embedded {
		b, err := sim.StartBroker(*listenMQTT, log)
		if err != nil {
			return err
		}
		defer b.Close()
	}
	q := byte(*qos)
	s, err := sim.New(sim.Options{Plant: cfg, OPCUA: *opcuaAddr, Broker: *broker, QoS: &q, Logger: log, OPCUALogger: opcuaLog, ShutdownTimeout: *shutdown})
	if err != nil {
		return err
	}
	defer s.Close()
	st := s.Stats()
	fmt.Fprintf(stdout, "gemba-sim: %d lines x %d machines, %d signals, seed %d\n", cfg.Lines, cfg.MachinesPerLine, st.Signals, cfg.Seed)
	if ep := s.OPCUAEndpoint(); ep != "" {
		fmt.Fprintf(stdout, "  OPC UA  %s  (namespace %s)\n", ep, sim.NamespaceURI)
	}
	fmt.Fprintf(stdout, "  MQTT    %s  (JSON on %s/<line>/<machine>/telemetry, Sparkplug B group %s)\n", *broker, cfg.Site, cfg.Site)
	stopCommerce, err := commerceF.start(ctx, cfg, s, log, stdout, *shutdown)
	if err != nil {
		return err
	}
	defer stopCommerce()
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case err := <-done:
			st := s.Stats()
			fmt.Fprintf(stdout, "stopped after %d steps: %d MQTT messages acknowledged, %d samples; %d OPC UA updates\n",
				st.Steps, st.MQTTAcked, st.AckedSamples, st.OPCUAUpdates)
			return err
		case <-t.C:
			st := s.Stats()
			fmt.Fprintf(stdout, "steps %d  mqtt acked %d (unacked %d)  opcua updates %d\n", st.Steps, st.MQTTAcked, st.MQTTFailed, st.OPCUAUpdates)
		}
	}
}
