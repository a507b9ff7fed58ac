// Package sim is a simulated plant that speaks the real protocols: an OPC UA server (gopcua's server
// package, security None) and MQTT publishers (JSON telemetry and one Sparkplug B edge node). The demo,
// the chaos suite and operators trying their YAML point a real gemba-agent at it.
//
// The plant model is deterministic: with the same seed and the same number of steps every signal takes
// the same values (timestamps come from the clock and are not part of that promise).
package sim

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"
)

// Protocol is how a machine's signals leave the plant.
type Protocol string

// Protocols a machine can speak.
const (
	OPCUA     Protocol = "opcua"     // one variable per signal on the OPC UA server
	MQTTJSON  Protocol = "mqtt"      // one JSON message per machine and tick
	Sparkplug Protocol = "sparkplug" // a device of the plant's Sparkplug B edge node
)

// Config sizes the plant. The zero value of a field takes the default from DefaultConfig.
type Config struct {
	Seed uint64
	Site string // MQTT topic root and Sparkplug group id
	// Lines and MachinesPerLine size the plant; ExtraSignals adds that many analog sensors to every
	// machine for load tests (lines x machines x (7 + extra) signals in all).
	Lines, MachinesPerLine, ExtraSignals int
	// Tick is the wall-clock period of one step; Speed is how many simulated seconds pass per wall
	// second (dwell times are minutes, so the demo runs the plant fast).
	Tick  time.Duration
	Speed float64
	// Layout picks each machine's protocol; nil uses DefaultLayout.
	Layout func(line, machine, machines int) Protocol
}

// DefaultConfig is a small plant: 2 lines of 3 machines, one step a second, real time.
func DefaultConfig() Config {
	return Config{Seed: 1, Site: "plant1", Lines: 2, MachinesPerLine: 3, Tick: time.Second, Speed: 1}
}

// DefaultLayout puts the last machine of every line on the Sparkplug B edge node, the others of odd
// lines (line1, line3, ...) on OPC UA and those of even lines on MQTT JSON, so every protocol carries
// production data.
func DefaultLayout(line, machine, machines int) Protocol {
	switch {
	case machines > 1 && machine == machines-1:
		return Sparkplug
	case line%2 == 0:
		return OPCUA
	default:
		return MQTTJSON
	}
}

// MaxExtraSignals is the most extra signals a machine can have: its Sparkplug B aliases must stay
// below the next machine's (aliasStride apart).
const MaxExtraSignals = aliasStride - basePoints

// check refuses a plant New cannot run; NewPlant itself never fails.
func (c Config) check() error {
	if c.ExtraSignals < 0 || c.ExtraSignals > MaxExtraSignals {
		return fmt.Errorf("plant: %d extra signals per machine: want 0 to %d", c.ExtraSignals, MaxExtraSignals)
	}
	return nil
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	c.ExtraSignals = max(c.ExtraSignals, 0) // a negative count would make no room for the base points
	if c.Site == "" {
		c.Site = d.Site
	}
	if c.Lines <= 0 {
		c.Lines = d.Lines
	}
	if c.MachinesPerLine <= 0 {
		c.MachinesPerLine = d.MachinesPerLine
	}
	if c.Tick <= 0 {
		c.Tick = d.Tick
	}
	if c.Speed <= 0 {
		c.Speed = d.Speed
	}
	if c.Layout == nil {
		c.Layout = DefaultLayout
	}
	return c
}

// machineNames are the stations of a line, in flow order; lines longer than this get numbered ones.
var machineNames = []string{"press", "weld", "paint", "assembly", "test", "pack"}

// States of a machine.
const (
	Running    = "running"
	Idle       = "idle"
	Down       = "down"
	Changeover = "changeover"
)

// Kind is the type of a signal's value.
type Kind uint8

// Value kinds.
const (
	Float Kind = iota
	Int
	String
)

// Point is the current value of one signal.
type Point struct {
	Field string // the machine-local name: temperature, parts, state, ...
	Kind  Kind
	F     float64
	I     int64
	S     string
	Bad   bool // a bad-quality moment (sensor fault): the value is not to be trusted
}

// Machine is one station with a state machine and its sensors.
type Machine struct {
	Line, Name string
	Protocol   Protocol
	// Points are the signals in a fixed order: state, sku, parts, fault, temperature, vibration,
	// power, then the extra sensors s000...
	Points []Point

	rng        *rand.Rand
	skus       []string
	dwell      float64 // simulated seconds left in the current state
	partAcc    float64
	cycle      float64 // seconds per part at this machine
	drift      float64 // slow sensor drift of the temperature, degrees
	badLeft    float64 // seconds left in a bad-quality moment
	extraLevel []float64
	prod       Production // the machine's own record of what it did (see Production)
}

// Point indexes.
const (
	pState = iota
	pSKU
	pParts
	pFault
	pTemp
	pVib
	pPower
	basePoints
)

// Signal is the signal name the demo configs map this machine's field to: <line>.<machine>.<field>.
func (m *Machine) Signal(field string) string { return m.Line + "." + m.Name + "." + field }

// Plant is the whole simulated plant. Step and the fields it changes are not safe for concurrent use;
// the Sim runner serialises them.
type Plant struct {
	Config   Config
	Machines []*Machine
	steps    uint64
}

// NewPlant builds the plant of cfg in its initial state.
func NewPlant(cfg Config) *Plant {
	cfg = cfg.withDefaults()
	p := &Plant{Config: cfg}
	for l := 0; l < cfg.Lines; l++ {
		line := fmt.Sprintf("line%d", l+1)
		skus := []string{fmt.Sprintf("A-%d00", l+1), fmt.Sprintf("B-%d10", l+1), fmt.Sprintf("C-%d20", l+1)}
		for k := 0; k < cfg.MachinesPerLine; k++ {
			name := fmt.Sprintf("m%02d", k+1)
			if cfg.MachinesPerLine <= len(machineNames) {
				name = machineNames[k]
				if k == cfg.MachinesPerLine-1 && k > 0 {
					name = "pack" // the end of every line counts finished units
				}
			}
			// One stream per machine, so adding machines never changes the existing ones' values.
			rng := rand.New(rand.NewPCG(cfg.Seed, uint64(l)<<32|uint64(k)))
			m := &Machine{Line: line, Name: name, Protocol: cfg.Layout(l, k, cfg.MachinesPerLine), rng: rng, skus: skus,
				cycle: 1.5 + rng.Float64()*2, drift: 0}
			m.Points = make([]Point, basePoints+cfg.ExtraSignals)
			for i, f := range []string{"state", "sku", "parts", "fault", "temperature", "vibration", "power"} {
				m.Points[i].Field = f
			}
			m.Points[pState].Kind, m.Points[pSKU].Kind = String, String
			m.Points[pParts].Kind, m.Points[pFault].Kind = Int, Int
			m.Points[pState].S = Running
			m.Points[pSKU].S = skus[rng.IntN(len(skus))]
			// Counters start at zero, as a PLC's that does not retain them: a restarted simulator is
			// then a counter reset, which consumers take exactly (increase = the new value). The draw
			// of the start value they once had stays, so that a seed keeps every other value.
			_ = rng.IntN(10000)
			m.Points[pTemp].F = 25
			m.dwell = 30 + rng.Float64()*300
			m.prod = Production{Parts: map[string]int64{}, Seconds: map[string]float64{}}
			m.extraLevel = make([]float64, cfg.ExtraSignals)
			for i := range cfg.ExtraSignals {
				m.Points[basePoints+i] = Point{Field: fmt.Sprintf("s%03d", i), Kind: Float}
				m.extraLevel[i] = 10 + rng.Float64()*90
			}
			p.Machines = append(p.Machines, m)
		}
	}
	return p
}

// Signals is the number of signals of the plant.
func (p *Plant) Signals() int {
	n := 0
	for _, m := range p.Machines {
		n += len(m.Points)
	}
	return n
}

// Steps is the number of steps taken.
func (p *Plant) Steps() uint64 { return p.steps }

// Step advances the plant by one tick (Tick x Speed simulated seconds).
func (p *Plant) Step() {
	dt := p.Config.Tick.Seconds() * p.Config.Speed
	for _, m := range p.Machines {
		m.step(dt)
	}
	p.steps++
}

// dwellFor draws how long a machine stays in a state, in simulated seconds: exponential around a
// mean with a floor, which is how shop-floor state durations look.
func (m *Machine) dwellFor(state string) float64 {
	mean, floor := 0.0, 0.0
	switch state {
	case Running:
		mean, floor = 300, 30
	case Idle:
		mean, floor = 45, 5
	case Down:
		mean, floor = 120, 20
	case Changeover:
		mean, floor = 90, 40
	}
	return floor + m.rng.ExpFloat64()*mean
}

func (m *Machine) next() {
	st := &m.Points[pState]
	switch st.S {
	case Running:
		switch r := m.rng.Float64(); {
		case r < 0.15: // a fault
			st.S = Down
			m.Points[pFault].I = int64(100 + m.rng.IntN(20))
		case r < 0.55:
			st.S = Idle // starved or blocked
		default:
			st.S = Changeover
		}
	case Changeover:
		st.S = Running
		old := m.Points[pSKU].S
		for m.Points[pSKU].S == old && len(m.skus) > 1 {
			m.Points[pSKU].S = m.skus[m.rng.IntN(len(m.skus))]
		}
	default: // idle and down go back to running
		st.S = Running
		m.Points[pFault].I = 0
	}
	m.dwell = m.dwellFor(st.S)
}

func (m *Machine) step(dt float64) {
	m.dwell -= dt
	for m.dwell <= 0 {
		left := -m.dwell
		m.next()
		m.dwell -= left
	}
	state := m.Points[pState].S
	running := state == Running
	if running {
		m.partAcc += dt / m.cycle
		whole := math.Floor(m.partAcc)
		m.Points[pParts].I += int64(whole)
		m.partAcc -= whole
		m.prod.Parts[m.Points[pSKU].S] += int64(whole)
	}
	// The whole step is booked under the state it ends in, as the parts are: that state and the
	// parts counter are what this step publishes, and they hold until the next step.
	m.prod.Seconds[state] += dt

	// Temperature: a first-order approach to the state's set point, noise, a slow random-walk drift
	// and rare spikes.
	target := setPoint(state)
	alpha := 1 - math.Exp(-dt/60)
	m.drift += m.rng.NormFloat64() * 0.02 * math.Sqrt(dt)
	m.drift = max(-5, min(5, m.drift))
	base := m.Points[pTemp].F
	if m.Points[pTemp].Bad {
		base = target // a failed sensor's reading is not the process
	}
	temp := base + (target+m.drift-base)*alpha + m.rng.NormFloat64()*0.3
	if m.rng.Float64() < 0.002*dt {
		temp += 10 + m.rng.Float64()*10
	}
	m.Points[pTemp].F = round2(temp)

	vib := 0.05 + m.rng.NormFloat64()*0.01
	power := 0.4 + m.rng.Float64()*0.1
	switch state {
	case Running:
		vib = 2.2 + m.rng.NormFloat64()*0.25
		power = 14 + m.rng.NormFloat64()*0.8
		if m.rng.Float64() < 0.003*dt {
			vib *= 3 // a bearing knock
		}
	case Idle:
		power = 3 + m.rng.NormFloat64()*0.2
	case Changeover:
		power = 2 + m.rng.NormFloat64()*0.3
		vib = 0.3 + m.rng.NormFloat64()*0.05
	}
	m.Points[pVib].F = round2(math.Abs(vib))
	m.Points[pPower].F = round2(math.Max(0, power))

	// Bad-quality moments: a sensor drops out now and then for a few seconds.
	if m.badLeft > 0 {
		m.badLeft -= dt
	} else if m.rng.Float64() < 0.001*dt {
		m.badLeft = 2 + m.rng.Float64()*8
	}
	m.Points[pTemp].Bad = m.badLeft > 0

	for i := range m.extraLevel {
		m.extraLevel[i] += m.rng.NormFloat64() * 0.1 * math.Sqrt(dt)
		m.Points[basePoints+i].F = round2(m.extraLevel[i] + m.rng.NormFloat64()*0.05)
	}
}

func setPoint(state string) float64 {
	switch state {
	case Running:
		return 72
	case Idle:
		return 48
	case Changeover:
		return 40
	default:
		return 28
	}
}

func round2(f float64) float64 { return math.Round(f*100) / 100 }
