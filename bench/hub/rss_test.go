package hubbench

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/config"
	"github.com/gemba-io/gemba/hub"
	"github.com/gemba-io/gemba/hub/state/inventory"
	"github.com/gemba-io/gemba/internal/memlimit"
	"github.com/gemba-io/gemba/internal/testutil"
)

const childEnv = "GEMBA_HUBBENCH_CHILD"

// child is the measured process: gemba-hub's Run (its embedded NATS server on <dir>/nats, the
// stores, ingest, HTTP) with <dir>/hub.yaml, until SIGTERM. It says READY once the hub runs.
func child(dir string) int {
	cfg, err := hub.Load(filepath.Join(dir, "hub.yaml"), os.LookupEnv)
	if err != nil {
		fmt.Println("config:", err)
		return 1
	}
	if v := os.Getenv("HUBBENCH_MEMORY_LIMIT"); v != "" { // a variant's hub.memory_limit
		if err := config.NewDecoder().Unmarshal([]byte("memory_limit: "+v), &cfg.Hub); err != nil {
			fmt.Println("memory limit:", err)
			return 1
		}
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	follow := memlimit.Apply(cfg.Hub.MemoryLimit, hub.MemoryPolicy, os.LookupEnv, log) // as gemba-hub run does
	ready := make(chan string, 1)
	h, err := hub.New(cfg, hub.Options{Logger: log, Ready: ready})
	if err != nil {
		fmt.Println("hub:", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if follow != nil {
		go follow(ctx)
	}
	go func() {
		if addr, ok := <-ready; ok {
			fmt.Println("READY", addr)
		}
	}()
	if p := os.Getenv("HUBBENCH_HEAPPROF"); p != "" {
		go func() { // a heap profile once the hub has been idle a while (make bench-hub HEAPPROF=...)
			<-ready2(ctx, 20*time.Second)
			writeHeapProfile(p)
		}()
		go peakProfile(ctx, p+".peak")
	}
	if err := h.Run(ctx); err != nil {
		fmt.Println("run:", err)
		return 1
	}
	return 0
}

// BenchmarkRSS is the memory target (RSS ≤ 150 MiB with 100,000 SKUs × 3 sites of inventory state,
// the hub process with its embedded NATS server). The state is written first (a typical key: an ERP
// snapshot and a dozen sales, copied under 300,000 keys); then a hub process (this binary re-run as
// gemba-hub run, memory limit included) starts on it, and 3 agents send a backlog of feature windows
// whose units land on those SKUs. RSS is read from /proc/<pid>/status of that process from outside:
// after start (state loaded), after the backlog is ingested, once idle for 15 s, and its peak (VmHWM)
// over the whole life. Variants: the hub's defaults (hub.memory_limit auto), memory_limit off (Go's
// defaults), and GOMEMLIMIT=120MiB from the environment (auto steps aside). Run with -benchtime 1x.
func BenchmarkRSS(b *testing.B) {
	for _, v := range []struct{ name, env string }{
		{"defaults", ""},
		{"memory-limit-off", "HUBBENCH_MEMORY_LIMIT=off"},
		{"gomemlimit-120MiB", "GOMEMLIMIT=120MiB"},
	} {
		b.Run(v.name, func(b *testing.B) {
			for b.Loop() {
				rssRound(b, v.env)
			}
		})
	}
}

func rssRound(b *testing.B, env string) {
	const sites, skus = 3, 100_000
	p := plant{agents: sites, lines: 5, machines: 4, fields: 10, skus: skus}
	dir := b.TempDir()
	port := testutil.FreePort(b)
	hubConfig(b, p, dir, port) // writes the graph
	yaml := fmt.Sprintf(hubYAML, dir, fmt.Sprintf("127.0.0.1:%d", port), filepath.Join(dir, "graph.yaml"))
	if err := os.WriteFile(filepath.Join(dir, "hub.yaml"), []byte(yaml), 0o644); err != nil {
		b.Fatal(err)
	}
	offline(b, dir, func(js jetstream.JetStream) {
		agentsStream(b, js)
		inventoryFixture(b, js, sites, skus)
	})

	b.StopTimer()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+dir)
	if env != "" {
		cmd.Env = append(cmd.Env, env)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	exited := make(chan error, 1)
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		_, _ = io.Copy(io.Discard, out)
		exited <- cmd.Wait()
	}()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				b.Errorf("hub process: %v", err)
			}
		case <-time.After(60 * time.Second):
			_ = cmd.Process.Kill()
			b.Error("hub process did not stop within 60s of SIGTERM")
		}
	}()
	var addr string
	select {
	case l := <-lines:
		var ok bool
		if addr, ok = strings.CutPrefix(l, "READY "); !ok {
			b.Fatalf("hub process said %q", l)
		}
	case <-time.After(3 * time.Minute):
		b.Fatal("hub process not ready within 3 min")
	}
	pid := strconv.Itoa(cmd.Process.Pid)
	load := time.Since(start)
	afterOpen, peakOpen := memStatus(pid)

	nc, js := connect(b, fmt.Sprintf("nats://127.0.0.1:%d", port))
	defer nc.Close()
	const windows = 60
	t0 := time.Now().Add(-2 * windows * time.Second).Truncate(time.Second)
	ingestStart := time.Now()
	publishAll(b, js, p, windows, t0)
	drained(b, js, 10*time.Minute)
	ingest := time.Since(ingestStart) // publishing included: the hub ingests while the agents send
	afterIngest, _ := memStatus(pid)
	// Idle: the server drops its block caches some seconds after the last access. Sampled, not slept on.
	idle := afterIngest
	for end := time.Now().Add(15 * time.Second); time.Now().Before(end); {
		time.Sleep(500 * time.Millisecond) // sampling interval
		idle, _ = memStatus(pid)
	}
	_, peak := memStatus(pid)
	anon, file := rssParts(pid)
	b.ReportMetric(load.Seconds(), "load-s")
	b.ReportMetric(afterOpen, "rss-ready-MiB")
	b.ReportMetric(peakOpen, "peak-rss-ready-MiB")
	b.ReportMetric(afterIngest, "rss-ingested-MiB")
	b.ReportMetric(idle, "rss-idle-MiB")
	b.ReportMetric(peak, "peak-rss-MiB")
	b.ReportMetric(ingest.Seconds(), "ingest-s")
	b.Logf("%s: ready after %.1fs at %.0f MiB (peak so far %.0f); %.0f MiB after ingesting %d records in %.1fs; %.0f MiB idle (anonymous %.0f, files %.0f); peak %.0f MiB",
		cmp.Or(env, "defaults"), load.Seconds(), afterOpen, peakOpen, afterIngest, p.agents*windows*p.perWindow(), ingest.Seconds(), idle, anon, file, peak)
	// The backlog's units reached the inventory (the state is live, not only loaded): SKU-000030 is made
	// in 5 windows of site2's lines (w+l = 30), 1 + 30%9 = 4 units each.
	resp, err := http.Get("http://" + addr + "/api/v1/inventory/site2/SKU-000030")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	var pos struct {
		Produced float64 `json:"produced"`
		OnHand   float64 `json:"on_hand"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&pos); err != nil || resp.StatusCode != http.StatusOK {
		b.Fatalf("inventory site2 SKU-000030: status %s, %v", resp.Status, err)
	}
	if pos.Produced != 20 || pos.OnHand != 250 {
		b.Errorf("inventory site2 SKU-000030: produced %v on hand %v, want 20 and 250", pos.Produced, pos.OnHand)
	}
	b.StartTimer()
}

// inventoryFixture writes sites × skus inventory keys: one typical state (an ERP snapshot and 12 sales,
// made by the inventory store itself) copied under every key, as the inventory's own benchmark does.
func inventoryFixture(b *testing.B, js jetstream.JetStream, sites, skus int) {
	ctx := context.Background()
	cfg := inventory.DefaultConfig()
	s, err := inventory.Open(ctx, js, cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	if _, err := s.Snapshot(ctx, inventory.Snapshot{ID: "erp:fixture:1", SKU: "SKU-T", Site: "site1", OnHand: 250, Time: now.Add(-20 * time.Hour)}); err != nil {
		b.Fatal(err)
	}
	for i := range 12 {
		if _, err := s.Move(ctx, inventory.Movement{ID: fmt.Sprintf("sale:ORD-%08d:1", i), SKU: "SKU-T", Site: "site1", Kind: inventory.Sold,
			Qty: 2, Time: now.Add(-time.Duration(i) * 3 * time.Hour)}); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if err != nil {
		b.Fatal(err)
	}
	e, err := kv.Get(ctx, "site1.SKU-T")
	if err != nil {
		b.Fatal(err)
	}
	val := e.Value()
	b.Logf("typical inventory value: %d bytes", len(val))
	for i := range sites * skus {
		if _, err := js.PublishAsync(fmt.Sprintf("$KV.%s.site%d.SKU-%06d", cfg.Bucket, i/skus+1, i%skus), val); err != nil {
			b.Fatal(err)
		}
		if i%2000 == 1999 {
			select {
			case <-js.PublishAsyncComplete():
			case <-time.After(time.Minute):
				b.Fatal("inventory fixture not acknowledged")
			}
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("inventory fixture not acknowledged")
	}
}

// rssParts reads RssAnon (the Go runtime's memory) and RssFile (mostly the binary's text) in MiB.
func rssParts(pid string) (anon, file float64) {
	data, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return 0, 0
	}
	for _, l := range strings.Split(string(data), "\n") {
		name, val, _ := strings.Cut(l, ":")
		kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(val), " kB"), 64)
		switch name {
		case "RssAnon":
			anon = kb / 1024
		case "RssFile":
			file = kb / 1024
		}
	}
	return anon, file
}

// writeHeapProfile writes the heap profile (as of the last GC) to p.
func writeHeapProfile(p string) {
	if f, err := os.Create(p); err == nil {
		_ = pprof.WriteHeapProfile(f)
		_ = f.Close()
	}
}

// peakProfile keeps, in p, the heap profile taken when the live heap (after a GC) was largest: what
// the peak RSS is made of. Sampled every 50 ms until ctx ends.
func peakProfile(ctx context.Context, p string) {
	var best uint64
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	var ms runtime.MemStats
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		runtime.ReadMemStats(&ms) // cheap enough at 20/s for a profiling run
		live := ms.HeapAlloc
		if ms.NumGC == 0 || live <= best+best/20 { // 5 % more than the last profile's
			continue
		}
		best = live
		writeHeapProfile(p)
		fmt.Fprintf(os.Stderr, "heap profile: %d MiB allocated, %d MiB heap in use, %d MiB from the OS\n", live>>20, ms.HeapInuse>>20, ms.Sys>>20)
	}
}

// ready2 closes after d, or when ctx ends.
func ready2(ctx context.Context, d time.Duration) <-chan struct{} {
	c := make(chan struct{})
	go func() {
		defer close(c)
		select {
		case <-time.After(d):
		case <-ctx.Done():
		}
	}()
	return c
}
