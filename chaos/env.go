package chaos

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/gemba-io/gemba/sim"
)

// Env is one scenario's world: NATS, mosquitto, the simulator and the agent process.
type Env struct {
	o        Options
	name     string
	dir      string
	nats     *natsServer
	mq       *mosquitto
	sim      *sim.Sim
	simStop  context.CancelFunc
	simDone  chan error
	agent    *agentProc
	cfgFile  string
	httpAddr string
	agentLog string
	mark     time.Time // when the last fault ended
}

const (
	agentID = "chaos"
	site    = "chaos"
	stream  = "GEMBA"
)

func (e *Env) logf(format string, args ...any) {
	fmt.Fprintf(e.o.Log, "  [%s] %s\n", e.name, fmt.Sprintf(format, args...))
}

func setup(o Options, sc Scenario) (*Env, error) {
	dir, err := scenarioDir(o, sc.Name)
	if err != nil {
		return nil, err
	}
	e := &Env{o: o, name: sc.Name, dir: dir, agentLog: filepath.Join(dir, "agent.log")}
	var p [4]int
	for i := range p {
		if p[i], err = sim.FreePort(); err != nil {
			return e, err
		}
	}
	e.nats = &natsServer{port: p[0], store: filepath.Join(dir, "jetstream")}
	if err := e.nats.start(); err != nil {
		return e, err
	}
	mqLog, err := os.Create(filepath.Join(dir, "mosquitto.log"))
	if err != nil {
		return e, err
	}
	if e.mq, err = newMosquitto(o.Mosquitto, dir, p[1], mqLog); err != nil {
		return e, err
	}
	if err := e.mq.start(); err != nil {
		return e, err
	}
	plant := o.Plant
	plant.Site = "plant1"
	if sc.Plant != nil {
		sc.Plant(&plant)
	}
	opcuaAddr := fmt.Sprintf("127.0.0.1:%d", p[2])
	if e.sim, err = sim.New(sim.Options{Plant: plant, OPCUA: opcuaAddr, Broker: "tcp://" + e.mq.addr(), ClientID: "chaos-sim"}); err != nil {
		return e, err
	}
	e.httpAddr = fmt.Sprintf("127.0.0.1:%d", p[3])
	buf := sc.BufferBytes
	if buf == "" {
		buf = "256MiB"
	}
	cfg := fmt.Sprintf(`agent: {id: %s, site: %s, log: {level: info, format: text}, shutdown_timeout: 10s}
http: {listen: "%s"}
buffer: {dir: "%s", max_bytes: %s, when_full: drop_oldest, sync: batch}
uplink:
  nats: {servers: ["%s"], stream: %s, create_stream: true, duplicate_window: 20m, reconnect_max_wait: 1s}
  heartbeat: 2s
features:
  - {signal: "*.*.temperature", window: 5s, compute: [mean, max]}
%s`, agentID, site, e.httpAddr, filepath.Join(dir, "buffer"), buf, e.nats.url(), stream,
		sim.CollectorsYAML(e.sim.Plant(), "opc.tcp://"+opcuaAddr, "tcp://"+e.mq.addr()))
	e.cfgFile = filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(e.cfgFile, []byte(cfg), 0o644); err != nil {
		return e, err
	}
	return e, e.startAgent()
}

// startAgent starts the agent process and waits until both collectors run.
func (e *Env) startAgent() error {
	a, err := startAgent(e.cfgFile, e.httpAddr, e.agentLog)
	if err != nil {
		return err
	}
	e.agent = a
	return e.waitFor(30*time.Second, "agent collectors up", func() (bool, error) {
		if a.exited() {
			return false, fmt.Errorf("agent exited: %s", tail(e.agentLog))
		}
		m, err := a.metrics()
		return err == nil && m.Sum("gemba_collector_up") >= 2, nil
	})
}

// tail is the end of a log file, for error messages.
func tail(file string) string {
	b, _ := os.ReadFile(file)
	if len(b) > 1500 {
		b = b[len(b)-1500:]
	}
	return strings.TrimSpace(string(b))
}

func (e *Env) waitFor(d time.Duration, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(d)
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not after %v", what, d)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// load starts the simulator, waits until the agent receives MQTT data (so its subscriptions exist:
// what the broker acknowledged before that had nobody to go to), starts the ledger, and lets the
// plant run for d.
func (e *Env) load(ctx context.Context, d time.Duration) error {
	sctx, cancel := context.WithCancel(ctx)
	e.simStop, e.simDone = cancel, make(chan error, 1)
	go func() { e.simDone <- e.sim.Run(sctx) }()
	err := e.waitFor(30*time.Second, "MQTT samples at the agent", func() (bool, error) {
		m, err := e.agent.metrics()
		return err == nil && m.Sum("gemba_collector_samples_total", "collector", "sim-mqtt") > 0, nil
	})
	if err != nil {
		return err
	}
	e.sim.Ledger().Reset()
	return sleepCtx(ctx, d)
}

// finish lets the plant run for d, stops it (after its last acknowledgements) and waits until the
// agent has forwarded everything.
func (e *Env) finish(ctx context.Context, d time.Duration) error {
	if err := sleepCtx(ctx, d); err != nil {
		return err
	}
	e.stopSim()
	if e.nats.srv == nil {
		if err := e.nats.start(); err != nil {
			return err
		}
	}
	var last float64 = -1
	stable := 0
	return e.waitFor(3*time.Minute, "agent drained", func() (bool, error) {
		if e.agent.exited() {
			return false, fmt.Errorf("agent exited; see %s", e.agentLog)
		}
		m, err := e.agent.metrics()
		if err != nil {
			return false, nil
		}
		in := m.Sum("gemba_collector_samples_total")
		depth := m.Sum("gemba_buffer_records", "stream", "samples")
		if in == last && depth == 0 {
			stable++
		} else {
			stable = 0
		}
		last = in
		return stable >= 20, nil // 2 s without new input and with an empty buffer
	})
}

// count reads the stream back and fills r.
func (e *Env) count(ctx context.Context, r *Result) {
	m, err := e.agent.metrics()
	if err != nil {
		r.Err = fmt.Errorf("agent metrics: %w", err)
		return
	}
	all := uint64(m.Sum("gemba_buffer_dropped_records_total", "stream", "samples"))
	r.Refused = uint64(m.Sum("gemba_buffer_dropped_records_total", "stream", "samples", "reason", "full"))
	r.Dropped = all - r.Refused
	r.PubErrors = uint64(m.Sum("gemba_uplink_publish_errors_total"))
	js, nc, err := Connect(e.nats.url())
	if err != nil {
		r.Err = err
		return
	}
	defer nc.Close()
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	sc, err := CountStream(cctx, js, stream, "gemba."+site+"."+agentID+".samples")
	if err != nil {
		r.Err = fmt.Errorf("count stream: %w", err)
		return
	}
	r.Tally = sim.Check(e.sim.Ledger().Snapshot(), sc.Counter)
	r.Messages, r.DupIDs, r.Historical = sc.Messages, sc.DupMessages, sc.Historical
	r.Gaps, r.Jumps = sc.Gaps, sc.Jumps
	opcua := map[string]bool{}
	for _, mc := range e.sim.Plant().Machines {
		if mc.Protocol == sim.OPCUA {
			opcua[mc.Line+"."+mc.Name] = true
		}
	}
	mark := e.mark.Add(time.Second)
	r.OPCUAAfter = sc.Counter.CountAfter(func(s string) bool {
		i := strings.LastIndexByte(s, '.')
		return i > 0 && opcua[s[:i]]
	}, mark)
}

// stopSim stops the plant and waits for its last acknowledgements; idempotent.
func (e *Env) stopSim() {
	if e.simStop != nil {
		e.simStop()
		<-e.simDone
		e.simStop = nil
	}
	if e.sim != nil {
		e.sim.Close()
	}
}

func (e *Env) teardown() {
	var errs []error
	if e.agent != nil && !e.agent.exited() {
		if err := e.agent.stop(15 * time.Second); err != nil {
			errs = append(errs, fmt.Errorf("%w: %s", err, tail(e.agentLog)))
		}
	}
	e.stopSim()
	if e.mq != nil {
		e.mq.stop(syscall.SIGTERM)
		if c, ok := e.mq.log.(*os.File); ok {
			c.Close()
		}
	}
	if e.nats != nil {
		e.nats.stop()
	}
	if err := errors.Join(errs...); err != nil {
		e.logf("teardown: %v", err)
	}
}
