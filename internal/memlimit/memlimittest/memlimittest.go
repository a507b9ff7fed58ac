// Package memlimittest runs a gemba binary and reads the Go memory limit and GOGC it runs under,
// for the binaries' tests of memory_limit.
package memlimittest

import (
	"math"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gemba-io/gemba/internal/promtext"
	"github.com/gemba-io/gemba/internal/testutil"
)

// Case is one memory_limit setting and environment, with what the process must run under.
type Case struct {
	Name    string
	Setting string   // memory_limit in the config, "" for absent
	Env     []string // GOMEMLIMIT / GOGC given to the process
	Limit   float64  // go_gc_gomemlimit_bytes
	GOGC    float64  // go_gc_gogc_percent
}

// None is Go's "no memory limit".
const None = math.MaxInt64

// cases are the precedence rules every binary follows: auto's floor by default; GOMEMLIMIT or GOGC
// from the environment win over auto; an explicit size wins over GOMEMLIMIT; off leaves Go alone.
// envLimit and fixed are sizes in MiB above the floor.
func cases(floor float64, envLimit, fixed int) []Case {
	mib := func(n int) float64 { return float64(n << 20) }
	return []Case{
		{"defaults", "", nil, floor, 100},
		{"GOMEMLIMIT wins over auto", "", []string{"GOMEMLIMIT=" + strconv.Itoa(envLimit) + "MiB"}, mib(envLimit), 100},
		{"GOGC wins over auto", "", []string{"GOGC=50"}, None, 50},
		{"explicit wins over GOMEMLIMIT", strconv.Itoa(fixed) + "MiB", []string{"GOMEMLIMIT=" + strconv.Itoa(envLimit) + "MiB"}, mib(fixed), 100},
		{"off", "off", nil, None, 100},
	}
}

// Check runs every case of cases(floor, envLimit, fixed) as a subtest: run starts the binary with
// the case's memory_limit and environment and returns what Settings read.
func Check(t *testing.T, floor float64, envLimit, fixed int, run func(t *testing.T, setting string, env []string) (limit, gogc float64)) {
	for _, c := range cases(floor, envLimit, fixed) {
		t.Run(c.Name, func(t *testing.T) {
			limit, gogc := run(t, c.Setting, c.Env)
			if limit != c.Limit || gogc != c.GOGC {
				t.Errorf("go_gc_gomemlimit_bytes %.0f, go_gc_gogc_percent %.0f; want %.0f, %.0f", limit, gogc, c.Limit, c.GOGC)
			}
		})
	}
}

// Settings starts cmd (a binary's run command; GOGC and GOMEMLIMIT from the test's own environment
// are dropped unless env sets them), waits for its /metrics at metricsURL, checks that it logs the
// memory setting in force, stops it with SIGTERM and returns its go_gc_gomemlimit_bytes and
// go_gc_gogc_percent.
func Settings(t *testing.T, cmd *exec.Cmd, env []string, metricsURL string) (limit, gogc float64) {
	t.Helper()
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
			t.Errorf("%s did not stop on SIGTERM:\n%s", cmd.Path, stderr.String())
		}
	}()
	var m promtext.Metrics
	testutil.WaitFor(t, 30*time.Second, "the process's /metrics", func() bool {
		select {
		case err := <-exited:
			t.Fatalf("%s exited: %v\n%s", cmd.Path, err, stderr.String())
		default:
		}
		var err error
		m, err = promtext.Scrape(metricsURL)
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
