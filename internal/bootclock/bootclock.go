// Package bootclock reads the machine's boot: its id and the time since it. Both survive a
// restart of a process, not of the machine: within one boot they tell the time a process was
// stopped from a step of the wall clock made meanwhile (an NTP step on a gateway without an RTC
// battery). The buffer and the feature engine both judge their restarts by it.
package bootclock

import (
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Read returns the boot's id (Linux's /proc/sys/kernel/random/boot_id) and the time since it,
// suspend included (CLOCK_BOOTTIME). ok is false when they are not known.
func Read() (id string, since time.Duration, ok bool) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	var ts unix.Timespec
	if err != nil || unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts) != nil {
		return "", 0, false
	}
	return strings.TrimSpace(string(b)), time.Duration(ts.Nano()), true
}
