package main

import (
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub"
	"github.com/gemba-io/gemba/internal/promtext"
	"github.com/gemba-io/gemba/internal/testutil"
)

// TestRunAppliesTheMemoryDefault reads the running hub's own Go runtime settings from /metrics
// (go_gc_gomemlimit_bytes, go_gc_gogc_percent): with nothing set the hub runs under auto's floor
// (issue 13: a 300,000-key hub at ~140 MiB at rest instead of 340–380 with no knob turned);
// GOMEMLIMIT or GOGC from the environment win over auto; an explicit memory_limit wins over
// GOMEMLIMIT; off leaves Go's default.
func TestRunAppliesTheMemoryDefault(t *testing.T) {
	const none = math.MaxInt64 // Go's "no limit"
	for _, c := range []struct {
		name    string
		setting string // hub.memory_limit, "" for absent
		env     []string
		limit   float64
		gogc    float64
	}{
		{"defaults", "", nil, float64(hub.MemoryPolicy.Floor), 100},
		{"GOMEMLIMIT wins over auto", "", []string{"GOMEMLIMIT=300MiB"}, 300 << 20, 100},
		{"GOGC wins over auto", "", []string{"GOGC=50"}, none, 50},
		{"explicit wins over GOMEMLIMIT", "256MiB", []string{"GOMEMLIMIT=300MiB"}, 256 << 20, 100},
		{"off", "off", nil, none, 100},
	} {
		t.Run(c.name, func(t *testing.T) {
			limit, gogc := hubRuntimeSettings(t, c.setting, c.env)
			if limit != c.limit || gogc != c.gogc {
				t.Errorf("go_gc_gomemlimit_bytes %.0f, go_gc_gogc_percent %.0f; want %.0f, %.0f", limit, gogc, c.limit, c.gogc)
			}
		})
	}
}

// hubRuntimeSettings runs the hub (embedded NATS, no agents) with the given memory_limit and
// environment and scrapes its Go memory limit and GOGC.
func hubRuntimeSettings(t *testing.T, setting string, env []string) (limit, gogc float64) {
	t.Helper()
	dir := t.TempDir()
	httpPort, natsPort := testutil.FreePort(t), testutil.FreePort(t)
	mem := ""
	if setting != "" {
		mem = ", memory_limit: " + setting
	}
	file := writeFile(t, filepath.Join(dir, "hub.yaml"), fmt.Sprintf(`hub: {id: hub-1, data_dir: %s, shutdown_timeout: 5s, log: {format: text}%s}
http: {listen: "127.0.0.1:%d"}
nats: {embedded: {listen: "127.0.0.1:%d"}}
`, dir, mem, httpPort, natsPort))
	cmd := hubCmd("", env, "run", "-c", file)
	// The case decides these two, not whoever runs the tests.
	var kept []string
	for _, kv := range cmd.Env {
		if (strings.HasPrefix(kv, "GOGC=") || strings.HasPrefix(kv, "GOMEMLIMIT=")) && !slices.Contains(env, kv) {
			continue
		}
		kept = append(kept, kv)
	}
	cmd.Env = kept
	var stderr testutil.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			t.Errorf("hub did not stop on SIGTERM:\n%s", stderr.String())
		}
	}()
	var m promtext.Metrics
	testutil.WaitFor(t, 30*time.Second, "the hub's /metrics", func() bool {
		select {
		case err := <-exited:
			t.Fatalf("hub exited: %v\n%s", err, stderr.String())
		default:
		}
		var err error
		m, err = promtext.Scrape(fmt.Sprintf("http://127.0.0.1:%d/metrics", httpPort))
		return err == nil
	})
	for _, n := range []string{"go_gc_gomemlimit_bytes", "go_gc_gogc_percent"} {
		if _, ok := m[n]; !ok {
			t.Fatalf("/metrics has no %s", n)
		}
	}
	if !strings.Contains(stderr.String(), "memory limit") {
		t.Errorf("the memory setting in force is not logged:\n%s", stderr.String())
	}
	return m.Sum("go_gc_gomemlimit_bytes"), m.Sum("go_gc_gogc_percent")
}
