package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/gemba-io/gemba/sim"
)

// Options size a chaos run.
type Options struct {
	Dir       string        // working directory (a subdirectory per scenario)
	Mosquitto string        // path of the mosquitto binary
	Outage    time.Duration // how long NATS stays down
	Settle    time.Duration // load before and after each fault
	Plant     sim.Config    // the load
	Log       io.Writer     // progress lines
}

// Short is the version `go test` runs: a few minutes on 2 cores for every scenario together.
func Short(dir, mosquittoBin string, log io.Writer) Options {
	return Options{Dir: dir, Mosquitto: mosquittoBin, Outage: 6 * time.Second, Settle: 2 * time.Second, Log: log,
		Plant: sim.Config{Seed: 7, Lines: 2, MachinesPerLine: 3, ExtraSignals: 3, Tick: 100 * time.Millisecond, Speed: 20}}
}

// Full is the version `make chaos` runs: 30 s outages under heavier load.
func Full(dir, mosquittoBin string, log io.Writer) Options {
	return Options{Dir: dir, Mosquitto: mosquittoBin, Outage: 30 * time.Second, Settle: 10 * time.Second, Log: log,
		Plant: sim.Config{Seed: 7, Lines: 4, MachinesPerLine: 5, ExtraSignals: 13, Tick: 50 * time.Millisecond, Speed: 20}}
}

// Scenario is one fault and its check.
type Scenario struct {
	Name string
	// BufferBytes is the agent's buffer cap (default 256MiB).
	BufferBytes string
	// Plant adjusts the load for this scenario.
	Plant func(*sim.Config)
	Act   func(ctx context.Context, e *Env) error
	// Check adds scenario-specific verdicts; the common one (nothing acknowledged missing or
	// duplicated, no repeated message ids) applies unless AllowDrops.
	Check      func(e *Env, r *Result) error
	AllowDrops bool
}

// Result is the outcome of one scenario.
type Result struct {
	Scenario   string
	Tally      sim.Tally
	Messages   uint64
	DupIDs     uint64
	Historical uint64
	Dropped    uint64 // records the buffer evicted by policy (agent counter, every reason but "full")
	Refused    uint64 // appends the buffer refused ("full"): never given a sequence
	PubErrors  uint64 // publishes that ended without a PubAck (agent counter)
	Gaps       uint64 // buffer sequences missing from the stream
	Jumps      uint64 // sequence jumps after unclean restarts (by design)
	OPCUAAfter uint64 // OPC UA samples after the last fault
	Duration   time.Duration
	Err        error
}

// Pass reports whether the scenario held.
func (r Result) Pass() bool { return r.Err == nil }

// Line is the one-line summary.
func (r Result) Line() string {
	verdict := "PASS"
	if r.Err != nil {
		verdict = "FAIL: " + r.Err.Error()
	}
	return fmt.Sprintf("%-14s acked %d, in stream %d, missing %d, duplicates %d, extra %d, opcua %d (after fault %d), messages %d (historical %d, repeated ids %d), dropped records %d (refused %d), sequence gaps %d (restart jumps %d), %s: %s",
		r.Scenario, r.Tally.Acked, r.Tally.Delivered, r.Tally.Missing, r.Tally.Duplicates, r.Tally.Extra, r.Tally.Other, r.OPCUAAfter,
		r.Messages, r.Historical, r.DupIDs, r.Dropped, r.Refused, r.Gaps, r.Jumps, r.Duration.Round(time.Second), verdict)
}

// sleepCtx waits for d, or less if ctx ends first.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Scenarios are the faults of the issue, in order.
func Scenarios(o Options) []Scenario {
	return []Scenario{
		{Name: "nats-outage", Act: func(ctx context.Context, e *Env) error {
			e.logf("stopping NATS for %v", o.Outage)
			e.nats.stop()
			if err := sleepCtx(ctx, o.Outage); err != nil {
				return err
			}
			e.mark = time.Now()
			return e.nats.start()
		}},
		{Name: "agent-kill", Act: func(ctx context.Context, e *Env) error {
			e.logf("stopping NATS for %v; SIGKILL the agent halfway and restart it", o.Outage)
			e.nats.stop()
			if err := sleepCtx(ctx, o.Outage/2); err != nil {
				return err
			}
			e.agent.kill()
			if err := e.startAgent(); err != nil {
				return err
			}
			if err := sleepCtx(ctx, o.Outage/2); err != nil {
				return err
			}
			e.mark = time.Now()
			return e.nats.start()
		}},
		{Name: "agent-kill-live", Act: func(ctx context.Context, e *Env) error {
			e.logf("SIGKILL the agent while it streams, twice")
			for range 2 {
				e.agent.kill()
				if err := e.startAgent(); err != nil {
					return err
				}
				if err := sleepCtx(ctx, o.Settle); err != nil {
					return err
				}
			}
			e.mark = time.Now()
			return nil
		}},
		{Name: "mqtt-restart", Act: func(ctx context.Context, e *Env) error {
			e.logf("restarting mosquitto (SIGTERM, persistent sessions) twice")
			for range 2 {
				e.mq.stop(syscall.SIGTERM)
				if err := sleepCtx(ctx, time.Second); err != nil {
					return err
				}
				if err := e.mq.start(); err != nil {
					return err
				}
				if err := sleepCtx(ctx, o.Settle); err != nil {
					return err
				}
			}
			e.mark = time.Now()
			return nil
		}},
		{Name: "opcua-restart", Act: func(ctx context.Context, e *Env) error {
			e.logf("restarting the OPC UA server")
			e.sim.StopOPCUA()
			if err := sleepCtx(ctx, 2*time.Second); err != nil {
				return err
			}
			e.mark = time.Now()
			if err := e.sim.StartOPCUA(); err != nil {
				return err
			}
			// The collector must come back by itself: wait for its count to move again.
			m, err := e.agent.metrics()
			if err != nil {
				return err
			}
			before := m.Sum("gemba_collector_samples_total", "collector", "sim-opcua")
			err = e.waitFor(60*time.Second, "OPC UA samples after the restart", func() (bool, error) {
				m, err := e.agent.metrics()
				return err == nil && m.Sum("gemba_collector_samples_total", "collector", "sim-opcua") > before, nil
			})
			if err == nil {
				e.logf("OPC UA data again %v after the server restart", time.Since(e.mark).Round(100*time.Millisecond))
			}
			return err
		}, Check: func(e *Env, r *Result) error {
			if r.OPCUAAfter == 0 {
				return errors.New("no OPC UA sample after the server restart")
			}
			return nil
		}},
		{Name: "buffer-full", BufferBytes: "4MiB", AllowDrops: true,
			Plant: func(c *sim.Config) { c.ExtraSignals = max(c.ExtraSignals, 40) },
			Act: func(ctx context.Context, e *Env) error {
				e.logf("stopping NATS until the 4MiB buffer drops records (drop_oldest)")
				e.nats.stop()
				deadline := time.Now().Add(max(4*o.Outage, 90*time.Second))
				for time.Now().Before(deadline) {
					m, err := e.agent.metrics()
					if err == nil && m.Sum("gemba_buffer_dropped_records_total", "stream", "samples") > 0 {
						break
					}
					if err := sleepCtx(ctx, 500*time.Millisecond); err != nil {
						return err
					}
				}
				if err := sleepCtx(ctx, 2*time.Second); err != nil {
					return err
				}
				e.mark = time.Now()
				return e.nats.start()
			},
			Check: func(e *Env, r *Result) error {
				if r.Dropped == 0 {
					return errors.New("the buffer never reached its cap")
				}
				// Every evicted record is a missing sequence, except one JetStream stored while
				// its PubAck was lost as NATS stopped: the buffer still held it, unacknowledged,
				// and evicted it later. Each such record is a publish that failed.
				if r.Gaps > r.Dropped || r.Dropped-r.Gaps > r.PubErrors {
					return fmt.Errorf("%d sequences missing from the stream but the buffer counted %d evicted (%d publishes failed)", r.Gaps, r.Dropped, r.PubErrors)
				}
				if r.Tally.Duplicates > 0 || r.DupIDs > 0 {
					return fmt.Errorf("%d duplicate samples, %d repeated ids", r.Tally.Duplicates, r.DupIDs)
				}
				return nil
			}},
	}
}

// Run runs one scenario in a fresh environment and tears it down.
func Run(ctx context.Context, o Options, sc Scenario) (r Result) {
	start := time.Now()
	r.Scenario = sc.Name
	defer func() { r.Duration = time.Since(start) }()
	e, err := setup(o, sc)
	if e != nil {
		defer func() {
			e.teardown()
			if r.Err == nil {
				_ = os.RemoveAll(e.dir) // keep the logs of failures only
			}
		}()
	}
	if err != nil {
		r.Err = fmt.Errorf("setup: %w", err)
		return r
	}
	if err := e.load(ctx, o.Settle); err != nil {
		r.Err = err
		return r
	}
	if err := sc.Act(ctx, e); err != nil {
		r.Err = fmt.Errorf("fault: %w", err)
		return r
	}
	if err := e.finish(ctx, o.Settle); err != nil {
		r.Err = err
		return r
	}
	e.count(ctx, &r)
	if r.Err != nil {
		return r
	}
	if !sc.AllowDrops {
		switch {
		case !r.Tally.OK():
			r.Err = fmt.Errorf("%d acknowledged samples missing, %d duplicated (%s); agent log %s",
				r.Tally.Missing, r.Tally.Duplicates, strings.Join(r.Tally.Examples, "; "), e.agentLog)
		case r.DupIDs > 0:
			r.Err = fmt.Errorf("%d message ids stored twice", r.DupIDs)
		case r.Dropped > 0 || r.Refused > 0 || r.Gaps > 0:
			r.Err = fmt.Errorf("the buffer dropped %d records, refused %d; %d sequences missing from the stream", r.Dropped, r.Refused, r.Gaps)
		case r.Tally.Acked == 0:
			r.Err = errors.New("no acknowledged samples: the load never ran")
		}
	}
	if r.Err == nil && sc.Check != nil {
		r.Err = sc.Check(e, &r)
	}
	return r
}

// RunAll runs every scenario and writes one summary line each; it returns the results.
func RunAll(ctx context.Context, o Options, only string) []Result {
	var out []Result
	for _, sc := range Scenarios(o) {
		if only != "" && !strings.Contains(","+only+",", ","+sc.Name+",") {
			continue
		}
		r := Run(ctx, o, sc)
		fmt.Fprintln(o.Log, r.Line())
		out = append(out, r)
	}
	return out
}

func scenarioDir(o Options, name string) (string, error) {
	d := filepath.Join(o.Dir, name)
	_ = os.RemoveAll(d)
	return d, os.MkdirAll(d, 0o755)
}
