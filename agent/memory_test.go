package agent

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
)

func TestMemoryLimitSetting(t *testing.T) {
	base := "agent: {id: gw1, site: plant1%s}\nbuffer: {dir: /tmp/x}\n"
	for _, c := range []struct {
		yml  string
		want MemoryLimit
		text string
	}{
		{"", MemoryAuto, "auto"},
		{", memory_limit: auto", MemoryAuto, "auto"},
		{", memory_limit: off", MemoryOff, "off"},
		{", memory_limit: 0B", MemoryOff, "off"}, // what 0 meant before auto
		{", memory_limit: 64MiB", 64 << 20, "64MiB"},
	} {
		cfg, err := Parse([]byte(strings.Replace(base, "%s", c.yml, 1)), noEnv)
		if err != nil {
			t.Fatalf("%q: %v", c.yml, err)
		}
		if cfg.Agent.MemoryLimit != c.want || cfg.Agent.MemoryLimit.String() != c.text {
			t.Errorf("%q: got %d (%s), want %d (%s)", c.yml, cfg.Agent.MemoryLimit, cfg.Agent.MemoryLimit, c.want, c.text)
		}
		// The printed config reads back as the same setting.
		out, err := cfg.Effective()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out), "memory_limit: "+c.text+"\n") {
			t.Errorf("%q: effective config lacks memory_limit: %s:\n%s", c.yml, c.text, out)
		}
		again, err := Parse(out, noEnv)
		if err != nil || again.Agent.MemoryLimit != c.want {
			t.Errorf("%q: effective config read back: %v, %v", c.yml, again, err)
		}
	}
	for yml, want := range map[string]string{
		", memory_limit: 8MiB": "line 1: agent.memory_limit: 8MiB is below 16MiB",
		", memory_limit: lots": "line 1: agent.memory_limit: want auto, off or a size",
	} {
		_, err := Parse([]byte(strings.Replace(base, "%s", yml, 1)), noEnv)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want %q", yml, err, want)
		}
	}
}

// TestAutoFollowsTheLiveHeap reads the real runtime through the agent's policy: a heap that
// outgrew the floor gets a limit at least half its size above it (no collection spiral), and once
// it is freed the floor again.
func TestAutoFollowsTheLiveHeap(t *testing.T) {
	orig := debug.SetMemoryLimit(-1)
	defer debug.SetMemoryLimit(orig)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	live := make([][]byte, 96)
	for i := range live {
		live[i] = bytes.Repeat([]byte{byte(i)}, 1<<20)
	}
	runtime.GC()
	ApplyMemoryLimit(MemoryAuto, noEnv, log) // the first step is taken before it returns
	if lim, want := debug.SetMemoryLimit(-1), int64(96<<20*(100+MemoryPolicy.Headroom)/100); lim < want {
		t.Errorf("96 MiB live: limit %d MiB, want at least %d MiB", lim>>20, want>>20)
	}
	runtime.KeepAlive(live)
	live = nil
	runtime.GC()
	ApplyMemoryLimit(MemoryAuto, noEnv, log)
	if lim := debug.SetMemoryLimit(-1); lim != AutoMemoryFloor {
		t.Errorf("heap freed: limit %d MiB, want the floor %d MiB", lim>>20, AutoMemoryFloor>>20)
	}
}

// TestApplyMemoryLimit: auto applies the floor unless GOMEMLIMIT or GOGC are in the environment;
// a fixed size wins over the environment; off leaves the process alone.
func TestApplyMemoryLimit(t *testing.T) {
	orig := debug.SetMemoryLimit(-1)
	defer debug.SetMemoryLimit(orig)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	lookup := func(kv ...string) func(string) (string, bool) {
		return func(k string) (string, bool) {
			for i := 0; i+1 < len(kv); i += 2 {
				if kv[i] == k {
					return kv[i+1], true
				}
			}
			return "", false
		}
	}
	const sentinel = 777 << 20
	for _, c := range []struct {
		name   string
		m      MemoryLimit
		env    func(string) (string, bool)
		want   int64
		follow bool
	}{
		{"auto", MemoryAuto, lookup(), AutoMemoryFloor, true},
		{"auto, GOMEMLIMIT set", MemoryAuto, lookup("GOMEMLIMIT", "777MiB"), sentinel, false},
		{"auto, GOGC set", MemoryAuto, lookup("GOGC", "50"), sentinel, false},
		{"auto, GOGC empty", MemoryAuto, lookup("GOGC", ""), AutoMemoryFloor, true},
		{"fixed over GOMEMLIMIT", 48 << 20, lookup("GOMEMLIMIT", "777MiB"), 48 << 20, false},
		{"off", MemoryOff, lookup(), sentinel, false},
	} {
		debug.SetMemoryLimit(sentinel) // stands for whatever the runtime took from the environment
		follow := ApplyMemoryLimit(c.m, c.env, log)
		if got := debug.SetMemoryLimit(-1); got != c.want {
			t.Errorf("%s: limit %d MiB, want %d MiB", c.name, got>>20, c.want>>20)
		}
		if (follow != nil) != c.follow {
			t.Errorf("%s: follows the heap %v, want %v", c.name, follow != nil, c.follow)
		}
		if follow != nil {
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			wg.Go(func() { follow(ctx) })
			cancel()
			wg.Wait() // ends with its context
		}
	}
}
