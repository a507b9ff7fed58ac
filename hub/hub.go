// Package hub wires gemba-hub: NATS (embedded or a cluster), the state stores, the ingest
// consumers and the HTTP listener, with their lifecycle (downstream first, drain on stop).
package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/gemba-io/gemba/hub/ingest/agents"
	"github.com/gemba-io/gemba/hub/ingest/commerce"
	"github.com/gemba-io/gemba/hub/ingest/dedup"
	"github.com/gemba-io/gemba/hub/monitor/fleet"
	"github.com/gemba-io/gemba/hub/state/features"
	"github.com/gemba-io/gemba/hub/state/graph"
	"github.com/gemba-io/gemba/hub/state/inventory"
	"github.com/gemba-io/gemba/internal/kvretry"
)

// Version and Commit are stamped at build time (-ldflags -X).
var (
	Version = "dev"
	Commit  = ""
)

// Options are the hub's collaborators.
type Options struct {
	Logger *slog.Logger
	// Ready receives the HTTP listener's address once the hub is running (tests).
	Ready chan<- string
	// Recreate names decision stores (buckets or streams) the operator allows to be created again
	// empty when they are missing while the others are there (gemba-hub run --recreate): see
	// checkDecisionStores.
	Recreate []string
}

// Hub is one replica.
type Hub struct {
	cfg  *Config
	opts Options
	log  *slog.Logger
	reg  *prometheus.Registry

	graph atomic.Pointer[graph.Graph]
	feats atomic.Pointer[features.Store]
	inv   atomic.Pointer[inventory.Store]
	fleet atomic.Pointer[fleet.Fleet]
	dec   atomic.Pointer[decisions]  // nil without a guard section
	learn atomic.Pointer[learning]   // nil until the model registry is followed (learn.enabled)
	mon   atomic.Pointer[monitoring] // nil until the monitor room is open
	pres  atomic.Pointer[presence]   // this process's hold on its replica name (hub.id)

	// commerceHTTP serves the commerce endpoints once the stream is there (nil before, or without a token).
	commerceHTTP atomic.Pointer[http.Handler]
	commerceWhy  atomic.Pointer[string]

	mu     sync.Mutex
	addr   string
	nc     *nats.Conn
	ingest *agents.Consumer
	cons   *commerce.Consumer
	why    string // not-ready reason while starting

	storesChecked bool // checkDecisionStores let this process go on (openState's goroutine only)
}

// New checks the config and loads the graph; Run does the rest.
func New(cfg *Config, opts Options) (*Hub, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if err := cfg.checkRecreate(opts.Recreate); err != nil {
		return nil, err
	}
	h := &Hub{cfg: cfg, opts: opts, log: opts.Logger, reg: prometheus.NewRegistry(), why: "starting"}
	if cfg.Graph.File != "" {
		g, err := graph.LoadFile(cfg.Graph.File)
		if err != nil {
			return nil, fmt.Errorf("graph: %w", err)
		}
		h.graph.Store(g)
	}
	h.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return h, nil
}

// Addr is the HTTP listener's address once running.
func (h *Hub) Addr() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.addr
}

func (h *Hub) setWhy(s string) {
	h.mu.Lock()
	h.why = s
	h.mu.Unlock()
}

// Run runs the hub until ctx ends, then stops upstream first: ingest stops pulling and finishes
// what it took (acking only what is stored), the decision and learning rooms stop, the stores
// close, then NATS. No store closes while a room runs: a room still stopping at shutdown_timeout is
// waited for, and Run's error names it.
func (h *Hub) Run(ctx context.Context) error {
	cfg, log := h.cfg, h.log
	for _, w := range cfg.Warnings() {
		log.Warn(w)
	}
	srv, err := h.listen()
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = srv.Shutdown(sctx)
		cancel()
	}()

	urls := strings.Join(cfg.NATS.Servers, ",")
	if urls == "" {
		h.setWhy("starting the embedded NATS server")
		ns, err := startEmbedded(cfg, log)
		if err != nil {
			return err
		}
		defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
		urls = ns.ClientURL()
		h.registerServer(ns)
	}
	nc, err := connect(cfg, urls, log, true)
	if err != nil {
		return err
	}
	defer nc.Close()
	h.mu.Lock()
	h.nc = nc
	h.mu.Unlock()
	js, err := newJetStream(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	// The replica name first: decision claims, approvals and delivery leases are owned by it, so
	// nothing may run under a name another live process holds (hub/presence.go).
	pres, err := h.claimName(ctx, js)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	h.pres.Store(pres)
	pres.keep()
	defer pres.release()

	// Downstream first: the state the consumers write into. Whatever was opened is closed, also when
	// the hub is stopped while still opening.
	defer h.closeState()
	dd, err := h.openState(ctx, js)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}

	m := agents.NewMetrics()
	if err := m.Register(h.reg); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	var stock agents.Stock
	if inv := h.inv.Load(); inv != nil {
		stock = inv
	}
	ing, err := agents.New(cfg.Ingest, agents.Deps{
		JS: js, Prefix: cfg.NATS.SubjectPrefix, Dedup: dd, Features: h.feats.Load(), Stock: stock,
		Fleet: h.fleet.Load(), Placer: placer{h}, Observer: h.mon.Load().observer(), Logger: log.With("component", "ingest"), Metrics: m,
	}, cfg.Hub.ShutdownTimeout/2)
	if err != nil {
		return err
	}
	h.mu.Lock()
	h.ingest, h.why = ing, ""
	h.mu.Unlock()
	cons, err := h.startCommerce(js, dd)
	if err != nil {
		return err
	}
	h.mu.Lock()
	h.cons = cons
	h.mu.Unlock()
	stopLearning := sync.OnceFunc(h.startLearning(js))
	defer stopLearning()
	stopDecisions := func() {}
	var halt sync.WaitGroup
	hctx, hcancel := context.WithCancel(context.Background())
	defer func() { hcancel(); halt.Wait() }()
	if d := h.dec.Load(); d != nil {
		stopDecisions = sync.OnceFunc(h.runDecisions(d, log.With("component", "decide")))
		halt.Go(func() {
			select {
			case <-pres.lost: // another process runs under this name: stop claiming, for good
				stopDecisions()
			case <-hctx.Done():
			}
		})
	}
	ictx, icancel := context.WithCancel(context.Background())
	defer icancel()
	// Every room is waited for before the deferred closes: none may run on a closed store or
	// connection, whatever the shutdown_timeout.
	var rs rooms
	rs.run("agents ingest", func() {
		if err := ing.Run(ictx); err != nil {
			log.Error("agents ingest stopped", "err", err)
		}
	})
	rs.run("commerce ingest", func() {
		if err := cons.Run(ictx); err != nil {
			log.Error("commerce ingest stopped", "err", err) // not ready since: cons.Ready says why
		}
	})
	log.Info("hub started", "id", cfg.Hub.ID, "version", Version, "config_version", cfg.Version(), "http", h.Addr(),
		"nats", redactAll(urls))
	if h.opts.Ready != nil {
		select {
		case h.opts.Ready <- h.Addr():
		default:
		}
	}

	<-ctx.Done()
	log.Info("shutting down", "timeout", cfg.Hub.ShutdownTimeout)
	// Upstream first: the consumers stop pulling and finish what they took (the agents' ingest within
	// half the timeout, then it hands the rest back), then the decision and learning rooms stop.
	tctx, tcancel := context.WithTimeout(context.Background(), cfg.Hub.ShutdownTimeout)
	defer tcancel()
	icancel()
	late := rs.wait(tctx.Done())
	hcancel()
	halt.Wait()
	rs.run("decisions", stopDecisions)
	rs.run("learning", stopLearning)
	if len(late) == 0 {
		late = rs.wait(tctx.Done())
	}
	if len(late) > 0 {
		// Each has been told to stop and gives back what it holds (unacknowledged messages are
		// redelivered): waited for, so that nothing runs on the stores closed next.
		log.Error("shutdown_timeout passed with rooms still stopping; waiting for them before closing the stores",
			"timeout", cfg.Hub.ShutdownTimeout, "running", late)
		// Waited for once more as long (at least stopGrace), not for ever: a room stuck beyond that
		// would hold the process past any supervisor's stop timeout. It then exits with the stores
		// closed under it.
		gctx, gcancel := context.WithTimeout(context.Background(), max(cfg.Hub.ShutdownTimeout, stopGrace))
		if stuck := rs.wait(gctx.Done()); len(stuck) > 0 {
			log.Error("rooms still running at twice shutdown_timeout: closing the stores anyway", "running", stuck)
		}
		gcancel()
		return fmt.Errorf("shutdown_timeout %s passed before the drain finished (still running: %s); what they had not acknowledged will be redelivered",
			cfg.Hub.ShutdownTimeout, strings.Join(late, ", "))
	}
	log.Info("stopped")
	return nil
}

// stopGrace is the least a room told to stop is waited for after shutdown_timeout: a short timeout
// bounds the drain, not the moment a room needs to hand back what it holds.
const stopGrace = 5 * time.Second

// openState opens every store, retrying while JetStream is not available yet (a cluster still
// electing, a server restarting) until ctx ends. A start refused (decision stores missing) is not
// retried.
func (h *Hub) openState(ctx context.Context, js jetstream.JetStream) (*dedup.Markers, error) {
	wait := 250 * time.Millisecond
	for {
		dd, err := h.tryOpenState(ctx, js)
		if err == nil {
			return dd, nil
		}
		if re := (*refusedError)(nil); errors.As(err, &re) {
			return nil, err
		}
		h.setWhy("opening state: " + err.Error())
		h.log.Warn("state not available yet, retrying", "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
			wait = min(2*wait, 10*time.Second)
		}
	}
}

func (h *Hub) tryOpenState(ctx context.Context, js jetstream.JetStream) (*dedup.Markers, error) {
	cfg := h.cfg
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	dd, err := dedup.Open(octx, js, dedup.Config{Bucket: dedupBucket, TTL: cfg.Ingest.DedupTTL, Replicas: cfg.NATS.Replicas})
	if err != nil {
		return nil, err
	}
	if g := h.graph.Load(); g != nil {
		if err := h.recordGraph(octx, js, g); err != nil {
			return nil, err
		}
	}
	if h.feats.Load() == nil {
		fs, err := features.Open(octx, js, features.Config{Bucket: featuresBucket, Replicas: cfg.NATS.Replicas,
			Definitions: cfg.Features, MaxFuture: cfg.Ingest.MaxFuture}, placer{h}, h.log.With("component", "features"))
		if err != nil {
			return nil, err
		}
		h.feats.Store(fs)
		h.registerFeatures(fs)
	}
	if h.inv.Load() == nil {
		inv, err := inventory.Open(octx, js, cfg.Inventory, h.log) // it names itself
		if err != nil {
			return nil, err
		}
		h.inv.Store(inv)
	}
	if _, err := commerce.EnsureStream(octx, js, cfg.Commerce); err != nil {
		return nil, err
	}
	if h.fleet.Load() == nil {
		fl, err := fleet.Open(octx, js, cfg.Fleet.Bucket, cfg.NATS.Replicas, cfg.Fleet.StaleAfter, cfg.Fleet.ForgetAfter, h.log.With("component", "fleet"))
		if err != nil {
			return nil, err
		}
		h.fleet.Store(fl)
	}
	if cfg.Decisions() && h.dec.Load() == nil {
		if err := h.checkDecisionStores(octx, js); err != nil {
			return nil, err
		}
		d, err := h.openDecisions(octx, js)
		if err != nil {
			return nil, err
		}
		h.registerDecisions(d)
		h.dec.Store(d)
	}
	if h.mon.Load() == nil {
		m, err := h.openMonitoring(octx, js, h.dec.Load())
		if err != nil {
			return nil, err
		}
		h.mon.Store(m)
	}
	return dd, nil
}

func (h *Hub) closeState() {
	h.mon.Load().close() // nil-safe
	if f := h.feats.Load(); f != nil {
		f.Close()
	}
	if i := h.inv.Load(); i != nil {
		_ = i.Close()
	}
	if f := h.fleet.Load(); f != nil {
		f.Close()
	}
}

// graphRecord is what the graph bucket keeps per version: any replica that loads a graph records it.
type graphRecord struct {
	Version  string    `json:"version"`
	Hash     string    `json:"hash"`
	File     string    `json:"file"`
	LoadedAt time.Time `json:"loaded_at"`
	LoadedBy string    `json:"loaded_by"`
}

func (h *Hub) recordGraph(ctx context.Context, js jetstream.JetStream, g *graph.Graph) error {
	kv, err := kvretry.KeyValue(ctx, js, jetstream.KeyValueConfig{Bucket: h.cfg.Graph.Bucket, Replicas: h.cfg.NATS.Replicas,
		History: 1, Description: "gemba-hub: knowledge graph versions loaded (by hash)"})
	if err != nil {
		return fmt.Errorf("graph bucket %s: %w", h.cfg.Graph.Bucket, err)
	}
	rec, _ := json.Marshal(graphRecord{Version: g.Version(), Hash: g.Hash(), File: h.cfg.Graph.File, LoadedAt: time.Now().UTC(), LoadedBy: h.cfg.Hub.ID})
	if _, err := kv.Create(ctx, g.Hash(), rec); err == nil {
		h.log.Info("new knowledge graph version recorded", "version", g.Version(), "hash", g.Hash())
	} else if !errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("graph bucket %s: record %s: %w", h.cfg.Graph.Bucket, g.Hash(), err)
	}
	return nil
}

// startCommerce builds the commerce publisher (HTTP endpoint, imports) and the consumer that applies
// the COMMERCE stream to the inventory.
func (h *Hub) startCommerce(js jetstream.JetStream, dd *dedup.Markers) (*commerce.Consumer, error) {
	cfg, log := h.cfg, h.log.With("component", "commerce")
	m, err := commerce.NewMetrics(h.reg)
	if err != nil {
		return nil, fmt.Errorf("commerce metrics: %w", err)
	}
	pub, err := commerce.NewPublisher(js, cfg.Commerce)
	if err != nil {
		return nil, err
	}
	if cfg.Commerce.HTTP.Token.IsSet() {
		hd, err := commerce.Handler(pub, commerce.HandlerOptions{Config: cfg.Commerce, Log: log, Metrics: m, MaxFuture: cfg.Inventory.MaxFuture})
		if err != nil {
			return nil, err
		}
		h.commerceHTTP.Store(&hd)
	} else {
		why := "commerce HTTP endpoint disabled: set commerce.http.token"
		h.commerceWhy.Store(&why)
		log.Info(why)
	}
	return commerce.NewConsumer(js, commerce.ConsumerOptions{Config: cfg.Commerce, Markers: dd,
		Sink: commerce.StockSink{Inventory: h.inv.Load()}, Log: log, Metrics: m})
}

// placer resolves signals through the current graph.
type placer struct{ h *Hub }

func (p placer) Place(sig string) (machine, line, site string, ok bool) {
	g := p.h.graph.Load()
	if g == nil {
		return "", "", "", false
	}
	r, err := g.LineOfSignal(sig)
	if err != nil {
		return "", "", "", false
	}
	for _, s := range r.Path {
		if s.Kind == graph.KindMachine {
			machine = s.ID
		}
	}
	return machine, r.ID, r.Site, true
}

// server is the HTTP server of hd. Each response has writeTimeout from its request to be written
// (a client that stops reading a large one does not hold its handler for good); not as the
// server's WriteTimeout, which a stream cannot extend: the console's live feed sets a deadline of
// its own before each write. A handler's panic is logged by the hub's logger, not the standard
// library's log.
func (h *Hub) server(hd http.Handler) *http.Server {
	d := writeTimeout
	return &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(d))
			hd.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second,
		ErrorLog: slog.NewLogLogger(h.log.With("component", "http").Handler(), slog.LevelError),
	}
}

func (h *Hub) listen() (*http.Server, error) {
	srv := h.server(h.handler())
	if !h.cfg.HTTP.Enabled {
		return srv, nil
	}
	ln, err := net.Listen("tcp", h.cfg.HTTP.Listen)
	if err != nil {
		return nil, fmt.Errorf("http listener %s: %w", h.cfg.HTTP.Listen, err)
	}
	h.mu.Lock()
	h.addr = ln.Addr().String()
	h.mu.Unlock()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			h.log.Error("http listener failed", "err", err)
		}
	}()
	return srv, nil
}

func (h *Hub) registerServer(ns *server.Server) {
	h.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "gemba_hub_embedded_nats_connections",
		Help: "Client connections to the embedded NATS server (agents and the hub)."},
		func() float64 { return float64(ns.NumClients()) }))
}

func (h *Hub) registerFeatures(fs *features.Store) {
	c := func(name, help string, v *atomic.Uint64) {
		h.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "gemba_hub_features_" + name, Help: help},
			func() float64 { return float64(v.Load()) }))
	}
	c("applied_total", "Edge feature records stored as the latest value of a hub feature.", &fs.Stats.Applied)
	c("older_total", "Records not stored because a later window was already known (out of order, re-sent).", &fs.Stats.Older)
	c("unmatched_total", "Records no feature definition takes.", &fs.Stats.Unmatched)
	c("unresolved_total", "Records whose key (line, machine, site, sku) could not be found.", &fs.Stats.Unresolved)
	c("non_finite_total", "Records with a NaN or infinite value (not stored).", &fs.Stats.NonFinite)
	c("future_total", "Records whose window ends beyond ingest.max_future ahead of the hub's clock (not stored).", &fs.Stats.Future)
	c("writes_total", "Feature values written to the feature log.", &fs.Stats.Writes)
	c("log_messages_total", "Messages written to the feature log (one per flush, more only past its size limit).", &fs.Stats.Messages)
	c("snapshots_total", "Snapshots of the feature log written by this replica (compaction).", &fs.Stats.Snapshots)
	c("unreadable_total", "Feature log entries that could not be decoded (skipped).", &fs.Stats.Unreadable)
	c("dropped_total", "Feature values that could not be stored (too big for a log message).", &fs.Stats.Dropped)
	c("refollows_total", "New consumers made by the feature log follower (the last one's node went away, or it lagged).", &fs.Stats.Refollows)
}
