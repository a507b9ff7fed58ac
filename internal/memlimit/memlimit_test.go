package memlimit

import (
	"context"
	"log/slog"
	"math"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/gemba-io/gemba/config"
)

type doc struct {
	Limit Setting `yaml:"memory_limit"`
}

func TestSettingParses(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Setting
	}{
		{"auto", Auto}, {"AUTO", Auto}, {"off", Off}, {"0", Off}, {"0B", Off}, {"256MiB", 256 << 20},
	} {
		d := doc{Limit: 1}
		if err := config.NewDecoder().Unmarshal([]byte("memory_limit: "+c.in+"\n"), &d); err != nil {
			t.Fatalf("%q: %v", c.in, err)
		}
		if d.Limit != c.want {
			t.Errorf("%q: got %v, want %v", c.in, d.Limit, c.want)
		}
	}
	d := doc{}
	err := config.NewDecoder().Unmarshal([]byte("\nmemory_limit: lots\n"), &d)
	if err == nil || !strings.Contains(err.Error(), "memory_limit") || !strings.Contains(err.Error(), "line 2") ||
		!strings.Contains(err.Error(), "auto, off or a size") {
		t.Errorf("a bad value must be refused with its path, line and what is accepted: %v", err)
	}
	for s, want := range map[Setting]string{Auto: "auto", Off: "off", 256 << 20: "256MiB"} {
		if got := s.String(); got != want {
			t.Errorf("%d: String %q, want %q", s, got, want)
		}
		if j, _ := s.MarshalJSON(); string(j) != `"`+want+`"` {
			t.Errorf("%d: JSON %s", s, j)
		}
	}
}

type checked struct {
	Limit Setting `yaml:"memory_limit"`
}

func (c *checked) Validate(r config.Report) { c.Limit.Check(r, "memory_limit", 32<<20) }

func TestCheckRefusesATinyFixedLimit(t *testing.T) {
	err := config.NewDecoder().Unmarshal([]byte("memory_limit: 8MiB\n"), &checked{})
	if err == nil || !strings.Contains(err.Error(), "memory_limit") || !strings.Contains(err.Error(), "8MiB is below 32MiB") {
		t.Errorf("8MiB: want a problem naming the field and the least, got %v", err)
	}
	for _, ok := range []string{"auto", "off", "0B", "64MiB"} {
		if err := config.NewDecoder().Unmarshal([]byte("memory_limit: "+ok+"\n"), &checked{}); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
}

// A governor's limit: the floor while the heap is small; Headroom over the smallest live heap of the
// window plus what the runtime holds outside the heap once that is larger; a burst shorter than the
// window does not raise it, a heap that stays bigger does, and it comes back down.
func TestGovernorFollowsTheHeapItKeeps(t *testing.T) {
	var set []int64
	p := Policy{Floor: 100 << 20, Headroom: 25, Window: 10 * time.Second}
	g := newGovernor(p, func(l int64) int64 { set = append(set, l); return 0 })
	t0 := time.Now()
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	mib := func(n uint64) stats { return stats{live: n << 20, held: n<<20 + 8<<20, heap: n << 20} }
	if l := g.step(at(0), mib(40)); l != 100<<20 {
		t.Fatalf("small heap: limit %d, want the floor", l)
	}
	if l := g.step(at(1), mib(40)); l != 0 {
		t.Errorf("unchanged limit set again: %d", l)
	}
	for s := 2; s < 8; s++ { // a burst to 150 MiB for 6 s: squeezed under the floor, not followed
		if l := g.step(at(s), mib(150)); l != 0 {
			t.Errorf("burst at %ds raised the limit to %d", s, l)
		}
	}
	var l int64
	for s := 8; s <= 20; s++ { // the heap stays at 150 MiB: once the window has only that, it is followed
		if v := g.step(at(s), mib(150)); v != 0 {
			l = v
		}
	}
	if want := int64(150<<20)*125/100 + 8<<20; l != want {
		t.Errorf("kept 150 MiB: limit %d MiB, want %d MiB", l>>20, want>>20)
	}
	for s := 21; s <= 40; s++ {
		g.step(at(s), mib(30))
	}
	if last := set[len(set)-1]; last != 100<<20 {
		t.Errorf("heap back to 30 MiB: limit %d MiB, want the floor", last>>20)
	}
	if l := limit(p, math.MaxUint64, stats{}); l != math.MaxInt64 {
		t.Errorf("overflow: %d", l)
	}
}

// Apply: a fixed size is set as is and wins over the environment; auto steps aside for GOMEMLIMIT or
// GOGC; auto sets the floor (a small test heap) and its loop stops with its context; off sets nothing.
func TestApply(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })
	log := slog.New(slog.DiscardHandler)
	p := Policy{Floor: 3 << 30, Headroom: 25, Window: time.Minute}
	noEnv := func(string) (string, bool) { return "", false }

	debug.SetMemoryLimit(math.MaxInt64)
	if f := Apply(Setting(5<<30), p, func(string) (string, bool) { return "1GiB", true }, log); f != nil {
		t.Error("a fixed limit has no loop")
	}
	if got := debug.SetMemoryLimit(-1); got != 5<<30 {
		t.Errorf("fixed: limit %d, want 5GiB", got)
	}
	debug.SetMemoryLimit(math.MaxInt64)
	if f := Apply(Off, p, noEnv, log); f != nil || debug.SetMemoryLimit(-1) != math.MaxInt64 {
		t.Error("off must leave the limit alone")
	}
	for _, k := range []string{"GOMEMLIMIT", "GOGC"} {
		env := func(n string) (string, bool) { return "50", n == k }
		if f := Apply(Auto, p, env, log); f != nil || debug.SetMemoryLimit(-1) != math.MaxInt64 {
			t.Errorf("auto with %s in the environment must leave the limit alone", k)
		}
	}
	f := Apply(Auto, p, noEnv, log)
	if f == nil {
		t.Fatal("auto returns its loop")
	}
	if got := debug.SetMemoryLimit(-1); got != 3<<30 {
		t.Errorf("auto with a small heap: limit %d, want the 3GiB floor", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f(ctx); close(done) }()
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("auto's loop did not stop with its context")
	}
}

// A step (once a second for the process's life) allocates nothing once its window is full.
func TestStepAllocatesNothing(t *testing.T) {
	g, r := newGovernor(Policy{Floor: 1 << 40, Headroom: 25, Window: 5 * time.Second}, func(int64) int64 { return 0 }), newReader()
	now := time.Now()
	for range 10 {
		now = now.Add(time.Second)
		g.step(now, r.read())
	}
	if n := testing.AllocsPerRun(100, func() { now = now.Add(time.Second); g.step(now, r.read()) }); n != 0 {
		t.Errorf("%v allocations per step", n)
	}
}
