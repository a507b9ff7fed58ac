package sim

import (
	"testing"
	"time"
)

// A restarted simulator is a counter reset: its parts counters start again from zero, so a consumer
// that reads a decrease as a reset to zero (increase = the new value, as features' counters do
// without counter_max) derives exactly the machines' records over both runs. A counter that
// restarted at its seeded start value instead (0-9999) added that many phantom units to the SKU
// being made, or, above the last value of the run before, an increase that never happened.
func TestRestartIsACounterResetToZero(t *testing.T) {
	cfg := Config{Seed: 1, Lines: 2, MachinesPerLine: 3, Tick: time.Second, Speed: 30}
	derived := map[string]int64{} // by machine: the increases a consumer sees after its baseline
	booked := map[string]int64{}  // by machine: the records' parts after the baseline step
	prev := map[string]int64{}
	seen := map[string]bool{}
	for run := range 2 {
		p := NewPlant(cfg) // a restart: same seed, new process
		for step := range 400 {
			p.Step()
			for _, m := range p.Machines {
				id, cur := DeviceID(m), m.Points[pParts].I
				switch {
				case !seen[id]: // the consumer's first sample is its baseline
					seen[id] = true
				case cur >= prev[id]:
					derived[id] += cur - prev[id]
				default: // a reset to zero
					derived[id] += cur
				}
				prev[id] = cur
				if run == 0 && step == 0 {
					booked[id] -= sum(m.Production().Parts) // the baseline step's parts are not seen
				}
			}
		}
		for _, m := range p.Machines {
			booked[DeviceID(m)] += sum(m.Production().Parts)
		}
	}
	for id, want := range booked {
		if derived[id] != want {
			t.Errorf("%s: a consumer derives %d parts over the two runs, the records hold %d", id, derived[id], want)
		}
	}
}

func sum(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}
