package main

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gemba-io/gemba/agent"
	"github.com/gemba-io/gemba/internal/promtext"
	"github.com/gemba-io/gemba/internal/testutil"
)

// TestRunAppliesTheMemoryDefault reads the running agent's own Go runtime settings from /metrics
// (go_gc_gomemlimit_bytes, go_gc_gogc_percent): with nothing set the agent runs under auto's
// 32MiB floor (issue 18.9: peak RSS under 50 MiB at 5,000 variables with no knob turned);
// GOMEMLIMIT or GOGC from the environment win over auto; an explicit memory_limit wins over
// GOMEMLIMIT; off leaves Go's default.
func TestRunAppliesTheMemoryDefault(t *testing.T) {
	const none = math.MaxInt64 // Go's "no limit"
	for _, c := range []struct {
		name    string
		setting string // agent.memory_limit, "" for absent
		env     []string
		limit   float64
		gogc    float64
	}{
		{"defaults", "", nil, agent.AutoMemoryFloor, 100},
		{"GOMEMLIMIT wins over auto", "", []string{"GOMEMLIMIT=100MiB"}, 100 << 20, 100},
		{"GOGC wins over auto", "", []string{"GOGC=50"}, none, 50},
		{"explicit wins over GOMEMLIMIT", "64MiB", []string{"GOMEMLIMIT=100MiB"}, 64 << 20, 100},
		{"off", "off", nil, none, 100},
	} {
		t.Run(c.name, func(t *testing.T) {
			limit, gogc := runtimeSettings(t, c.setting, c.env)
			if limit != c.limit || gogc != c.gogc {
				t.Errorf("go_gc_gomemlimit_bytes %.0f, go_gc_gogc_percent %.0f; want %.0f, %.0f", limit, gogc, c.limit, c.gogc)
			}
		})
	}
}

// runtimeSettings runs the agent (no collectors, nothing on the uplink's port) with the given
// memory_limit and environment and scrapes its Go memory limit and GOGC.
func runtimeSettings(t *testing.T, setting string, env []string) (limit, gogc float64) {
	t.Helper()
	dir := t.TempDir()
	httpPort, natsPort := testutil.FreePort(t), testutil.FreePort(t)
	mem := ""
	if setting != "" {
		mem = ", memory_limit: " + setting
	}
	file := filepath.Join(dir, "agent.yaml")
	cfg := fmt.Sprintf(`agent: {id: gw1, site: plant1, shutdown_timeout: 5s, log: {format: text}%s}
http: {listen: "127.0.0.1:%d"}
buffer: {dir: %s/buf, max_bytes: 64MiB}
uplink:
  nats: {servers: ["nats://127.0.0.1:%d"], stream: GEMBA, create_stream: true}
`, mem, httpPort, dir, natsPort)
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := agentCmd(t, env, "run", "-c", file)
	// The case decides these two, not whoever runs the tests.
	var kept []string
	for _, kv := range cmd.Env {
		if (strings.HasPrefix(kv, "GOGC=") || strings.HasPrefix(kv, "GOMEMLIMIT=")) && !slices.Contains(env, kv) {
			continue
		}
		kept = append(kept, kv)
	}
	cmd.Env = kept
	var stderr syncBuffer
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
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			t.Errorf("agent did not stop on SIGTERM:\n%s", stderr.String())
		}
	}()
	var m promtext.Metrics
	testutil.WaitFor(t, 30*time.Second, "the agent's /metrics", func() bool {
		select {
		case err := <-exited:
			t.Fatalf("agent exited: %v\n%s", err, stderr.String())
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
