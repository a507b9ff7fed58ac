// Command bench-opcua runs the whole gemba-agent (OPC UA collector → Badger buffer → NATS) against
// node-opcua with N variables changing every 100 ms and records the agent's peak RSS and the server's CPU.
//
// Each variant gets a fresh nats-server (JetStream) and a fresh node-opcua server as separate processes.
// Over the measurement window it reads, from outside the processes:
//   - the agent's VmHWM, VmRSS, RssAnon and RssFile from /proc/<pid>/status (sampled every 100 ms;
//     VmHWM is the kernel's own peak, so a spike between two samples still counts),
//   - the agent's and node-opcua's utime+stime from /proc/<pid>/stat,
//   - samples taken in (gemba_collector_samples_total) against the changes the server produced.
//
// Usage: go run ./bench/opcua -vars 5000 -variants old-buffer,default -window 60s
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gemba-io/gemba/chaos"
	"github.com/gemba-io/gemba/internal/promtext"
)

// variant is one agent configuration: YAML added to the collector and the buffer, and environment.
type variant struct {
	name   string
	before bool // run the agent built from -before

	agent     string // extra agent keys (flow mapping entries)
	collector string // extra collector keys, one per line, two-space indented
	buffer    string // extra buffer keys (flow mapping entries)
	env       []string
}

// variants: "old-buffer" is the buffer as it was before issue 18 (64 MiB value-log files for a 2 GiB
// buffer, GOGC 100, no memory limit); "default" is what the agent does today with no knobs set
// (agent.memory_limit: auto); "off" is Go's own default (GOGC 100, no limit), the agent's before
// auto. GOMEMLIMIT or GOGC in a variant's environment make auto step aside.
var variants = map[string]variant{
	"default":        {name: "default"},
	"off":            {name: "off", agent: "memory_limit: off"},
	"fixed-32":       {name: "fixed-32", agent: "memory_limit: 32MiB"},
	"fixed-28":       {name: "fixed-28", agent: "memory_limit: 28MiB"},
	"gogc-50-32":     {name: "gogc-50-32", env: []string{"GOGC=50", "GOMEMLIMIT=32MiB"}},
	"before":         {name: "before", before: true},
	"memlimit-32":    {name: "memlimit-32", env: []string{"GOMEMLIMIT=32MiB"}},
	"memlimit-28":    {name: "memlimit-28", env: []string{"GOMEMLIMIT=28MiB"}},
	"memlimit-24":    {name: "memlimit-24", env: []string{"GOMEMLIMIT=24MiB"}},
	"gogc-50":        {name: "gogc-50", env: []string{"GOGC=50"}},
	"old-buffer":     {name: "old-buffer", buffer: "badger: {value_log_file_size: 64MiB}"},
	"sampling-0":     {name: "sampling-0", collector: "    sampling: 0s\n"},
	"sampling-pi":    {name: "sampling-pi", collector: "    sampling: 1s\n"},
	"pi-100":         {name: "pi-100", collector: "    publishing_interval: 100ms\n"},
	"sampling-0-q20": {name: "sampling-0-q20", collector: "    sampling: 0s\n    queue_size: 20\n"},
	"sampling-100":   {name: "sampling-100", collector: "    sampling: 100ms\n"},
}

type options struct {
	vars     int
	window   time.Duration
	warmup   time.Duration
	variants string
	work     string
	node     string
	extra    string
	heap     string
	before   string
	after    string
	coll     string
}

func main() {
	var o options
	flag.IntVar(&o.vars, "vars", 5000, "OPC UA variables, each changing every 100 ms")
	flag.DurationVar(&o.window, "window", 60*time.Second, "measurement window")
	flag.DurationVar(&o.warmup, "warmup", 10*time.Second, "time after the first samples before the window opens")
	flag.StringVar(&o.variants, "variants", "old-buffer,default", "comma-separated variants: "+strings.Join(names(), ", "))
	flag.StringVar(&o.work, "work", "", "working directory (default: a temp dir, removed afterwards)")
	flag.StringVar(&o.node, "node", "collectors/opcua/testdata/nodeserver", "directory of server.js with node_modules (npm ci)")
	flag.StringVar(&o.extra, "buffer", "", "extra buffer keys for every variant (flow mapping entries)")
	flag.StringVar(&o.heap, "heap", "", "directory to save each variant's heap profile into (at the end of the window)")
	flag.StringVar(&o.before, "before", "", "git revision to build the \"before\" variant's agent from (git archive, no checkout)")
	flag.StringVar(&o.coll, "collector", "", "extra collector keys for every variant (YAML lines, e.g. \"sampling: 0s\")")
	flag.StringVar(&o.after, "after", "", "git revision to build the other variants' agent from (default: the working tree)")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench-opcua:", err)
		os.Exit(1)
	}
}

func names() []string {
	var out []string
	for k := range variants {
		out = append(out, k)
	}
	return out
}

type result struct {
	variant              string
	hwm, rssMax, rssEnd  float64 // MiB
	hwmStart             float64 // MiB, VmHWM as the window opens: the start-up's own peak
	startAnon, startFile float64 // MiB, RssAnon and RssFile max over the warm-up
	anonMax, fileMax     float64 // MiB, the largest sample of each
	serverCPU, agentCPU  float64 // share of one core over the window
	samplesPerS, changes float64 // samples taken in per second, changes produced per second
	gcPerS, limitEnd     float64 // GC cycles per second over the window; Go's memory limit at the end (MiB)
}

func run(o options) error {
	if o.work == "" {
		d, err := os.MkdirTemp("", "bench-opcua-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		o.work = d
	}
	if _, err := os.Stat(filepath.Join(o.node, "node_modules", "node-opcua")); err != nil {
		return fmt.Errorf("node-opcua is not installed in %s: run `npm ci` there (%v)", o.node, err)
	}
	node, err := filepath.Abs(o.node)
	if err != nil {
		return err
	}
	o.node = node
	bin := filepath.Join(o.work, "bin")
	builds := [][]string{{"-o", filepath.Join(bin, "nats-server"), "github.com/nats-io/nats-server/v2"}}
	if o.after == "" {
		builds = append(builds, []string{"-o", filepath.Join(bin, "gemba-agent"), "./cmd/gemba-agent"})
	}
	for _, b := range builds {
		cmd := exec.Command("go", append([]string{"build", "-trimpath"}, b...)...)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("go build %s: %w", b[len(b)-1], err)
		}
	}
	for _, b := range []struct{ rev, exe string }{{o.before, "gemba-agent-before"}, {o.after, "gemba-agent"}} {
		if b.rev != "" {
			if err := buildAt(o.work, b.rev, filepath.Join(bin, b.exe)); err != nil {
				return err
			}
		}
	}
	var results []result
	for i, name := range strings.Split(o.variants, ",") {
		v, ok := variants[strings.TrimSpace(name)]
		if !ok {
			return fmt.Errorf("-variants: unknown variant %q (have %s)", name, strings.Join(names(), ", "))
		}
		fmt.Printf("%s ...\n", v.name)
		r, err := runVariant(o, v, bin, filepath.Join(o.work, fmt.Sprintf("%d-%s", i, v.name)))
		if err != nil {
			return fmt.Errorf("%s: %w", v.name, err)
		}
		fmt.Printf("  %+v\n", r)
		results = append(results, r)
	}
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Printf("\n%s, %d CPUs, load %s, %s; %d variables × 100 ms, window %v\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"),
		runtime.NumCPU(), strings.Join(strings.Fields(string(load))[:3], " "), runtime.Version(), o.vars, o.window)
	fmt.Println("| variant | agent VmHWM (at the window's start) | VmRSS max / end | RssAnon max | RssFile max | agent CPU | GC cycles/s | Go limit at end | node-opcua CPU | samples/s (of changes/s) |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range results {
		limit := fmt.Sprintf("%.0f MiB", r.limitEnd)
		if r.limitEnd > 1<<40 {
			limit = "none"
		}
		fmt.Printf("| %s | %.1f (%.1f) MiB | %.1f / %.1f MiB | %.1f MiB | %.1f MiB | %.1f %% | %.2f | %s | %.0f %% | %.0f (%.0f) |\n", r.variant, r.hwm, r.hwmStart, r.rssMax,
			r.rssEnd, r.anonMax, r.fileMax, 100*r.agentCPU, r.gcPerS, limit, 100*r.serverCPU, r.samplesPerS, r.changes)
	}
	return nil
}

const agentYAML = `agent: {id: bench, site: bench, log: {level: warn, format: text}%s}
http: {listen: "%s", pprof: %v}
buffer: {dir: "%s", max_bytes: 2GiB, sync: batch%s}
uplink:
  nats: {servers: ["%s"], stream: GEMBA, create_stream: true}
collectors:
  - name: plc
    type: opcua
    endpoint: %s
    security: {policy: None, mode: None}
    reconnect: {min_backoff: 100ms, max_backoff: 1s}
%s    nodes:
%s`

func runVariant(o options, v variant, bin, dir string) (result, error) {
	res := result{variant: v.name}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return res, err
	}
	natsPort, opcPort, httpPort := freePort(), freePort(), freePort()
	natsURL := fmt.Sprintf("nats://127.0.0.1:%d", natsPort)
	ns, err := start(dir, nil, filepath.Join(bin, "nats-server"), "-a", "127.0.0.1", "-p", strconv.Itoa(natsPort), "-js", "-sd", filepath.Join(dir, "js"))
	if err != nil {
		return res, err
	}
	defer ns.stop()
	srv, url, err := startNode(o, dir, opcPort)
	if err != nil {
		return res, err
	}
	defer srv.stop()

	var nodes strings.Builder
	for i := range o.vars {
		fmt.Fprintf(&nodes, "      - {node: \"nsu=urn:gemba:test;s=v%d\", signal: v%d}\n", i, i)
	}
	coll := v.collector
	for _, l := range strings.Split(o.coll, "\n") {
		if strings.TrimSpace(l) != "" {
			coll += "    " + strings.TrimSpace(l) + "\n"
		}
	}
	buf := ""
	for _, extra := range []string{v.buffer, o.extra} {
		if extra != "" {
			buf += ", " + extra
		}
	}
	httpAddr := fmt.Sprintf("127.0.0.1:%d", httpPort)
	cfg := filepath.Join(dir, "agent.yaml")
	ag := ""
	if v.agent != "" {
		ag = ", " + v.agent
	}
	yaml := fmt.Sprintf(agentYAML, ag, httpAddr, o.heap != "", filepath.Join(dir, "buffer"), buf, natsURL, url, coll, nodes.String())
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		return res, err
	}
	exe := filepath.Join(bin, "gemba-agent")
	if v.before {
		exe += "-before"
	}
	agent, err := start(dir, v.env, exe, "run", "-c", cfg)
	if err != nil {
		return res, err
	}
	defer agent.stop()
	samples := func() float64 {
		m, err := promtext.Scrape("http://" + httpAddr + "/metrics")
		if err != nil {
			return -1
		}
		return m.Sum("gemba_collector_samples_total")
	}
	// Through the start-up (subscriptions, the first snapshot of every value) and the warm-up,
	// RssAnon and RssFile every 20 ms: which of the two makes the start-up's peak.
	startup := func(d time.Duration) {
		for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
			st := agent.status()
			res.startAnon = max(res.startAnon, st["RssAnon"])
			res.startFile = max(res.startFile, st["RssFile"])
		}
	}
	deadline := time.Now().Add(2 * time.Minute)
	for samples() < float64(o.vars) {
		if time.Now().After(deadline) {
			return res, fmt.Errorf("no data from the agent within 2m (see %s)", dir)
		}
		if agent.exited() {
			return res, fmt.Errorf("the agent exited (see %s)", filepath.Join(dir, "gemba-agent.log"))
		}
		startup(200 * time.Millisecond)
	}
	startup(o.warmup)

	// GC cycles (go_gc_duration_seconds' count) and the limit in force show what auto did.
	gc := func() (cycles, limit float64) {
		m, err := promtext.Scrape("http://" + httpAddr + "/metrics")
		if err != nil {
			return -1, -1
		}
		if f := m["go_gc_duration_seconds"]; f != nil && len(f.GetMetric()) > 0 {
			cycles = float64(f.GetMetric()[0].GetSummary().GetSampleCount())
		}
		return cycles, m.Sum("go_gc_gomemlimit_bytes") / (1 << 20)
	}
	g0, _ := gc()
	res.hwmStart = agent.status()["VmHWM"]
	s0, a0, n0, t0 := samples(), agent.cpu(), srv.cpu(), time.Now()
	end := t0.Add(o.window)
	for time.Now().Before(end) {
		st := agent.status()
		res.rssMax = max(res.rssMax, st["VmRSS"])
		res.anonMax = max(res.anonMax, st["RssAnon"])
		res.fileMax = max(res.fileMax, st["RssFile"])
		if agent.exited() {
			return res, fmt.Errorf("the agent exited (see %s)", filepath.Join(dir, "gemba-agent.log"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	el := time.Since(t0)
	if o.heap != "" {
		if err := saveHeap("http://"+httpAddr+"/debug/pprof/heap", filepath.Join(o.heap, v.name+".heap")); err != nil {
			return res, err
		}
	}
	st := agent.status()
	res.hwm, res.rssEnd = st["VmHWM"], st["VmRSS"]
	res.agentCPU = (agent.cpu() - a0).Seconds() / el.Seconds()
	res.serverCPU = (srv.cpu() - n0).Seconds() / el.Seconds()
	res.samplesPerS = (samples() - s0) / el.Seconds()
	res.changes = float64(o.vars) * 10
	g1, lim := gc()
	res.gcPerS, res.limitEnd = (g1-g0)/el.Seconds(), lim
	return res, nil
}

// startNode runs node-opcua's server.js and waits for its READY line.
func startNode(o options, dir string, port int) (*proc, string, error) {
	p, err := start(dir, nil, "node", filepath.Join(o.node, "server.js"), "--port", strconv.Itoa(port), "--pki", filepath.Join(dir, "pki"),
		"--vars", strconv.Itoa(o.vars), "--interval", "100", "--accept-unknown")
	if err != nil {
		return nil, "", err
	}
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(filepath.Join(dir, "node.log"))
		sc := bufio.NewScanner(strings.NewReader(string(b)))
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "READY ") {
				return p, fmt.Sprintf("opc.tcp://127.0.0.1:%d/UA/gemba", port), nil
			}
		}
		if p.exited() {
			return nil, "", fmt.Errorf("node-opcua exited before READY (see %s)", filepath.Join(dir, "node.log"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	p.stop()
	return nil, "", fmt.Errorf("node-opcua not READY within 2m")
}

type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func start(dir string, env []string, name string, args ...string) (*proc, error) {
	lf, err := os.Create(filepath.Join(dir, filepath.Base(name)+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = chaos.ChildAttr() // nothing outlives a killed benchmark
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); lf.Close(); close(p.done) }()
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// cpu is the process's utime+stime (fields 14 and 15 of /proc/<pid>/stat).
func (p *proc) cpu() time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ is 100 on Linux
}

// status is the kB fields of /proc/<pid>/status in MiB.
func (p *proc) status() map[string]float64 {
	out := map[string]float64{}
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	for _, l := range strings.Split(string(b), "\n") {
		k, rest, ok := strings.Cut(l, ":")
		f := strings.Fields(rest)
		if !ok || len(f) != 2 || f[1] != "kB" {
			continue
		}
		kb, _ := strconv.ParseFloat(f[0], 64)
		out[k] = kb / 1024
	}
	return out
}

// buildAt builds gemba-agent from a git revision (git archive into a temp dir: no checkout).
func buildAt(work, rev, out string) error {
	src, err := os.MkdirTemp(work, "src-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(src)
	sh := fmt.Sprintf("git archive %s | tar -x -C %s", rev, src)
	if out, err := exec.Command("sh", "-c", sh).CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %v\n%s", sh, err, out)
	}
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, "./cmd/gemba-agent")
	cmd.Dir, cmd.Env = src, append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build the agent at %s: %v\n%s", rev, err, b)
	}
	return nil
}

func saveHeap(url, file string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	return os.WriteFile(file, b, 0o644)
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
