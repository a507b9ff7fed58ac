// Command bench-e2e measures gemba-agent end to end against the baseline bridge (bench/bridge: paho
// subscribe, NATS publish, no durability), side by side in one run: both get a fresh mosquitto and a
// fresh nats-server with JetStream as separate processes on loopback, the same publisher, the same
// load. It reports throughput, loss, duplicates, latency at a fixed rate, CPU per message and peak RSS,
// and writes the table into docs/BENCHMARKS.md between the bench-e2e markers.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/gemba-io/gemba/chaos"
)

type options struct {
	n          int           // messages in the throughput run
	rate       int           // messages/s in the fixed-rate run
	rateFor    time.Duration // length of the fixed-rate run
	publishers int
	work       string
	out        string
	rounds     int
}

func main() {
	var o options
	flag.IntVar(&o.n, "n", 100000, "QoS 1 messages in the throughput run")
	flag.IntVar(&o.rate, "rate", 10000, "messages/s of the fixed-rate (latency) run")
	flag.DurationVar(&o.rateFor, "rate-duration", 10*time.Second, "length of the fixed-rate run")
	flag.IntVar(&o.publishers, "publishers", 4, "publishing MQTT clients")
	flag.IntVar(&o.rounds, "rounds", 1, "rounds; sides alternate within each round")
	flag.StringVar(&o.work, "work", "", "working directory (default: a temp dir, removed afterwards)")
	flag.StringVar(&o.out, "out", "docs/BENCHMARKS.md", "file to write the table into (empty: print only)")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench-e2e:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	if o.work == "" {
		d, err := os.MkdirTemp("", "bench-e2e-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		o.work = d
	}
	mosq := chaos.MosquittoPath()
	if mosq == "" {
		return fmt.Errorf("mosquitto is not installed: run `make peers` (apt-get install mosquitto)")
	}
	bin := filepath.Join(o.work, "bin")
	fmt.Println("building gemba-agent, the bridge and nats-server ...")
	for _, b := range [][]string{
		{"-o", filepath.Join(bin, "gemba-agent"), "./cmd/gemba-agent"},
		{"-o", filepath.Join(bin, "bridge"), "./bench/bridge"},
		{"-o", filepath.Join(bin, "nats-server"), "github.com/nats-io/nats-server/v2"},
	} {
		cmd := exec.Command("go", append([]string{"build", "-trimpath"}, b...)...)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("go build %s: %w", b[len(b)-1], err)
		}
	}
	ctx := context.Background()
	results := map[string][]sideResult{}
	for r := range o.rounds {
		for _, side := range []string{"bridge", "agent"} {
			fmt.Printf("round %d: %s ...\n", r+1, side)
			res, err := runSide(ctx, o, side, bin, mosq, filepath.Join(o.work, fmt.Sprintf("%s-%d", side, r)))
			if err != nil {
				return fmt.Errorf("%s: %w", side, err)
			}
			fmt.Printf("  %s\n", res)
			results[side] = append(results[side], res)
		}
	}
	table := render(o, results["bridge"], results["agent"])
	fmt.Println(table)
	if o.out == "" {
		return nil
	}
	return writeBetweenMarkers(o.out, table)
}

func render(o options, bridge, agent []sideResult) string {
	b, a := median(bridge), median(agent)
	var s strings.Builder
	host, _ := os.Hostname()
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Fprintf(&s, "Measured %s on %s (%d CPUs, load %s), %s, %d round(s), medians. mosquitto and nats-server\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), host, runtime.NumCPU(), strings.Join(strings.Fields(string(load))[:3], " "),
		runtime.Version(), o.rounds)
	fmt.Fprintf(&s, "(JetStream, file storage) run as separate processes on loopback, fresh for each side; %d publishers send\n", o.publishers)
	fmt.Fprintf(&s, "%d QoS 1 JSON messages (one sample each) as fast as the broker acknowledges, then %d msgs/s for %v.\n",
		o.n, o.rate, o.rateFor)
	s.WriteString("Throughput counts until the last message is stored in the stream; latency is the stream's store time\n")
	s.WriteString("minus the sample's own timestamp; CPU is the process's user+system time over the throughput run.\n\n")
	s.WriteString("| | bridge (paho → NATS, no durability) | gemba-agent (Badger buffer, JetStream PubAck) | agent / bridge | target |\n|---|---|---|---|---|\n")
	row := func(name, unit string, bv, av float64, target string) {
		ratio := "—"
		if bv > 0 {
			ratio = fmt.Sprintf("%.2f×", av/bv)
		}
		fmt.Fprintf(&s, "| %s | %s | %s | %s | %s |\n", name, fmtNum(bv, unit), fmtNum(av, unit), ratio, target)
	}
	row("end-to-end throughput", "msgs/s", b.throughput, a.throughput, "≥ 0.95×")
	row("CPU per message", "µs", b.cpuPerMsg, a.cpuPerMsg, "≤ 0.75×")
	row(fmt.Sprintf("latency p50 at %d msgs/s", o.rate), "ms", b.p50, a.p50, "")
	row(fmt.Sprintf("latency p99 at %d msgs/s", o.rate), "ms", b.p99, a.p99, "agent ≤ 25 ms")
	row("achieved fixed rate", "msgs/s", b.achievedRate, a.achievedRate, "")
	row("peak RSS", "MiB", b.rssMiB, a.rssMiB, "agent ≤ 40 MiB")
	fmt.Fprintf(&s, "| lost / duplicated (all runs) | %d / %d | %d / %d | | 0 / 0 for the agent |\n", b.lost, b.dups, a.lost, a.dups)
	return s.String()
}

func fmtNum(v float64, unit string) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%.0f %s", v, unit)
	case v >= 10:
		return fmt.Sprintf("%.1f %s", v, unit)
	default:
		return fmt.Sprintf("%.2f %s", v, unit)
	}
}

const (
	startMarker = "<!-- bench-e2e:start -->"
	endMarker   = "<!-- bench-e2e:end -->"
)

// writeBetweenMarkers replaces what is between the markers (creating the file with a heading and
// the markers when it does not exist).
func writeBetweenMarkers(file, table string) error {
	b, err := os.ReadFile(file)
	if os.IsNotExist(err) {
		b = []byte("# Benchmarks\n\n" + startMarker + "\n" + endMarker + "\n")
	} else if err != nil {
		return err
	}
	s := string(b)
	i, j := strings.Index(s, startMarker), strings.Index(s, endMarker)
	if i < 0 || j < i {
		return fmt.Errorf("%s: markers %s / %s not found in order", file, startMarker, endMarker)
	}
	s = s[:i+len(startMarker)] + "\n" + table + s[j:]
	return os.WriteFile(file, []byte(s), 0o644)
}
