package sim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// Options say where the simulator speaks.
type Options struct {
	Plant Config
	// OPCUA is the host:port of the OPC UA server; empty runs none (OPC UA machines then stay silent).
	OPCUA string
	// Broker is the MQTT broker URL to publish to (tcp://host:port). Empty runs none.
	Broker string
	// QoS of the JSON telemetry (Sparkplug always uses 1). Nil means 1.
	QoS *byte
	// EdgeNode is the Sparkplug B edge node id; default "edge1".
	EdgeNode string
	// ClientID prefixes the MQTT client ids; default "gemba-sim".
	ClientID string
	Logger   *slog.Logger
	// OPCUALogger receives gopcua's server log, which reports its standard nodeset import as errors;
	// nil discards it.
	OPCUALogger *slog.Logger
	// ShutdownTimeout bounds how long Close waits for the broker's outstanding acknowledgements;
	// default DefaultShutdownTimeout. A broker that is gone would otherwise hold Close for
	// ackTimeout, and a full queue of publishes for far longer.
	ShutdownTimeout time.Duration
	// Clock stamps each step's messages; nil is time.Now. A test that steps the plant itself gives
	// it a clock advancing one Tick per step, so that event time is exact and independent of how
	// fast it steps.
	Clock func() time.Time
}

// DefaultShutdownTimeout is Options.ShutdownTimeout's default.
const DefaultShutdownTimeout = 10 * time.Second

// Stats counts what the simulator did.
type Stats struct {
	Steps        uint64
	Signals      int
	MQTTAcked    uint64 // MQTT messages the broker acknowledged
	MQTTFailed   uint64 // publishes not acknowledged within the timeout (not in the ledger)
	AckedSamples uint64 // samples in acknowledged MQTT messages (the ledger)
	OPCUAUpdates uint64 // value changes published on the OPC UA server
}

// Sim runs a plant on its protocols. Start it with New, drive it with Run, stop it with Close.
type Sim struct {
	opts   Options
	log    *slog.Logger
	ledger *Ledger
	ack    *acker

	mu      sync.Mutex // the plant and the servers
	plant   *Plant
	opcuaM  []*Machine
	opcua   *opcuaServer
	json    *jsonPublisher
	edge    *edgeNode
	updates uint64
	closed  bool
}

// New builds the plant and starts its OPC UA server and MQTT clients. Nothing is published before Run.
func New(opts Options) (*Sim, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.EdgeNode == "" {
		opts.EdgeNode = "edge1"
	}
	if opts.ClientID == "" {
		opts.ClientID = "gemba-sim"
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = DefaultShutdownTimeout
	}
	if err := opts.Plant.check(); err != nil {
		return nil, err
	}
	qos := byte(1)
	if opts.QoS != nil {
		qos = *opts.QoS
	}
	s := &Sim{opts: opts, log: opts.Logger, plant: NewPlant(opts.Plant), ledger: newLedger()}
	s.ack = newAcker(s.ledger)
	var jsonM, spM []*Machine
	for _, m := range s.plant.Machines {
		switch m.Protocol {
		case OPCUA:
			s.opcuaM = append(s.opcuaM, m)
		case MQTTJSON:
			jsonM = append(jsonM, m)
		case Sparkplug:
			spM = append(spM, m)
		}
	}
	fail := func(err error) (*Sim, error) {
		s.Close()
		return nil, err
	}
	if opts.OPCUA != "" && len(s.opcuaM) > 0 {
		if err := s.startOPCUA(); err != nil {
			return fail(err)
		}
	}
	if opts.Broker != "" {
		var err error
		if len(jsonM) > 0 {
			if s.json, err = newJSONPublisher(opts.Broker, opts.ClientID+"-json", s.plant.Config.Site, qos, jsonM, s.ack); err != nil {
				return fail(err)
			}
		}
		if len(spM) > 0 {
			// bdSeq changes with every run of the simulator, as a restarted edge node's would.
			bd := uint64(time.Now().Unix() % 256)
			if s.edge, err = newEdgeNode(opts.Broker, s.plant.Config.Site, opts.EdgeNode, bd, spM, s.ack); err != nil {
				return fail(err)
			}
		}
	}
	return s, nil
}

func (s *Sim) startOPCUA() error {
	host, port, err := net.SplitHostPort(s.opts.OPCUA)
	if err != nil {
		return fmt.Errorf("opcua address %q: %w", s.opts.OPCUA, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return fmt.Errorf("opcua address %q: port: %w", s.opts.OPCUA, err)
	}
	l := s.opts.OPCUALogger
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	o, err := startOPCUA(host, p, s.opcuaM, s.opts.Clock(), l)
	if err != nil {
		return err
	}
	s.opcua = o
	return nil
}

// Plant is the simulated plant; read it only while Run is not stepping (for example after Close).
func (s *Sim) Plant() *Plant { return s.plant }

// LineEnds lists the device id of the last machine of every line, in line order: the stations that
// pack finished units. Machines never change after the plant is built, so it is safe while it runs.
func (s *Sim) LineEnds() []string {
	last := map[string]*Machine{}
	var order []string
	for _, m := range s.plant.Machines {
		if last[m.Line] == nil {
			order = append(order, m.Line)
		}
		last[m.Line] = m
	}
	var out []string
	for _, l := range order {
		out = append(out, DeviceID(last[l]))
	}
	return out
}

// Ledger is the record of acknowledged MQTT messages.
func (s *Sim) Ledger() *Ledger { return s.ledger }

// OPCUAEndpoint is the server's endpoint URL ("" without one).
func (s *Sim) OPCUAEndpoint() string {
	if s.opts.OPCUA == "" {
		return ""
	}
	return "opc.tcp://" + s.opts.OPCUA
}

// Stats returns the counters.
func (s *Sim) Stats() Stats {
	acked, failed := s.ack.counts()
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{Steps: s.plant.Steps(), Signals: s.plant.Signals(), MQTTAcked: acked, MQTTFailed: failed,
		AckedSamples: s.ledger.Samples(), OPCUAUpdates: s.updates}
}

// Step advances the plant one tick and publishes it on every protocol.
func (s *Sim) Step() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.plant.Step()
	at := s.opts.Clock()
	if s.opcua != nil {
		s.updates += uint64(s.opcua.update(s.opcuaM, at))
	}
	if s.json != nil {
		s.json.publish(at)
	}
	if s.edge != nil {
		s.edge.publish(at)
	}
}

// Run steps the plant every Tick until ctx ends. A step that overruns its tick delays the next one
// rather than piling up. Once ctx ends the step under way publishes nothing more (a broker that
// is gone would hold it), and the simulator is only good for Close.
func (s *Sim) Run(ctx context.Context) error {
	t := time.NewTicker(s.plant.Config.Tick)
	defer t.Stop()
	stop := context.AfterFunc(ctx, s.ack.shutdown)
	defer stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			s.Step()
		}
	}
}

// StopOPCUA closes the OPC UA server until StartOPCUA.
func (s *Sim) StopOPCUA() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.opcua != nil {
		s.opcua.close()
		s.opcua = nil
	}
}

// StartOPCUA starts the OPC UA server again after StopOPCUA. After Close it is an error: Close
// has already stopped the server, and one started now would be left running.
func (s *Sim) StartOPCUA() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("start OPC UA server: simulator is closed")
	}
	if s.opcua != nil || s.opts.OPCUA == "" {
		return nil
	}
	return s.startOPCUA()
}

// Close disconnects the MQTT clients (after their outstanding acknowledgements, waited for at most
// ShutdownTimeout) and stops the OPC UA server. It is idempotent.
func (s *Sim) Close() {
	// First free a Step blocked on the acknowledgement queue (a broker that is gone fills it): it
	// holds mu, which Close needs.
	s.ack.shutdown()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	// taken under the lock: a StopOPCUA/StartOPCUA running alongside must not close it twice or
	// replace it after we looked
	o := s.opcua
	s.opcua = nil
	s.mu.Unlock()
	s.ack.close(s.opts.ShutdownTimeout)
	if s.json != nil {
		s.json.close()
	}
	if s.edge != nil {
		s.edge.close()
	}
	if o != nil {
		o.close()
	}
}

// StartBroker runs an embedded MQTT broker (mochi) on addr (host:port) that accepts every client.
func StartBroker(addr string, log *slog.Logger) (*mqtt.Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := mqtt.New(&mqtt.Options{InlineClient: true, Logger: log})
	if err := s.AddHook(new(auth.AllowHook), nil); err != nil {
		return nil, err
	}
	l := listeners.NewTCP(listeners.Config{ID: "sim", Address: addr})
	if err := s.AddListener(l); err != nil {
		return nil, fmt.Errorf("mqtt broker %s: %w", addr, err)
	}
	go func() { _ = s.Serve() }()
	return s, nil
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
