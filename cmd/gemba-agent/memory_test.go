package main

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/gemba-io/gemba/agent"
	"github.com/gemba-io/gemba/internal/memlimit/memlimittest"
	"github.com/gemba-io/gemba/internal/testutil"
)

// TestRunAppliesTheMemoryDefault reads the running agent's own Go runtime settings from /metrics
// (go_gc_gomemlimit_bytes, go_gc_gogc_percent): with nothing set the agent runs under auto's
// 32MiB floor (issue 18.9: peak RSS under 50 MiB at 5,000 variables with no knob turned);
// GOMEMLIMIT or GOGC from the environment win over auto; an explicit memory_limit wins over
// GOMEMLIMIT; off leaves Go's default.
func TestRunAppliesTheMemoryDefault(t *testing.T) {
	memlimittest.Check(t, agent.AutoMemoryFloor, 100, 64, runtimeSettings)
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
	return memlimittest.Settings(t, agentCmd(t, env, "run", "-c", file), env, fmt.Sprintf("http://127.0.0.1:%d/metrics", httpPort))
}
