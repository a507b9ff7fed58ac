// Package agent wires gemba-agent together: config, collectors, feature engine, durable buffer and
// uplink, with an ordered lifecycle, supervision, health endpoints and metrics.
package agent

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/gemba-io/gemba/buffer"
	"github.com/gemba-io/gemba/collectors"
	"github.com/gemba-io/gemba/features"
	"github.com/gemba-io/gemba/signal"
	"github.com/gemba-io/gemba/uplink"
)

// Build information, stamped by the Makefile with -ldflags -X.
var (
	Version = "dev"
	Commit  = ""
)

// Uplink is what the agent needs of its forwarder.
type Uplink interface {
	// Run forwards until ctx is done and returns after in-flight work settles.
	Run(ctx context.Context) error
	// Ready reports whether data is flowing upstream, and if not, why (no secrets).
	Ready() (bool, string)
}

// Options customise an Agent. Zero values select the production parts.
type Options struct {
	Logger *slog.Logger
	// OpenBuffer opens the buffer; default buffer.Open (Badger).
	OpenBuffer func(cfg buffer.Config, o buffer.Options) (buffer.Buffer, error)
	// NewUplink builds the forwarder; default the NATS JetStream uplink.
	NewUplink func(cfg uplink.Config, id uplink.Identity, src uplink.Source, o uplink.Options) (Uplink, error)
	// Ready, when set, receives the HTTP listen address (empty when disabled or not bound yet) once
	// every part has started; give it a buffer of one so the agent never blocks on it.
	Ready chan<- string
	// HTTPRetry is how often a listener that could not bind tries again; default DefaultHTTPRetry.
	HTTPRetry time.Duration
	// Reload loads the config again (the file and its conf.d) for SIGHUP and POST /admin/reload;
	// nil refuses reloads. ConfigFile names the file in the problems of a refused reload.
	Reload     func() (*Config, error)
	ConfigFile string
}

// Agent is one running gemba-agent.
type Agent struct {
	cfg  *Config
	opts Options
	log  *slog.Logger
	m    *metrics

	started time.Time
	buf     buffer.Buffer
	up      Uplink
	w       *writer
	addr    string // HTTP listen address once bound

	// live is the config in force: the start config with the collectors of the last applied
	// reload. Sections a reload cannot apply stay as they started.
	live    atomic.Pointer[Config]
	reloads chan reloadReq

	mu      sync.Mutex
	running bool
	sups    []*supervisor // in config order; replaced whole by a reload
	pending []string      // sections changed in the file and not applied (restart required)
}

// New checks the options and prepares an agent; Run starts it.
func New(cfg *Config, opts Options) *Agent {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.OpenBuffer == nil {
		opts.OpenBuffer = func(c buffer.Config, o buffer.Options) (buffer.Buffer, error) { return buffer.Open(c, o) }
	}
	if opts.NewUplink == nil {
		opts.NewUplink = func(c uplink.Config, id uplink.Identity, src uplink.Source, o uplink.Options) (Uplink, error) {
			u, err := uplink.New(c, id, src, o)
			if err != nil {
				return nil, err
			}
			return natsUplink{u}, nil
		}
	}
	a := &Agent{cfg: cfg, opts: opts, log: opts.Logger, m: newMetrics(), reloads: make(chan reloadReq)}
	a.live.Store(cfg)
	return a
}

// Registry returns every metric the agent serves: its own registry and each running collector's.
func (a *Agent) Registry() prometheus.Gatherer { return prometheus.GathererFunc(a.gather) }

func (a *Agent) gather() ([]*dto.MetricFamily, error) {
	gs := prometheus.Gatherers{a.m.reg}
	for _, s := range a.supervisors() {
		gs = append(gs, s.reg)
	}
	return gs.Gather()
}

// supervisors returns the collectors' supervisors in force.
func (a *Agent) supervisors() []*supervisor {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.sups
}

// config returns the config in force (see live).
func (a *Agent) config() *Config { return a.live.Load() }

// Addr returns the address the health and metrics listener is bound to, once started.
func (a *Agent) Addr() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.addr
}

// Run starts the agent and blocks until ctx is cancelled, then shuts down in order: collectors
// first, then the writer drains, the feature engine checkpoints, the uplink settles in-flight
// publishes and the buffer closes, all within agent.shutdown_timeout. It returns an error only if
// the agent could not start.
func (a *Agent) Run(ctx context.Context) error {
	cfg := a.cfg
	a.started = time.Now()
	log := a.log

	// Downstream first: buffer, uplink, writer and features, then collectors.
	buf, err := a.opts.OpenBuffer(cfg.Buffer, buffer.Options{Logger: log.With("component", "buffer"), Metrics: a.m.reg})
	if err != nil {
		return fmt.Errorf("buffer %s: %w", cfg.Buffer.Dir, err)
	}
	a.buf = buf
	defer func() {
		if err := buf.Close(); err != nil {
			log.Error("buffer close failed", "err", err)
		}
	}()

	hardCtx, hardCancel := context.WithCancel(context.Background())
	defer hardCancel()
	a.w = newWriter(hardCtx, buf, cfg.Version(), cfg.Agent.Linger, int(cfg.Agent.MaxChunk), log.With("component", "writer"), a.m)
	a.w.bounds = cfg.Agent.Timestamps

	eng, err := features.New(cfg.Features, features.Options{
		Logger:  log.With("component", "features"),
		Metrics: a.m.reg,
		Store:   metaStore(buf),
		Emit:    a.w.AddFeatures,
		Bounds:  cfg.Agent.Timestamps,
		// A glob rule matched by names that keep changing must not grow the engine without end.
		MaxSeries: cfg.Agent.MaxFeatureSeries,
		// The supervisors are built below, before eng.Run starts the idle checks that ask.
		Live: (&sourceLive{sups: a.supervisors, now: time.Now}).Live,
	})
	if err != nil {
		return fmt.Errorf("features: %w", err)
	}
	a.w.fold = eng.Add

	up, err := a.opts.NewUplink(cfg.Uplink,
		uplink.Identity{Agent: cfg.Agent.ID, Site: cfg.Agent.Site, ConfigVersion: cfg.Version(), Incarnation: buf.Incarnation()},
		buf,
		uplink.Options{Logger: log.With("component", "uplink"), Metrics: a.m.reg, Status: a.Status})
	if err != nil {
		return fmt.Errorf("uplink: %w", err)
	}
	a.up = up

	// Supervisors exist before anything that reports them (HTTP, the uplink's heartbeat) starts;
	// they run once the pipeline below them does.
	var sups []*supervisor
	for _, spec := range cfg.Collectors {
		if !spec.Disabled {
			sups = append(sups, a.build(spec))
		}
	}
	a.mu.Lock()
	a.sups = sups
	a.mu.Unlock()

	var lis *listener
	if cfg.HTTP.Enabled {
		lis = a.newListener(log)
		lis.start()
	}

	upCtx, upCancel := context.WithCancel(context.Background())
	defer upCancel()
	var upWG, wWG, engWG sync.WaitGroup
	upWG.Go(func() {
		if err := up.Run(upCtx); err != nil && upCtx.Err() == nil {
			log.Error("uplink stopped", "err", err)
		}
	})
	wCtx, wCancel := context.WithCancel(context.Background())
	defer wCancel()
	wWG.Go(func() { a.w.run(wCtx) })
	engCtx, engCancel := context.WithCancel(context.Background())
	defer engCancel()
	engWG.Go(func() { eng.Run(engCtx) })

	collCtx, collCancel := context.WithCancel(ctx)
	defer collCancel()
	for _, s := range sups {
		s.start(collCtx)
	}
	a.mu.Lock()
	a.running = true
	a.mu.Unlock()
	log.Info("agent started", "id", cfg.Agent.ID, "site", cfg.Agent.Site, "version", Version,
		"config_version", cfg.Version(), "collectors", len(sups))
	if a.opts.Ready != nil {
		select {
		case a.opts.Ready <- a.Addr():
		default:
		}
	}

	// Reloads run here, one at a time, between start and shutdown: nothing else changes the
	// supervisors.
	for running := true; running; {
		select {
		case <-ctx.Done():
			running = false
		case req := <-a.reloads:
			req.done <- a.reload(collCtx)
		}
	}
	log.Info("shutting down", "timeout", cfg.Agent.ShutdownTimeout)
	deadline := time.NewTimer(cfg.Agent.ShutdownTimeout)
	defer deadline.Stop()
	expired := false
	wait := func(what string, wg *sync.WaitGroup) {
		if expired {
			return
		}
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-deadline.C:
			expired = true
			hardCancel()
			log.Error("shutdown timeout: giving up waiting", "for", what)
		}
	}
	// Upstream first: collectors stop, then the writer drains what they handed over.
	collCancel()
	var collWG sync.WaitGroup
	for _, s := range a.supervisors() {
		collWG.Go(func() { <-s.done })
	}
	wait("collectors", &collWG)
	// The engine's ticker stops before the writer drains, so features it closes on the way out
	// are still written; the writer's own folding needs only eng.Add.
	engCancel()
	wait("features", &engWG)
	wCancel()
	wait("writer", &wWG)
	if err := eng.Close(); err != nil {
		log.Error("features checkpoint failed", "err", err)
	}
	upCancel()
	wait("uplink", &upWG)
	if lis != nil {
		lis.stop()
	}
	a.mu.Lock()
	a.running = false
	a.mu.Unlock()
	log.Info("stopped")
	return nil
}

// natsUplink adapts the JetStream uplink to the agent's Uplink.
type natsUplink struct{ *uplink.Uplink }

func (n natsUplink) Ready() (bool, string) {
	h := n.Health()
	if ok, why := h.Ready(); !ok {
		return false, why
	}
	return true, "connected to " + h.Server + ", stream " + h.Stream
}

// metaStore gives the feature engine a place for checkpoints: the buffer's Badger store when it has
// one, else nothing (every restart is then a cold start for open windows).
func metaStore(b buffer.Buffer) features.Store {
	if s, ok := b.(features.Store); ok {
		return s
	}
	return nil
}

// failed stands in for a collector that could not be built: it reports the error permanently.
type failed struct{ err error }

func (f failed) Run(context.Context, collectors.Emitter) error { return collectors.Permanent(f.err) }

// Status builds the heartbeat record.
func (a *Agent) Status() signal.Status {
	st := signal.Status{
		Time: time.Now().UTC(), Agent: a.cfg.Agent.ID, Site: a.cfg.Agent.Site,
		Version: Version, Commit: Commit, ConfigVersion: a.config().Version(),
		Uptime:     time.Since(a.started).Seconds(),
		Buffer:     map[string]signal.BufferState{},
		Collectors: map[string]signal.CollectorState{},
	}
	if a.buf != nil {
		bs := a.buf.Stats()
		for i, s := range bs.Streams {
			age := 0.0
			if !s.Oldest.IsZero() {
				age = time.Since(s.Oldest).Seconds()
			}
			st.Buffer[signal.Stream(i).String()] = signal.BufferState{Records: s.Records, Bytes: s.Bytes, OldestAge: age, Dropped: s.Dropped}
		}
	}
	for _, s := range a.supervisors() {
		st.Collectors[s.name] = s.status()
	}
	return st
}

// The Badger buffer keeps the feature engine's checkpoints.
var _ features.Store = (*buffer.Store)(nil)
