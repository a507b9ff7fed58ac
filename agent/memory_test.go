package agent

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"math"
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

func TestAutoLimit(t *testing.T) {
	const mib = 1 << 20
	small := memStats{live: 13 * mib, stacks: mib, globals: mib / 2, total: 30 * mib, objects: 20 * mib, unused: 2 * mib, free: 2 * mib}
	if got := autoLimit(AutoMemoryFloor, small); got != AutoMemoryFloor {
		t.Errorf("5,000 variables' heap: limit %d MiB, want the floor", got/mib)
	}
	// A big gateway: the limit must leave at least autoHeadroom % of the live heap to grow in,
	// plus what the runtime holds outside the heap, or the collector would run back to back.
	big := memStats{live: 200 * mib, stacks: 2 * mib, globals: mib / 2, total: 420 * mib, released: 10 * mib, objects: 380 * mib, unused: 10 * mib, free: 5 * mib}
	got := autoLimit(AutoMemoryFloor, big)
	outside := int64(420-10-380-10-5) * mib
	if min := int64(200*mib*(100+autoHeadroom)/100) + outside; got < min {
		t.Errorf("200 MiB live: limit %d MiB, want at least %d MiB", got/mib, min/mib)
	}
	if got > 2*200*mib+outside+8*mib {
		t.Errorf("200 MiB live: limit %d MiB is above what GOGC 100 would use: auto would not bound anything", got/mib)
	}
	if autoLimit(AutoMemoryFloor, memStats{live: math.MaxUint64 / 2}) != math.MaxInt64 {
		t.Error("an absurd reading must give no limit, not an overflow")
	}
}

// TestGovernorFollowsTheLiveHeap reads the real runtime: a heap that outgrows the floor raises the
// limit above what is live (no collection spiral), and the limit falls back once it is freed.
func TestGovernorFollowsTheLiveHeap(t *testing.T) {
	g := newMemoryGovernor(AutoMemoryFloor)
	var set []int64
	g.set = func(v int64) int64 { set = append(set, v); return 0 }
	runtime.GC()
	if lim := g.step(); lim != AutoMemoryFloor {
		t.Fatalf("idle test process: limit %d, want the floor %d", lim, AutoMemoryFloor)
	}
	live := make([][]byte, 96)
	for i := range live {
		live[i] = bytes.Repeat([]byte{byte(i)}, 1<<20)
	}
	runtime.GC()
	lim := g.step()
	if lim < 96<<20*(100+autoHeadroom)/100 {
		t.Errorf("96 MiB live: limit %d MiB, want at least %d MiB", lim>>20, (96<<20*(100+autoHeadroom)/100)>>20)
	}
	runtime.KeepAlive(live)
	live = nil
	runtime.GC()
	if lim := g.step(); lim != AutoMemoryFloor {
		t.Errorf("heap freed: limit %d MiB, want the floor again", lim>>20)
	}
	if len(set) != 3 {
		t.Errorf("limit set %d times, want 3 (only on change): %v", len(set), set)
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
