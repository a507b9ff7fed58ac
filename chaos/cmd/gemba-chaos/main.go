// Command gemba-chaos runs the full fault suite (`make chaos`): every scenario of package chaos at full
// length — the agent's (a real agent process, mosquitto, JetStream and the simulator) and the hub's
// (gemba-hub processes deciding under load) — and prints one summary line per scenario. It exits
// non-zero on any loss, duplicate, double action or guardrail breach.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/gemba-io/gemba/chaos"
)

func main() {
	chaos.MaybeRunAgent() // this binary is also the agent process the suite kills
	only := flag.String("only", "", "comma-separated scenarios to run (default: all)")
	suite := flag.String("suite", "all", "agent, hub or all")
	short := flag.Bool("short", false, "the short version `go test` runs")
	outage := flag.Duration("outage", 0, "NATS outage of the agent scenarios (default 30s; 6s with -short)")
	hubBin := flag.String("hub-bin", "", "gemba-hub binary of the hub scenarios (default: built from this module)")
	work := flag.String("work", "", "working directory (default: a temp dir; a failed scenario's logs stay there)")
	flag.Parse()
	if *suite != "agent" && *suite != "hub" && *suite != "all" {
		fmt.Fprintf(os.Stderr, "gemba-chaos: -suite %q: want agent, hub or all\n", *suite)
		os.Exit(2)
	}
	if err := run(*only, *suite, *short, *outage, *hubBin, *work); err != nil {
		fmt.Fprintln(os.Stderr, "gemba-chaos:", err)
		os.Exit(1)
	}
}

func run(only, suite string, short bool, outage time.Duration, hubBin, work string) error {
	if work == "" {
		d, err := os.MkdirTemp("", "gemba-chaos-")
		if err != nil {
			return err
		}
		work = d
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	failed := 0
	if suite != "hub" {
		bin := chaos.MosquittoPath()
		if bin == "" {
			return fmt.Errorf("mosquitto is not installed: run `make peers` (apt-get install mosquitto)")
		}
		o := chaos.Full(work, bin, os.Stdout)
		if short {
			o = chaos.Short(work, bin, os.Stdout)
		}
		if outage > 0 {
			o.Outage = outage
		}
		fmt.Printf("gemba-chaos agent: NATS outage %v, load %d lines x %d machines (%d extra signals each), step %v; work dir %s\n",
			o.Outage, o.Plant.Lines, o.Plant.MachinesPerLine, o.Plant.ExtraSignals, o.Plant.Tick, work)
		for _, r := range chaos.RunAll(ctx, o, only) {
			if !r.Pass() {
				failed++
			}
		}
	}
	if suite != "agent" && ctx.Err() == nil {
		if hubBin == "" {
			b, err := chaos.BuildHub(work)
			if err != nil {
				return err
			}
			hubBin = b
		}
		o := chaos.HubFull(work, hubBin, os.Stdout)
		if short {
			o = chaos.HubShort(work, hubBin, os.Stdout)
		}
		fmt.Printf("gemba-chaos hub: %v of load at %d crossings/s per scenario, a replica killed every %v, webhook down %v, NATS node down %v, a backlog of %d; work dir %s\n",
			o.Load, o.Rate, o.KillEvery, o.WebhookDown, o.NodeDown, o.Burst, work)
		for _, r := range chaos.RunAllHub(ctx, o, only) {
			if !r.Pass() {
				failed++
			}
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d scenario(s) failed; logs under %s", failed, work)
	}
	_ = os.RemoveAll(work)
	fmt.Println("every scenario: nothing acknowledged was lost or duplicated; every decision acted on once, within its guardrails, none on historical data")
	return nil
}
