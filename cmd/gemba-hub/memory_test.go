package main

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/gemba-io/gemba/hub"
	"github.com/gemba-io/gemba/internal/memlimit/memlimittest"
	"github.com/gemba-io/gemba/internal/testutil"
)

// TestRunAppliesTheMemoryDefault reads the running hub's own Go runtime settings from /metrics
// (go_gc_gomemlimit_bytes, go_gc_gogc_percent): with nothing set the hub runs under auto's floor
// (issue 13: a 300,000-key hub at ~140 MiB at rest instead of 340–380 with no knob turned);
// GOMEMLIMIT or GOGC from the environment win over auto; an explicit memory_limit wins over
// GOMEMLIMIT; off leaves Go's default.
func TestRunAppliesTheMemoryDefault(t *testing.T) {
	memlimittest.Check(t, float64(hub.MemoryPolicy.Floor), 300, 256, hubRuntimeSettings)
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
	return memlimittest.Settings(t, hubCmd("", env, "run", "-c", file), env, fmt.Sprintf("http://127.0.0.1:%d/metrics", httpPort))
}
