package agent

import (
	"context"
	"encoding/json"
	"log/slog"
	"math"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/gemba-io/gemba/config"
)

// MemoryLimit is agent.memory_limit: "auto" (the zero value and the default), "off" (or 0), or a
// fixed size for Go's soft memory limit (runtime/debug.SetMemoryLimit).
type MemoryLimit int64

const (
	// MemoryAuto keeps Go's soft limit at AutoMemoryFloor, raised with the live heap so that the
	// collector always has at least half the live heap of headroom (see ApplyMemoryLimit).
	MemoryAuto MemoryLimit = 0
	// MemoryOff sets no limit: Go's default, or GOMEMLIMIT and GOGC from the environment.
	MemoryOff MemoryLimit = -1

	// AutoMemoryFloor is auto's limit while the live heap is small. 5,000 OPC UA variables keep
	// 11–15 MiB live; at 32 MiB the agent's peak RSS (heap + binary + Badger's mapped pages) stayed
	// under 50 MiB, where GOGC 100 alone let the heap double to a 55 MiB peak (docs/BENCHMARKS.md).
	AutoMemoryFloor = 32 << 20
	// autoHeadroom is the least heap growth between two collections auto allows, as a share of what
	// is live (GOGC's percent): 50 at most doubles the collector's work against GOGC 100, while a
	// fixed limit below the live heap makes Go spend up to half the CPU collecting.
	autoHeadroom = 50
	// minFixedLimit: below it the agent's own baseline leaves the collector nothing to work with.
	minFixedLimit = 16 << 20
	// autoInterval is how often auto follows the live heap; between two looks a heap that outgrew
	// the limit costs the GC at most one interval of Go's 50 % CPU cap.
	autoInterval = time.Second
)

// UnmarshalConfig implements config.Unmarshaler: "auto", "off", or a size ("0" is off, as before
// auto existed).
func (m *MemoryLimit) UnmarshalConfig(d *config.Decoder, n *yaml.Node, path string) {
	s, ok := d.Scalar(n, path)
	if !ok || s == "" {
		return
	}
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "auto":
		*m = MemoryAuto
		return
	case "off":
		*m = MemoryOff
		return
	}
	v, err := config.ParseByteSize(s)
	if err != nil {
		d.Errorf(n, path, "want auto, off or a size such as 64MiB: %v", err)
		return
	}
	if v == 0 {
		*m = MemoryOff
		return
	}
	*m = MemoryLimit(v)
}

func (m MemoryLimit) String() string {
	switch {
	case m == MemoryAuto:
		return "auto"
	case m < 0:
		return "off"
	}
	return config.ByteSize(m).String()
}

// MarshalJSON renders the setting as the file writes it (for the effective config).
func (m MemoryLimit) MarshalJSON() ([]byte, error) { return json.Marshal(m.String()) }

// check reports a fixed limit too small to run in.
func (m MemoryLimit) check(r config.Report, field string) {
	if m > 0 && m < minFixedLimit {
		r.Errorf(field, "%s is below %s: the agent would spend its time collecting garbage (auto or off are safe)", config.ByteSize(m), config.ByteSize(minFixedLimit))
	}
}

// ApplyMemoryLimit applies agent.memory_limit to this process. For auto it returns the loop that
// follows the live heap until its ctx ends (run it in a goroutine); otherwise nil. GOMEMLIMIT or
// GOGC in the environment (lookup) win over auto: whoever set them chose the trade-off. A fixed
// size wins over both, as the config's explicit word; off leaves Go (and the environment) alone.
// It logs what is in force.
func ApplyMemoryLimit(m MemoryLimit, lookup func(string) (string, bool), log *slog.Logger) (follow func(context.Context)) {
	switch {
	case m > 0:
		debug.SetMemoryLimit(int64(m))
		log.Info("memory limit", "memory_limit", m.String())
		return nil
	case m < 0:
		log.Info("memory limit", "memory_limit", "off", "GOMEMLIMIT", env(lookup, "GOMEMLIMIT"), "GOGC", env(lookup, "GOGC"))
		return nil
	}
	for _, k := range []string{"GOMEMLIMIT", "GOGC"} {
		if v, ok := lookup(k); ok && v != "" {
			log.Info("memory limit: auto steps aside for the environment", "memory_limit", "auto", "GOMEMLIMIT", env(lookup, "GOMEMLIMIT"), "GOGC", env(lookup, "GOGC"))
			return nil
		}
	}
	g := newMemoryGovernor(AutoMemoryFloor)
	lim := g.step()
	log.Info("memory limit", "memory_limit", "auto", "floor", config.ByteSize(AutoMemoryFloor), "limit", config.ByteSize(lim))
	return func(ctx context.Context) {
		t := time.NewTicker(autoInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				g.step()
			}
		}
	}
}

func env(lookup func(string) (string, bool), k string) string {
	if v, ok := lookup(k); ok {
		return v
	}
	return ""
}

// memoryGovernor keeps Go's soft limit at the larger of a floor and what GOGC=autoHeadroom would
// let the process grow to, so the limit trims the heap's doubling while the heap is small and
// never forces collections closer together than GOGC=autoHeadroom would when it is large.
type memoryGovernor struct {
	floor   int64
	samples []rtmetrics.Sample
	set     func(int64) int64 // debug.SetMemoryLimit; a test may watch it
	last    int64
}

var governorMetrics = [...]string{
	"/gc/heap/live:bytes",                 // marked live at the end of the last cycle
	"/gc/scan/stack:bytes",                // counted into GOGC's goal since Go 1.18
	"/gc/scan/globals:bytes",              // likewise
	"/memory/classes/total:bytes",         // all the runtime mapped...
	"/memory/classes/heap/released:bytes", // ...less what it returned to the OS (as the limit counts)
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/unused:bytes",
	"/memory/classes/heap/free:bytes",
}

func newMemoryGovernor(floor int64) *memoryGovernor {
	g := &memoryGovernor{floor: floor, set: debug.SetMemoryLimit}
	for _, n := range governorMetrics {
		g.samples = append(g.samples, rtmetrics.Sample{Name: n})
	}
	return g
}

// memStats is the part of runtime/metrics the governor reads.
type memStats struct {
	live, stacks, globals uint64
	total, released       uint64
	objects, unused, free uint64
}

// step reads the runtime's figures and sets the limit; it returns the limit set.
func (g *memoryGovernor) step() int64 {
	rtmetrics.Read(g.samples)
	var v [len(governorMetrics)]uint64
	for i, s := range g.samples {
		if s.Value.Kind() == rtmetrics.KindUint64 {
			v[i] = s.Value.Uint64()
		}
	}
	lim := autoLimit(g.floor, memStats{live: v[0], stacks: v[1], globals: v[2], total: v[3], released: v[4], objects: v[5], unused: v[6], free: v[7]})
	if lim != g.last {
		g.set(lim)
		g.last = lim
	}
	return lim
}

// autoLimit is the limit for one reading: the floor, or the heap GOGC=autoHeadroom aims at (live
// plus autoHeadroom % of live, stacks and globals, as Go's pacer counts) plus what the runtime
// holds outside the heap (stacks, metadata, buffers), with 1/8 for fragmentation and the pacer's
// own margin under a limit, whichever is larger.
func autoLimit(floor int64, s memStats) int64 {
	goal := float64(s.live) + float64(s.live+s.stacks+s.globals)*autoHeadroom/100
	held := float64(s.total) - float64(s.released)
	heap := float64(s.objects + s.unused + s.free)
	outside := max(0, held-heap)
	want := goal*9/8 + outside + 1<<20
	if want >= math.MaxInt64 {
		return math.MaxInt64
	}
	return max(floor, int64(want))
}
