package sim

import "maps"

// Production is a machine's own record of what it did since the plant was built, for comparing
// against what the agent and the hub derive from the published signals.
//
// Step i's parts are booked under the SKU the machine runs after the step, and the step's simulated
// seconds (Tick x Speed) under the state it ends in: that SKU, state and parts counter are what step
// i publishes, and they hold until step i+1. So a consumer that holds each published state until the
// next sample, and attributes each counter increase to the SKU sampled with it, finds exactly these
// numbers over the steps it saw.
type Production struct {
	Parts   map[string]int64   // parts produced, by SKU
	Seconds map[string]float64 // simulated seconds, by state (running, idle, down, changeover)
}

// Clone returns a deep copy.
func (p Production) Clone() Production {
	return Production{Parts: maps.Clone(p.Parts), Seconds: maps.Clone(p.Seconds)}
}

// Production returns a copy of the machine's record. Like Step, it is not safe while the plant is
// being stepped: use Sim.Production for a running simulator.
func (m *Machine) Production() Production { return m.prod.Clone() }

// Production returns a copy of every machine's record (by DeviceID, <line>.<machine>) and the number
// of steps taken, taken under the step lock: it is the state of the last published step.
func (s *Sim) Production() (map[string]Production, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]Production, len(s.plant.Machines))
	for _, m := range s.plant.Machines {
		out[DeviceID(m)] = m.prod.Clone()
	}
	return out, s.plant.Steps()
}
