// Command gemba-chaos runs the full fault suite (`make chaos`): every scenario of package chaos at full
// length against a real agent process, mosquitto, JetStream and the simulator. It prints one summary
// line per scenario and exits non-zero on any loss or duplicate.
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
	short := flag.Bool("short", false, "the short version `go test` runs")
	outage := flag.Duration("outage", 0, "NATS outage (default 30s; 6s with -short)")
	work := flag.String("work", "", "working directory (default: a temp dir; a failed scenario's logs stay there)")
	flag.Parse()
	if err := run(*only, *short, *outage, *work); err != nil {
		fmt.Fprintln(os.Stderr, "gemba-chaos:", err)
		os.Exit(1)
	}
}

func run(only string, short bool, outage time.Duration, work string) error {
	bin := chaos.MosquittoPath()
	if bin == "" {
		return fmt.Errorf("mosquitto is not installed: run `make peers` (apt-get install mosquitto)")
	}
	if work == "" {
		d, err := os.MkdirTemp("", "gemba-chaos-")
		if err != nil {
			return err
		}
		work = d
	}
	o := chaos.Full(work, bin, os.Stdout)
	if short {
		o = chaos.Short(work, bin, os.Stdout)
	}
	if outage > 0 {
		o.Outage = outage
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Printf("gemba-chaos: NATS outage %v, load %d lines x %d machines (%d extra signals each), step %v; work dir %s\n",
		o.Outage, o.Plant.Lines, o.Plant.MachinesPerLine, o.Plant.ExtraSignals, o.Plant.Tick, work)
	failed := 0
	for _, r := range chaos.RunAll(ctx, o, only) {
		if !r.Pass() {
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d scenario(s) failed; logs under %s", failed, work)
	}
	_ = os.RemoveAll(work)
	fmt.Println("every scenario: nothing acknowledged was lost or duplicated")
	return nil
}
