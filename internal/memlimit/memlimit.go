// Package memlimit sets Go's soft memory limit for a long-running process: "auto" holds it at a floor
// and raises it with the live heap the process keeps, "off" leaves Go alone, a size fixes it.
package memlimit

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

// Setting is a memory_limit option: Auto (the zero value), Off, or a fixed size in bytes.
type Setting int64

const (
	// Auto: the limit is the floor, raised to Headroom over the live heap the process keeps.
	Auto Setting = 0
	// Off: no limit from the config (Go's default, or GOMEMLIMIT and GOGC from the environment).
	Off Setting = -1
)

// UnmarshalConfig implements config.Unmarshaler: "auto", "off", or a size such as 256MiB ("0" is off,
// as the option meant before auto existed).
func (s *Setting) UnmarshalConfig(d *config.Decoder, n *yaml.Node, path string) {
	text, ok := d.Scalar(n, path)
	if !ok || text == "" {
		return
	}
	switch strings.ToLower(strings.TrimSpace(text)) {
	case "auto":
		*s = Auto
		return
	case "off":
		*s = Off
		return
	}
	v, err := config.ParseByteSize(text)
	if err != nil {
		d.Errorf(n, path, "want auto, off or a size such as 256MiB: %v", err)
		return
	}
	if v == 0 {
		*s = Off
		return
	}
	*s = Setting(v)
}

func (s Setting) String() string {
	switch {
	case s == Auto:
		return "auto"
	case s < 0:
		return "off"
	}
	return config.ByteSize(s).String()
}

// MarshalJSON writes the setting as a config file would (for the effective config).
func (s Setting) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// Check reports a fixed limit below least: the process would spend its time collecting garbage.
func (s Setting) Check(r config.Report, field string, least int64) {
	if s > 0 && int64(s) < least {
		r.Errorf(field, "%s is below %s: the process would spend its time collecting garbage (auto or off are safe)",
			config.ByteSize(s), config.ByteSize(least))
	}
}

// Policy is what auto does.
type Policy struct {
	// Floor is the limit while the live heap is small: the heap is collected before it grows past
	// it, instead of doubling what is live (Go's GOGC=100).
	Floor int64
	// Headroom is the least growth between two collections auto allows, in percent of the live heap
	// it keeps (GOGC's unit): a limit below the live heap would make Go collect without end (up to
	// half the CPU).
	Headroom int
	// Window: the live heap auto follows is the smallest seen over this long, so a burst (a backlog
	// being ingested) is collected harder within the limit while a state that stays bigger raises it.
	Window time.Duration
}

// Apply sets the limit of s for this process. For auto it returns the loop that follows the live
// heap until its ctx ends (run it in a goroutine), else nil. GOMEMLIMIT or GOGC in the environment
// (lookup) win over auto: whoever set them chose the trade-off; a fixed size wins over both, as the
// config's explicit word; off leaves Go and the environment alone. It logs what is in force.
func Apply(s Setting, p Policy, lookup func(string) (string, bool), log *slog.Logger) (follow func(context.Context)) {
	switch {
	case s > 0:
		debug.SetMemoryLimit(int64(s))
		log.Info("memory limit", "memory_limit", s.String())
		return nil
	case s < 0:
		log.Info("memory limit", "memory_limit", "off", "GOMEMLIMIT", env(lookup, "GOMEMLIMIT"), "GOGC", env(lookup, "GOGC"))
		return nil
	}
	for _, k := range []string{"GOMEMLIMIT", "GOGC"} {
		if v, ok := lookup(k); ok && v != "" {
			log.Info("memory limit: auto steps aside for the environment", "memory_limit", "auto",
				"GOMEMLIMIT", env(lookup, "GOMEMLIMIT"), "GOGC", env(lookup, "GOGC"))
			return nil
		}
	}
	g, r := newGovernor(p, debug.SetMemoryLimit), newReader()
	lim := g.step(time.Now(), r.read())
	log.Info("memory limit", "memory_limit", "auto", "floor", config.ByteSize(p.Floor), "limit", config.ByteSize(lim))
	return func(ctx context.Context) {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				if lim := g.step(now, r.read()); lim != 0 {
					log.Debug("memory limit raised or lowered", "limit", config.ByteSize(lim))
				}
			}
		}
	}
}

// interval is how often auto looks at the live heap: a heap that outgrew the limit costs at most
// this long of Go's 50 % CPU cap before the limit follows it (after Window).
const interval = time.Second

func env(lookup func(string) (string, bool), k string) string {
	if v, ok := lookup(k); ok {
		return v
	}
	return ""
}

// stats are the runtime figures the governor reads.
type stats struct {
	live, stacks, globals uint64 // what GOGC's goal is made of
	held                  uint64 // mapped by the runtime and not returned to the OS (what the limit counts)
	heap                  uint64 // of which the heap's spans (objects, unused, free)
}

var metricNames = []string{
	"/gc/heap/live:bytes", // marked live at the end of the last cycle
	"/gc/scan/stack:bytes",
	"/gc/scan/globals:bytes",
	"/memory/classes/total:bytes",
	"/memory/classes/heap/released:bytes",
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/unused:bytes",
	"/memory/classes/heap/free:bytes",
}

// reader reads the figures into samples it keeps (one reading a second, no allocation).
type reader struct{ s []rtmetrics.Sample }

func newReader() *reader {
	r := &reader{s: make([]rtmetrics.Sample, len(metricNames))}
	for i, n := range metricNames {
		r.s[i].Name = n
	}
	return r
}

func (r *reader) read() stats {
	rtmetrics.Read(r.s)
	var v [8]uint64
	for i := range r.s {
		if r.s[i].Value.Kind() == rtmetrics.KindUint64 {
			v[i] = r.s[i].Value.Uint64()
		}
	}
	return stats{live: v[0], stacks: v[1], globals: v[2], held: v[3] - min(v[3], v[4]), heap: v[5] + v[6] + v[7]}
}

// governor keeps the limit at the larger of the floor and Headroom over the smallest live heap of
// the last Window, plus what the runtime holds outside the heap.
type governor struct {
	p    Policy
	set  func(int64) int64 // debug.SetMemoryLimit; a test watches it
	seen []reading         // the window's readings, oldest first
	last int64
}

type reading struct {
	at   time.Time
	live uint64
}

func newGovernor(p Policy, set func(int64) int64) *governor { return &governor{p: p, set: set} }

// step takes one reading and sets the limit; it returns the limit when it changed, else 0.
func (g *governor) step(now time.Time, s stats) int64 {
	g.seen = append(g.seen, reading{now, s.live + s.stacks + s.globals})
	i := 0
	for i < len(g.seen)-1 && now.Sub(g.seen[i].at) > g.p.Window {
		i++
	}
	g.seen = g.seen[:copy(g.seen, g.seen[i:])] // in place: the window's readings, not a growing array
	least := g.seen[0].live
	for _, r := range g.seen[1:] {
		least = min(least, r.live)
	}
	lim := limit(g.p, least, s)
	if lim == g.last {
		return 0
	}
	g.set(lim)
	g.last = lim
	return lim
}

// limit is the floor, or the heap Headroom allows over what is kept plus what the runtime holds
// outside the heap (stacks, metadata, buffers), whichever is larger.
func limit(p Policy, kept uint64, s stats) int64 {
	outside := float64(s.held) - float64(s.heap)
	want := float64(kept)*(1+float64(p.Headroom)/100) + max(0, outside)
	if want >= math.MaxInt64 {
		return math.MaxInt64
	}
	return max(p.Floor, int64(want))
}
