package agent

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gemba-io/gemba/collectors"
	"github.com/gemba-io/gemba/signal"
)

// supervisor runs one collector: it restarts it with capped exponential backoff when it fails,
// stops retrying on a permanent error (reported once), and turns a panic into an error so one bad
// collector never takes the agent down.
type supervisor struct {
	name    string
	spec    collectors.Spec // as configured: a reload compares it with the new file's
	c       collectors.Collector
	emit    collectors.Emitter
	backoff Backoff
	log     *slog.Logger

	// reg holds every series of this collector (the agent's and the collector's own, all labelled
	// collector=<name>): a reload that removes or replaces the collector drops it whole, so no
	// stale series stays behind.
	reg *prometheus.Registry
	// This collector's series, resolved once: Emit is the hot path.
	mSamples, mErrors, mRestarts prometheus.Counter

	// cancel and done are set by start.
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex
	state    string
	lastErr  error
	restarts uint64
	samples  uint64
}

func newSupervisor(spec collectors.Spec, emit collectors.Emitter, backoff Backoff, log *slog.Logger) *supervisor {
	s := &supervisor{name: spec.Name, spec: spec, emit: emit, backoff: backoff, log: log, state: signal.CollectorStarting,
		reg: prometheus.NewRegistry()}
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	s.mSamples = counter("gemba_collector_samples_total", "Samples emitted by each collector and accepted by the agent.")
	s.mErrors = counter("gemba_collector_errors_total", "Collector runs that ended in an error.")
	s.mRestarts = counter("gemba_collector_restarts_total", "Collector restarts after a failure.")
	// Up and degraded are read from the collector's state at each scrape, so they can never lag
	// behind /readyz or disagree with it.
	up := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "gemba_collector_up",
		Help: "1 while the collector reaches its source (connected, possibly degraded), 0 while it connects, reconnects, backs off or has failed.",
	}, func() float64 { return b2f(s.health().Up) })
	degraded := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "gemba_collector_degraded",
		Help: "1 while the collector reaches its source but not all of it (OPC UA nodes quarantined, MQTT subscriptions refused or stalled).",
	}, func() float64 { return b2f(s.health().Degraded) })
	wr := s.registerer()
	for _, c := range []prometheus.Collector{s.mSamples, s.mErrors, s.mRestarts, up, degraded} {
		if err := wr.Register(c); err != nil {
			log.Error("register collector metric", "err", err) // a fresh registry: only a programming error
		}
	}
	return s
}

// registerer is where this collector's series go, each labelled with its name.
func (s *supervisor) registerer() prometheus.Registerer {
	return prometheus.WrapRegistererWith(prometheus.Labels{"collector": s.name}, s.reg)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// countingEmitter counts what a collector emitted successfully.
type countingEmitter struct {
	s *supervisor
}

func (e countingEmitter) Emit(ctx context.Context, samples []signal.Sample) error {
	err := e.s.emit.Emit(ctx, samples)
	if err == nil {
		e.s.mSamples.Add(float64(len(samples)))
		e.s.mu.Lock()
		e.s.samples += uint64(len(samples))
		e.s.mu.Unlock()
	}
	return err
}

// stableAfter is how long a run must last before a failure restarts the backoff from Initial.
const stableAfter = time.Minute

// start runs the supervisor in its own goroutine under parent; stop ends it.
func (s *supervisor) start(parent context.Context) {
	ctx, cancel := context.WithCancel(parent)
	s.cancel, s.done = cancel, make(chan struct{})
	go func() {
		defer close(s.done)
		s.run(ctx)
	}()
}

// stop cancels the collector and waits until its Run has returned (every Emit it made has been
// answered, so what it handed over is in the buffer) or until ctx ends; it reports whether it
// stopped.
func (s *supervisor) stop(ctx context.Context) bool {
	if s.cancel == nil {
		return true
	}
	s.cancel()
	select {
	case <-s.done:
		return true
	case <-ctx.Done():
		return false
	}
}

func (s *supervisor) run(ctx context.Context) {
	delay := s.backoff.Initial
	for {
		s.setState(signal.CollectorRunning, nil)
		started := time.Now()
		err := s.runOnce(ctx)
		if ctx.Err() != nil {
			s.setState(signal.CollectorStopped, nil)
			return
		}
		if err == nil {
			err = fmt.Errorf("collector returned without error before shutdown")
		}
		s.mErrors.Inc()
		if collectors.IsPermanent(err) {
			s.setState(signal.CollectorFailed, err)
			s.log.Error("collector failed permanently; fix the config and restart or reload", "err", err)
			<-ctx.Done()
			s.setState(signal.CollectorStopped, err)
			return
		}
		if time.Since(started) > stableAfter {
			delay = s.backoff.Initial
		}
		// Full jitter around the delay keeps many agents from reconnecting in lockstep.
		wait := delay/2 + rand.N(delay/2+1)
		s.setState(signal.CollectorBackoff, err)
		s.log.Warn("collector failed; restarting", "err", err, "in", wait.Round(time.Millisecond))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			s.setState(signal.CollectorStopped, err)
			return
		case <-t.C:
		}
		delay = min(delay*2, s.backoff.Max)
		s.mRestarts.Inc()
		s.mu.Lock()
		s.restarts++
		s.mu.Unlock()
	}
}

func (s *supervisor) runOnce(ctx context.Context) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("collector panicked: %v\n%s", r, debug.Stack())
		}
	}()
	return s.c.Run(ctx, countingEmitter{s})
}

func (s *supervisor) setState(state string, err error) {
	s.mu.Lock()
	s.state, s.lastErr = state, err
	s.mu.Unlock()
}

// status reports the collector's state for the heartbeat and /readyz.
func (s *supervisor) status() signal.CollectorState {
	st, _ := s.stateDetails()
	return st
}

// stateDetails is status with the collector's own details (per-node states, last error).
func (s *supervisor) stateDetails() (signal.CollectorState, map[string]string) {
	s.mu.Lock()
	st := signal.CollectorState{State: s.state, Restarts: s.restarts, Samples: s.samples}
	if s.lastErr != nil {
		st.Error = s.lastErr.Error()
	}
	s.mu.Unlock()
	var details map[string]string
	if sr, ok := s.c.(collectors.Stater); ok && st.State == signal.CollectorRunning {
		var state string
		if state, details = sr.State(); state != "" {
			st.State = state
		}
	}
	return normalize(st, details), details
}

// normalize keeps the heartbeat's state within signal.CollectorStates, the documented enum: a
// collector reaching only part of its source is "degraded" whatever it calls itself, and a state
// outside the set (a collector bug) reads as not up ("starting") with the name in the error, so
// it shows instead of passing for healthy.
func normalize(st signal.CollectorState, details map[string]string) signal.CollectorState {
	if !signal.IsCollectorState(st.State) {
		st.Error = firstNonEmpty(st.Error, fmt.Sprintf("collector reported unknown state %q", st.State))
		st.State = signal.CollectorStarting
		return st
	}
	if st.State == signal.CollectorRunning && classify(st.State, st.Error, details).Degraded {
		st.State = signal.CollectorDegraded
	}
	return st
}
