package agent

import (
	"context"
	"log/slog"

	"github.com/gemba-io/gemba/internal/memlimit"
)

// MemoryLimit is agent.memory_limit: auto (the zero value and the default), off (or 0), or a fixed
// size for Go's soft memory limit (internal/memlimit).
type MemoryLimit = memlimit.Setting

const (
	// MemoryAuto keeps Go's soft limit at AutoMemoryFloor, raised with the live heap (MemoryPolicy).
	MemoryAuto = memlimit.Auto
	// MemoryOff sets no limit: Go's default, or GOMEMLIMIT and GOGC from the environment.
	MemoryOff = memlimit.Off

	// AutoMemoryFloor is auto's limit while the live heap is small. 5,000 OPC UA variables keep
	// 11–15 MiB live; at 32 MiB the agent's peak RSS (heap + binary + Badger's mapped pages) stayed
	// under 50 MiB (45.8–49.1 MiB in five runs) where GOGC 100 alone let the heap double to 54–55 MiB;
	// 28 MiB took 1.7× the collections for 1–2 MiB (docs/BENCHMARKS.md).
	AutoMemoryFloor = 32 << 20
	// minFixedLimit: below it the agent's own baseline leaves the collector nothing to work with.
	minFixedLimit = 16 << 20
)

// MemoryPolicy is auto for the agent. Headroom 50: the collector always has half the live heap to
// grow into, so a bigger gateway costs at most GOGC=50's collections (twice Go's default) instead of
// a limit under the live heap making Go collect without end. No window: the agent's heap follows
// its collectors (a reload that adds PLCs raises it for good), so the limit follows at once.
var MemoryPolicy = memlimit.Policy{Floor: AutoMemoryFloor, Headroom: 50}

// ApplyMemoryLimit applies agent.memory_limit to this process with MemoryPolicy (memlimit.Apply):
// for auto it returns the loop that follows the live heap until its ctx ends, else nil. GOMEMLIMIT
// or GOGC in the environment win over auto; a fixed size wins over them; off leaves Go alone.
func ApplyMemoryLimit(m MemoryLimit, lookup func(string) (string, bool), log *slog.Logger) (follow func(context.Context)) {
	return memlimit.Apply(m, MemoryPolicy, lookup, log)
}
