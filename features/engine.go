package features

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"path"
	"sync"
	"time"

	"github.com/DataDog/sketches-go/ddsketch"
	"github.com/DataDog/sketches-go/ddsketch/mapping"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gemba-io/gemba/internal/bootclock"
	"github.com/gemba-io/gemba/internal/promreg"
	"github.com/gemba-io/gemba/signal"
)

// Store keeps the engine's checkpoint. The buffer's Badger store implements it.
type Store interface {
	GetMeta(key string) ([]byte, bool, error)
	PutMeta(key string, value []byte) error
}

// Options are the engine's dependencies.
type Options struct {
	Logger  *slog.Logger
	Metrics prometheus.Registerer // nil: no metrics
	Store   Store                 // nil: no checkpoints (every restart is a cold start)
	// Emit receives the features of the windows that closed. It is called with the engine's lock held,
	// from Add, Run or Flush, and must neither keep the slice nor call back into the engine.
	Emit func([]signal.Feature)
	// Now is the wall clock (default time.Now); the idle clock measures by the monotonic reading
	// of its times when they carry one (time.Now's do), so a step of the wall clock is no silence.
	Now func() time.Time
	// Boot reads the machine's boot: its id and the time since it (bootclock.Read when Now is nil;
	// with Now set and Boot nil the boot is not known). A restart in the same boot measures the
	// time the agent was stopped by it, so a step of the wall clock meanwhile is not downtime.
	Boot func() (id string, since time.Duration, ok bool)
	// CheckpointInterval is how often Run checkpoints open windows (default 10s).
	CheckpointInterval time.Duration
	// TickInterval is how often Run checks idle timeouts (default: a quarter of the shortest idle
	// timeout, between 100ms and 1s).
	TickInterval time.Duration
	// Bounds are the sample times the engine trusts, against Now (zero: no bounds). A sample out
	// of bounds is counted and forwarded raw, never folded, and moves no watermark. With
	// MaxFutureSkew set, no watermark passes Now either: a fast source clock delays its windows
	// instead of making the correct samples after it late.
	Bounds TimeBounds
	// Live reports whether the collector behind a sample Source ("collector:node") is connected.
	// When a counter or state signal falls silent for its idle timeout, a live source is taken to
	// hold its value (counter windows continue with delta 0, state windows with the state); a
	// source that is not live leaves a gap after its last sample and its last window is partial.
	// Nil: every source is live.
	Live func(source string) bool
	// MaxSeries caps the series the engine holds (<= 0: DefaultMaxSeries). Beyond it the samples
	// of signals without a series are forwarded raw, not folded, and counted
	// (result="series_limit"); a WARN names one at most once a minute.
	MaxSeries int
}

// DefaultMaxSeries is the default of Options.MaxSeries.
const DefaultMaxSeries = 100_000

// CheckpointKey is the Store key of the engine's checkpoint.
const CheckpointKey = "features/checkpoint"

// maxCatchUp bounds the windows a state signal emits after a long gap, so one old carry cannot
// produce millions of records.
const maxCatchUp = 10000

// earlyCheckpoint is how soon after windows closed Tick checkpoints, shrinking the stretch in
// which a crash would emit those windows a second time.
const earlyCheckpoint = time.Second

// Engine folds samples into windows. Add is called from one goroutine; Run and Close may run
// concurrently with it (a mutex serialises them).
type Engine struct {
	mu      sync.Mutex
	log     *slog.Logger
	opts    Options
	cfg     Config
	rules   []*rule
	entries map[string]*entry
	series  []*series // every series, for idle checks and checkpoints
	mapping mapping.IndexMapping
	scratch *ddsketch.DDSketch // merge target for sliding-window percentiles
	vals    []float64          // merge target for a window's exact values (percentiles)
	out     []signal.Feature
	closed  bool
	m       metrics
	lastCk  time.Time
	// closedSince is set when windows closed after the last checkpoint: Tick then checkpoints
	// early, so a crash re-emits as few windows as possible.
	closedSince bool
	// restored holds checkpointed series not yet seen since start, by signal name.
	restored  map[string]*series
	discarded discards // series a restart discarded, logged once per reason
	crashed   bool
	// down is how long the agent was stopped, from the restored checkpoint's save to New (ns;
	// downUnknown when not known), and step how far the wall clock was set meanwhile (see restart).
	down, step int64
	// wmCap is the highest watermark Add may set in this batch (Now with Options.Bounds, else no cap).
	wmCap int64
	// unmatched counts the entries without a series added since they were last dropped (maxUnmatched).
	unmatched int
	limit     seriesLimit
}

// entry is what a signal name resolves to: its own series (nil when no rule matches) and the
// group-by track when other rules group by it. pending is the rule of a signal that has no series
// although the rule matches it (refused at the series limit, or dropped after its retention): the
// next sample creates one when there is room.
type entry struct {
	s       *series
	t       *track
	pending *rule
}

type metrics struct {
	samples                                  *prometheus.CounterVec
	folded, late, bad, excluded, outOfBounds prometheus.Counter
	closedWM, closedIdle                     prometheus.Counter
	emitted                                  prometheus.Counter
	ckErrors, dropped, limited               prometheus.Counter
	ckBytes, seriesN                         prometheus.Gauge
}

func (m *metrics) samplesVec(result string) prometheus.Counter {
	return m.samples.WithLabelValues(result)
}

func newMetrics(reg prometheus.Registerer) (metrics, error) {
	var m metrics
	samples := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gemba_features_samples_total",
		Help: "Samples seen by the feature engine by result: folded, late (beyond allowed lateness, not folded), bad (Bad quality or unusable value, counted not folded), excluded (Uncertain under policy exclude), out_of_bounds (source time outside agent.timestamps, not folded), series_limit (a new signal beyond agent.max_feature_series, not folded)."}, []string{"result"})
	windows := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gemba_features_windows_closed_total",
		Help: "Windows closed, by reason: watermark or idle."}, []string{"reason"})
	emitted := prometheus.NewCounter(prometheus.CounterOpts{Name: "gemba_features_emitted_total", Help: "Feature records emitted."})
	ckErrors := prometheus.NewCounter(prometheus.CounterOpts{Name: "gemba_features_checkpoint_errors_total", Help: "Failed checkpoint writes."})
	ckBytes := prometheus.NewGauge(prometheus.GaugeOpts{Name: "gemba_features_checkpoint_bytes", Help: "Size of the last checkpoint."})
	seriesN := prometheus.NewGauge(prometheus.GaugeOpts{Name: "gemba_features_series", Help: "Series held: signals with a feature rule, until they are silent for the rule's retention."})
	dropped := prometheus.NewCounter(prometheus.CounterOpts{Name: "gemba_features_series_dropped_total", Help: "Series dropped after their signal was silent for the rule's retention."})
	if reg != nil {
		// An engine rebuilt on reload registers again: it shares the existing collectors.
		var err error
		samples = promreg.Register(reg, samples, &err)
		windows = promreg.Register(reg, windows, &err)
		emitted = promreg.Register(reg, emitted, &err)
		ckErrors = promreg.Register(reg, ckErrors, &err)
		ckBytes = promreg.Register(reg, ckBytes, &err)
		seriesN = promreg.Register(reg, seriesN, &err)
		dropped = promreg.Register(reg, dropped, &err)
		if err != nil {
			return m, fmt.Errorf("features: register metrics: %w", err)
		}
	}
	m = metrics{samples: samples,
		folded: samples.WithLabelValues("folded"), late: samples.WithLabelValues("late"),
		bad: samples.WithLabelValues("bad"), excluded: samples.WithLabelValues("excluded"),
		outOfBounds: samples.WithLabelValues("out_of_bounds"),
		closedWM:    windows.WithLabelValues("watermark"), closedIdle: windows.WithLabelValues("idle"),
		limited: samples.WithLabelValues("series_limit"),
		emitted: emitted, ckErrors: ckErrors, ckBytes: ckBytes, seriesN: seriesN, dropped: dropped}
	return m, nil
}

// New builds an engine for cfg (which must have passed Validate) and restores the checkpoint from
// opts.Store, if any.
func New(cfg Config, opts Options) (*Engine, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
		if opts.Boot == nil {
			opts.Boot = bootclock.Read
		}
	}
	if opts.Boot == nil {
		opts.Boot = func() (string, time.Duration, bool) { return "", 0, false }
	}
	if opts.Emit == nil {
		opts.Emit = func([]signal.Feature) {}
	}
	if opts.CheckpointInterval <= 0 {
		opts.CheckpointInterval = 10 * time.Second
	}
	if opts.MaxSeries <= 0 {
		opts.MaxSeries = DefaultMaxSeries
	}
	mp, err := mapping.NewCubicallyInterpolatedMapping(sketchAccuracy)
	if err != nil {
		return nil, fmt.Errorf("features: sketch mapping: %w", err)
	}
	e := &Engine{log: opts.Logger, opts: opts, cfg: cfg, entries: map[string]*entry{}, mapping: mp, wmCap: math.MaxInt64}
	for i := range cfg {
		ru := &cfg[i]
		if ru.Window <= 0 || (ru.Hop > 0 && ru.Window%ru.Hop != 0) {
			return nil, fmt.Errorf("features: rule %d (%s): invalid window/hop (validate the config first)", i, ru.Signal)
		}
		e.rules = append(e.rules, compile(ru))
	}
	if opts.TickInterval <= 0 {
		opts.TickInterval = time.Second
		for _, r := range e.rules {
			if r.idle > 0 {
				opts.TickInterval = min(opts.TickInterval, max(r.idle/4, 100*time.Millisecond))
			}
		}
		e.opts.TickInterval = opts.TickInterval
	}
	if e.m, err = newMetrics(opts.Metrics); err != nil {
		return nil, err
	}
	e.restore()
	e.lastCk = opts.Now()
	return e, nil
}

// maxUnmatched bounds the remembered names of signals no rule matches: names from MQTT templates
// may be unbounded. Beyond it they are forgotten (and resolved again when they come back).
const maxUnmatched = 100000

// entry returns the entry for sig, resolving its rule on first sight, and creates the series of
// a pending entry when there is room.
func (e *Engine) entry(sig string) *entry {
	en, ok := e.entries[sig]
	if ok {
		if en.pending != nil && len(e.series) < e.opts.MaxSeries {
			en.s, en.pending = e.newSeries(sig, en.pending), nil
		}
		return en
	}
	en = &entry{}
	for _, r := range e.rules {
		if ok, _ := path.Match(r.src.Signal, sig); ok {
			if len(e.series) < e.opts.MaxSeries {
				en.s = e.newSeries(sig, r)
			} else {
				en.pending = r
			}
			break
		}
	}
	if en.s == nil {
		if e.unmatched >= maxUnmatched {
			// Group-by targets have their track from New on: only the unmatched names are dropped.
			maps.DeleteFunc(e.entries, func(_ string, x *entry) bool { return x.s == nil && x.t == nil })
			e.unmatched = 0
		}
		e.unmatched++
	}
	e.entries[sig] = en
	return en
}

func (e *Engine) newSeries(sig string, r *rule) *series {
	s := &series{sig: sig, r: r, Closed: math.MinInt64}
	s.lastArrival = e.opts.Now()
	if old, ok := e.restored[sig]; ok {
		delete(e.restored, sig)
		if old.ckFP == r.fp {
			s = old
			s.r = r
			// The idle clock continues from the last arrival before the restart; after a crash
			// samples arrived after the checkpoint, of which the newest event time (the
			// watermark) is the best trace left. Never later than now.
			// Restored on the monotonic clock (onMono), as the times taken while running.
			now := e.opts.Now()
			last := max(s.Arrival, s.WM)
			s.lastArrival = onMono(now, last)
			if !s.HasWM && s.Arrival == 0 || last > now.UnixNano() {
				s.lastArrival = now
			}
			if s.ExtAt != 0 {
				s.extAt = onMono(now, s.ExtAt)
			}
			// Downtime is the time the agent did not run (restart): from the checkpoint on after
			// a crash (what was folded after it is lost), from the clean checkpoint's save to now
			// after a clean stop. A clean stop shorter than a window is no gap, whatever the
			// event time a quiet signal skipped meanwhile: the agent watched it throughout.
			// After a crash or a longer stop, windows starting before where the signal's event
			// time has got to by now (extrapolating its silence) are partial, and so is the
			// window of the first usable sample after it (it carries the change over the
			// downtime); windows after it are observed, so a quiet live signal's windows are
			// complete again at once. Short stops add up (shortStop). After a downtime not known
			// (downUnknown) where the restart is in event time is not known either: every window
			// is partial up to the first newer usable sample (Unwatched).
			to, down := s.WM+int64(now.Sub(s.lastArrival)), e.down
			switch {
			case !s.HasWM:
			case e.crashed || down > r.window:
				s.ObsFrom = max(s.ObsFrom, to)
				s.ResetObs, s.HoldOK = true, false
				s.Unwatched = s.Unwatched || down == downUnknown
				s.Stops = nil // every window they were charged to is partial now
				// The idle clock goes on from here even when a value resent with its old time
				// restarts the silence (it leaves observation to the first newer sample).
				if s.extAt.IsZero() || to > s.ExtT+int64(now.Sub(s.extAt)) {
					s.ExtT, s.extAt = to, now
				}
			case down > 0:
				s.shortStop(to, down)
			}
		} else {
			e.discarded.add(discardRuleChanged, sig)
		}
	}
	if r.src.By != "" {
		// Group-by targets are tracked whether or not they have rules of their own.
		en := e.entry(r.src.By)
		if en.t == nil {
			en.t = &track{}
		}
		s.track = en.t
		s.track.deps = append(s.track.deps, s)
	}
	e.series = append(e.series, s)
	e.m.seriesN.Set(float64(len(e.series)))
	return s
}

// batch counts what one Add did, so metrics are updated once per batch.
type batch struct {
	folded, late, bad, excluded, outOfBounds, limited int
	closedWM, closedIdle                              int
}

// Add folds samples into their windows, emits the features of windows that closed, and returns the
// samples to forward raw: it compacts samples in place (the result aliases the argument) keeping
// those of signals without a rule, of rules with forward_raw, and every late sample (late samples
// are never folded, so forwarding them raw is how they are not lost).
func (e *Engine) Add(samples []signal.Sample) []signal.Sample {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return samples
	}
	now := e.opts.Now()
	lim := e.opts.Bounds.At(now)
	e.wmCap = math.MaxInt64
	if e.opts.Bounds.MaxFutureSkew > 0 {
		e.wmCap = now.UnixNano()
	}
	var b batch
	keep := samples[:0]
	for i := range samples {
		smp := &samples[i]
		en := e.entries[smp.Signal]
		if en == nil || en.pending != nil {
			en = e.entry(smp.Signal)
		}
		if (en.s != nil || en.t != nil) && lim.Check(smp.Time) != InBounds {
			// A wrong source clock: neither a window nor a group-by value can hold it.
			// Not an arrival either: a source sending only wrong times is silent for the idle
			// timeout, which closes what its last good sample opened.
			if en.s != nil {
				en.s.nOOB++
			}
			b.outOfBounds++
			keep = append(keep, *smp)
			continue
		}
		if en.t != nil && smp.Quality != signal.Bad && smp.Value.Kind() != signal.KindNone {
			en.t.add(smp.Time.UnixNano(), smp.Value.Text())
			if len(en.t.deps) == 0 {
				en.t.prune() // nothing closes windows to prune it yet
			}
		}
		s := en.s
		if s == nil {
			if en.pending != nil {
				e.refused(smp.Signal, now, &b)
			}
			keep = append(keep, *smp)
			continue
		}
		s.lastArrival = now
		if smp.Source != "" && smp.Source != s.Source {
			s.Source = smp.Source
		}
		late := s.add(e, smp, &b)
		if late || s.r.forwardRaw {
			keep = append(keep, *smp)
		}
	}
	e.finish(&b)
	return keep
}

// finish emits what the batch closed and updates metrics.
func (e *Engine) finish(b *batch) {
	if len(e.out) > 0 {
		e.opts.Emit(e.out)
		e.m.emitted.Add(float64(len(e.out)))
		clear(e.out)
		e.out = e.out[:0]
	}
	if b.folded > 0 {
		e.m.folded.Add(float64(b.folded))
	}
	if b.late > 0 {
		e.m.late.Add(float64(b.late))
	}
	if b.bad > 0 {
		e.m.bad.Add(float64(b.bad))
	}
	if b.excluded > 0 {
		e.m.excluded.Add(float64(b.excluded))
	}
	if b.outOfBounds > 0 {
		e.m.outOfBounds.Add(float64(b.outOfBounds))
	}
	if b.limited > 0 {
		e.m.limited.Add(float64(b.limited))
	}
	if b.closedWM+b.closedIdle > 0 {
		e.closedSince = true
	}
	if b.closedWM > 0 {
		e.m.closedWM.Add(float64(b.closedWM))
	}
	if b.closedIdle > 0 {
		e.m.closedIdle.Add(float64(b.closedIdle))
	}
}

// Run checks idle timeouts and writes periodic checkpoints until ctx ends. It returns nil when ctx
// is cancelled; Close writes the final checkpoint.
func (e *Engine) Run(ctx context.Context) error {
	t := time.NewTicker(e.opts.TickInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			e.Tick()
		}
	}
}

// Tick closes the windows of idle signals and checkpoints when the interval has passed. Run calls
// it; tests call it directly with a fake clock.
func (e *Engine) Tick() {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	now := e.opts.Now()
	var b batch
	for _, s := range e.series {
		s.idleCheck(e, now, &b)
	}
	e.expire(now, &b)
	e.finish(&b)
	var data []byte
	if d := now.Sub(e.lastCk); d >= e.opts.CheckpointInterval || (e.closedSince && d >= earlyCheckpoint) {
		data = e.encode(false)
		e.lastCk, e.closedSince = now, false
	}
	e.mu.Unlock()
	if data != nil {
		e.put(data)
	}
}

// Checkpoint writes the open windows to the store now (not marked clean).
func (e *Engine) Checkpoint() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return errClosed
	}
	data := e.encode(false)
	e.lastCk, e.closedSince = e.opts.Now(), false
	e.mu.Unlock()
	return e.put(data)
}

var errClosed = errors.New("features: engine closed")

// Close writes a clean checkpoint of the open windows (they are not emitted: they continue after a
// restart). It is idempotent; Add after Close forwards everything and folds nothing.
func (e *Engine) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	data := e.encode(true)
	e.mu.Unlock()
	return e.put(data)
}

func (e *Engine) put(data []byte) error {
	if e.opts.Store == nil {
		return nil
	}
	if err := e.opts.Store.PutMeta(CheckpointKey, data); err != nil {
		e.m.ckErrors.Inc()
		e.log.Error("checkpoint failed", "err", err, "bytes", len(data))
		return fmt.Errorf("features: write checkpoint: %w", err)
	}
	e.m.ckBytes.Set(float64(len(data)))
	return nil
}

// Stats are engine totals since start, for tests and the status heartbeat.
type Stats struct {
	Series, Late, Bad, Excluded, Folded, OutOfBounds int64
	// Dropped counts the series dropped after their retention, SeriesLimit the samples not
	// folded because the series limit was reached.
	Dropped, SeriesLimit int64
}

// Stats returns the engine's totals.
func (e *Engine) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	var st Stats
	st.Series = int64(len(e.series))
	st.Dropped, st.SeriesLimit = e.limit.dropped, e.limit.refused
	for _, s := range e.series {
		st.Late += s.nLate
		st.Bad += s.nBad
		st.Excluded += s.nExcl
		st.Folded += s.nFolded
		st.OutOfBounds += s.nOOB
	}
	return st
}

// emit appends a feature record.
func (e *Engine) emit(s *series, name string, start, end int64, v float64, n int64, partial bool, lbl signal.Labels) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return
	}
	e.out = append(e.out, signal.Feature{Signal: s.sig, Name: name, WindowStart: time.Unix(0, start).UTC(),
		WindowEnd: time.Unix(0, end).UTC(), Value: v, Count: n, Labels: lbl, Partial: partial})
}
