// Package benchset holds what the rule benchmarks of hub/decide and hub/decide/rules share: the
// 20-rule set they evaluate and the process CPU time they report.
package benchset

import (
	"fmt"
	"strings"
	"syscall"
	"time"
)

// Size is how many rules Rules writes.
const Size = 20

// conds are the condition kinds the examples use: inventory thresholds, line states, features with
// freshness checks, neighbours, time. Each %d takes a threshold that differs from rule to rule.
var conds = []string{
	`inventory.days_of_cover > %d && lines.exists(l, l.state == "running" && !l.stale)`,
	`lines.size() > 0 && lines.all(l, l.state == "down") && inventory.days_of_cover < %d`,
	`has(features.units) && !features.units.stale && features.units.value > %d.0`,
	`inventory.on_hand > %d && inventory.daily_rate < 5.0`,
	`"web" in neighbours.channels && inventory.position > %d`,
	`has(features.availability) && !features.availability.stale && features.availability.value < 0.%d`,
	`now.getHours("UTC") >= %d && inventory.days_of_cover > 10`,
	`sku.id.startsWith("A-") && neighbours.substitutes.size() > 0 && inventory.on_hand > %d`,
	`lines.exists(l, l.units_per_hour > %d.0) && inventory.days_of_cover > 20`,
	`inventory.produced - inventory.sold > %d.0`,
}

// Rules is the YAML of the benchmark rule set: Size rules, promotions and holds in turn, with the
// collect hit policy so that every rule runs for every SKU. It is the source, not a loaded set,
// so that package rules' own tests can use it without importing themselves.
func Rules() []byte {
	var b strings.Builder
	b.WriteString("name: bench\nhit_policy: collect\nrules:\n")
	for i := range Size {
		fmt.Fprintf(&b, "  - name: r%d\n    when: '%s'\n", i, strings.ReplaceAll(fmt.Sprintf(conds[i%len(conds)], 10+i), "'", "''"))
		if i%2 == 0 {
			fmt.Fprintf(&b, "    promote: {channels: [web], discount: %d, duration: 24h}\n", 5+i)
		} else {
			fmt.Fprintf(&b, "    hold: {channels: [web], reason: r%d}\n", i)
		}
	}
	return []byte(b.String())
}

// CPUTime is the CPU time (user and system) the process has used: on a shared machine the wall
// clock includes waiting for a core, CPU time is what the work costs.
func CPUTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
