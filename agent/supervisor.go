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
	c       collectors.Collector
	emit    collectors.Emitter
	backoff Backoff
	log     *slog.Logger

	// This collector's series, resolved once: Emit is the hot path.
	mSamples, mErrors, mRestarts prometheus.Counter
	mUp                          prometheus.Gauge

	mu       sync.Mutex
	state    string
	lastErr  error
	restarts uint64
	samples  uint64
}

func newSupervisor(name string, emit collectors.Emitter, backoff Backoff, log *slog.Logger, m *metrics) *supervisor {
	return &supervisor{name: name, emit: emit, backoff: backoff, log: log, state: "starting",
		mSamples: m.samples.WithLabelValues(name), mErrors: m.collErrors.WithLabelValues(name),
		mRestarts: m.restarts.WithLabelValues(name), mUp: m.collUp.WithLabelValues(name)}
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

func (s *supervisor) run(ctx context.Context) {
	delay := s.backoff.Initial
	for {
		s.setState("running", nil)
		s.mUp.Set(1)
		started := time.Now()
		err := s.runOnce(ctx)
		s.mUp.Set(0)
		if ctx.Err() != nil {
			s.setState("stopped", nil)
			return
		}
		if err == nil {
			err = fmt.Errorf("collector returned without error before shutdown")
		}
		s.mErrors.Inc()
		if collectors.IsPermanent(err) {
			s.setState("failed", err)
			s.log.Error("collector failed permanently; fix the config and restart or reload", "err", err)
			<-ctx.Done()
			s.setState("stopped", err)
			return
		}
		if time.Since(started) > stableAfter {
			delay = s.backoff.Initial
		}
		// Full jitter around the delay keeps many agents from reconnecting in lockstep.
		wait := delay/2 + rand.N(delay/2+1)
		s.setState("backoff", err)
		s.log.Warn("collector failed; restarting", "err", err, "in", wait.Round(time.Millisecond))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			s.setState("stopped", err)
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
	s.mu.Lock()
	st := signal.CollectorState{State: s.state, Restarts: s.restarts, Samples: s.samples}
	if s.lastErr != nil {
		st.Error = s.lastErr.Error()
	}
	s.mu.Unlock()
	if sr, ok := s.c.(collectors.Stater); ok && st.State == "running" {
		if state, _ := sr.State(); state != "" {
			st.State = state
		}
	}
	return st
}
