// Package quality monitors the agents' data per hub feature × key and per agent stream: freshness,
// sequence gaps, bad-quality share, drift (PSI, KS) and stuck values (unchanged for stuck_after),
// folded from a log every replica shares.
package quality

import (
	"context"
	"fmt"
	"iter"
	"log/slog"
	"math"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub/state/features"
	"github.com/gemba-io/gemba/internal/jsfollow"
	"github.com/gemba-io/gemba/internal/kvretry"
	"github.com/gemba-io/gemba/signal"
)

// Why a log of its own: the ingest consumer is shared, so each agents' message reaches one
// replica, and the feature log keeps only the latest value per key (a batch's intermediate
// values and their sequences are not in it): neither gives every replica every value and
// every sequence. The observers append a compact summary of every fresh message to the monitor
// log; every replica folds the whole log in its order, so all reach the same state (drift and
// bad share are judged in event time at the same log positions), and gaps are computed from what
// all replicas ingested. The fold is idempotent per message identity (agent, stream, incarnation,
// first_seq): a message observed twice (a redelivery after a failed flush) counts once. The log
// keeps reference_lag + window: the state is rebuilt from it on start, with no snapshot.

// Options are the monitor's collaborators.
type Options struct {
	Config      Config
	Definitions features.Definitions
	Resolver    Resolver // the knowledge graph, for line, machine and site keys
	Sink        Sink     // where breaches and recoveries are recorded (the decision log); may be nil
	Logger      *slog.Logger
	Now         func() time.Time // the clock of freshness and gaps (tests)
}

// Sink records events; Record is called from one goroutine, never from the fold.
type Sink interface {
	Record(ctx context.Context, e Event) error
}

// Stats are the monitor's counters.
type Stats struct {
	Folded, Duplicates, Unreadable, Unknown, KeysDropped, Events, EventsDropped, SinkErrors atomic.Uint64
	// Future counts values and samples whose event time was more than max_ahead past their logging.
	Future atomic.Uint64
	// Refollows counts the log follower's new consumers (the last one's node went away, or it lagged).
	Refollows atomic.Uint64
}

// Bounds of the state.
const (
	maxKeys    = 200_000
	maxStreams = 100_000
	eventQueue = 4096
	// followBytes bounds what the follower has buffered: monitor log messages are up to 768 KiB,
	// and the default 500 of them would overrun the connection's pending limit (slow consumer).
	followBytes = 16 << 20
)

// Monitor is one replica's view of the monitoring state.
//
// Lifecycle: Open creates or binds the monitor log, folds it (returning once what was there is
// folded, so a new replica starts complete; no events are raised for that history), then follows
// it, checks freshness and gaps every cfg.Every and hands events to the sink, until Close.
type Monitor struct {
	cfg   Config
	defs  map[string]features.Definition
	names []string
	log   *slog.Logger
	now   func() time.Time
	sink  Sink
	obs   *Observer
	Stats Stats

	mu    sync.RWMutex
	keys  map[string]map[string]*keyState // feature → key → state
	th    map[string]*Thresholds
	nkeys int
	// keysSwept and streamsSwept are the log times of the last sweeps for keys and agent streams
	// not fed for the retention.
	keysSwept, streamsSwept time.Time
	streams                 map[streamRef]*seqTracker
	loaded                  bool
	warned                  bool

	events  chan Event
	metrics *metrics
	stop    context.CancelFunc
	wg      sync.WaitGroup
	closing atomic.Bool
}

// Open starts the monitor. It fails on a bad config or when the log cannot be created.
func Open(ctx context.Context, js jetstream.JetStream, o Options) (*Monitor, error) {
	cfg := o.Config
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	m := &Monitor{cfg: cfg, defs: map[string]features.Definition{}, log: o.Logger, now: o.Now, sink: o.Sink,
		keys: map[string]map[string]*keyState{}, th: map[string]*Thresholds{}, streams: map[streamRef]*seqTracker{}, events: make(chan Event, eventQueue)}
	var monitored features.Definitions
	for _, d := range o.Definitions {
		if _, listed := cfg.Features[d.Name]; cfg.ListedOnly && !listed {
			continue
		}
		monitored = append(monitored, d)
		m.defs[d.Name] = d
		m.names = append(m.names, d.Name)
	}
	sort.Strings(m.names)
	m.metrics = newMetrics(m)
	subj := "gemba_monitor." + cfg.Stream
	st, err := kvretry.Stream(ctx, js, jetstream.StreamConfig{
		Name: cfg.Stream, Subjects: []string{subj}, Replicas: max(cfg.Replicas, 1), Retention: jetstream.LimitsPolicy,
		Discard: jetstream.DiscardOld, Storage: jetstream.FileStorage, MaxAge: cfg.Retention(), MaxMsgSize: maxMsgSize,
		Description: "gemba-hub: what every replica's ingest observed (message identities, monitored values) for quality monitoring",
	})
	if err != nil {
		return nil, fmt.Errorf("monitor log %s: %w", cfg.Stream, err)
	}
	m.obs = newObserver(js, subj, monitored, o.Resolver, cfg.MaxAhead)
	if err := m.follow(ctx, st, subj); err != nil {
		return nil, fmt.Errorf("monitor log %s: %w", cfg.Stream, err)
	}
	return m, nil
}

// Observer is what the agents' ingest consumer is given.
func (m *Monitor) Observer() *Observer { return m.obs }

// Close stops following and waits for the event sender to record the events still queued (for at
// most closeDrain; those left then are dropped and counted).
func (m *Monitor) Close() {
	if m.closing.Swap(true) || m.stop == nil {
		return
	}
	m.stop()
	m.wg.Wait()
}

// follow folds the log (returning once what was there is folded), then follows it until Close,
// through the loss of its consumer's node (see jsfollow: an ordered consumer alone noticed it after
// 10 s, and the quality verdict decisions read was that old).
func (m *Monitor) follow(ctx context.Context, st jetstream.Stream, subj string) error {
	info, err := st.Info(ctx)
	if err != nil {
		return err
	}
	last := info.State.LastSeq
	loaded := make(chan struct{})
	var once sync.Once
	done := func() {
		once.Do(func() {
			// What is stale or missing already was raised by whoever ran then (or by no one):
			// take it as the starting state, silently, rather than raise it again on every start.
			m.check(false)
			m.mu.Lock()
			m.loaded = true
			m.mu.Unlock()
			close(loaded)
		})
	}
	if info.State.Msgs == 0 {
		done()
	}
	f, err := jsfollow.Follow(ctx, jsfollow.Config{Stream: st, Subject: subj, What: "monitor log " + m.cfg.Stream, Log: m.log,
		Refollows: &m.Stats.Refollows, Pull: []jetstream.PullConsumeOpt{jetstream.PullMaxBytes(followBytes)},
	}, func(msg jetstream.Msg, meta *jetstream.MsgMetadata) {
		m.fold(msg.Data(), meta.Sequence.Stream, meta.Timestamp)
		// Caught up at the last sequence the info named, or at the end of what the log holds now
		// (the last message may be gone: deleted, or expired since the info).
		if meta.Sequence.Stream >= last || meta.NumPending == 0 {
			done()
		}
	})
	if err != nil {
		return err
	}
	// Every message up to last may have expired before the first fetch: then nothing is delivered
	// until a new one is logged, and nothing is left to wait for.
	gone := time.NewTicker(time.Second)
	defer gone.Stop()
	for waiting := true; waiting; {
		select {
		case <-loaded:
			waiting = false
		case <-gone.C:
			if i, err := st.Info(ctx); err == nil && (i.State.Msgs == 0 || i.State.FirstSeq > last) {
				done()
			}
		case <-ctx.Done():
			f.Stop()
			return ctx.Err()
		}
	}
	fctx, cancel := context.WithCancel(context.Background())
	sctx, scancel := context.WithCancel(context.Background())
	drain := make(chan struct{})
	var ticking sync.WaitGroup
	m.stop = func() {
		cancel()
		f.Stop()
		ticking.Wait()
		// What is queued is recorded, for at most closeDrain: a hub stopping right after a breach
		// would otherwise lose its event for good (a replica started later raises none for history).
		t := time.AfterFunc(closeDrain, scancel)
		close(drain)
		m.wg.Wait()
		t.Stop()
		scancel()
	}
	ticking.Go(func() { m.tickLoop(fctx) })
	m.wg.Go(func() { m.sendLoop(sctx, drain) })
	return nil
}

// closeDrain bounds how long Close records the events still queued.
const closeDrain = 5 * time.Second

// fold applies one log message. It runs on the follower goroutine.
func (m *Monitor) fold(data []byte, seq uint64, at time.Time) {
	if err := scan(data, nil); err != nil {
		m.Stats.Unreadable.Add(1)
		m.log.Error("monitor log message unreadable, skipped", "stream", m.cfg.Stream, "seq", seq, "err", err)
		return
	}
	f := folder{m: m, at: at.UTC()}
	m.mu.Lock()
	_ = scan(data, &f) // checked above
	loaded := m.loaded
	var lost []Event
	if loaded {
		lost = m.queue(f.evs)
	}
	m.mu.Unlock()
	if loaded {
		m.report(f.evs, lost)
	}
}

// folder applies a message's entries under m.mu.
type folder struct {
	m    *Monitor
	at   time.Time
	ref  streamRef
	skip bool // the current chunk was folded before (or its stream is not tracked)
	evs  []Event
}

func (f *folder) chunk(agent string, st signal.Stream, inc string, first, last uint64) {
	m := f.m
	if f.at.Sub(m.streamsSwept) >= m.cfg.Slice() {
		// Streams not fed for the log's retention (an old incarnation: the buffer was wiped) are
		// forgotten, holes and all, as a replica started now would not know them.
		m.streamsSwept = f.at
		m.evictStreams(f.at)
	}
	f.ref = streamRef{Agent: agent, Stream: st, Incarnation: inc}
	tr := m.tracker(f.ref, f.at)
	if f.skip = tr == nil || tr.seen(first); f.skip {
		if tr != nil {
			m.Stats.Duplicates.Add(1)
		}
		return
	}
	for _, h := range tr.add(first, last, f.at) {
		f.evs = append(f.evs, Event{Kind: KindGap, State: StateRecovered, Agent: agent, Stream: st.String(),
			Incarnation: inc, From: h[0], To: h[1], Time: f.at,
			Why: fmt.Sprintf("sequences %d-%d of %s/%s arrived late: the gap is closed", h[0], h[1], agent, st)})
	}
	tr.expire(f.at.Add(-m.cfg.Retention()))
	m.Stats.Folded.Add(1)
}

func (f *folder) value(feature string, key []byte, v float64, ns int64, partial bool) {
	if f.skip {
		return
	}
	m := f.m
	k := m.key(feature, key, f.at)
	if k == nil {
		return
	}
	bad := partial || !finite(v)
	t := time.Unix(0, ns).UTC()
	if f.m.ahead(t, f.at) {
		// A device clock far ahead would move the key's windows past every later value:
		// counted as a bad value at the time it was logged instead.
		t, bad = f.at, true
		m.Stats.Future.Add(1)
	}
	var b uint32
	if bad {
		b = 1
	}
	f.evs = m.advance(k, t, f.evs)
	if !t.Before(k.newest) {
		k.feeder = f.ref
	}
	k.add(t, v, 1, b, true)
	if !bad && k.run(t, v) {
		e := m.keyEvent(k, KindStuck, k.stuck, k.stuckSince)
		e.Why = fmt.Sprintf("value %g unchanged from %s to %s (%s, %d values; stuck_after %s)", k.runV,
			k.runFrom.Format(time.RFC3339), k.runTo.Format(time.RFC3339), k.runTo.Sub(k.runFrom), k.runN, k.stuckAfter)
		if !k.stuck {
			e.Why = fmt.Sprintf("value changed to %g at %s (stuck_after %s)", v, t.Format(time.RFC3339), k.stuckAfter)
		}
		f.evs = append(f.evs, e)
	}
}

func (f *folder) samples(feature string, key []byte, ns int64, total, bad uint64) {
	if f.skip {
		return
	}
	m := f.m
	k := m.key(feature, key, f.at)
	if k == nil {
		return
	}
	t := time.Unix(0, ns).UTC()
	if f.m.ahead(t, f.at) {
		// As for a value: every sample of them counts as bad, at the time they were logged.
		t, bad = f.at, total
		m.Stats.Future.Add(1)
	}
	f.evs = m.advance(k, t, f.evs)
	k.add(t, 0, uint32(min(total, math.MaxUint32)), uint32(min(bad, math.MaxUint32)), false)
}

// advance evaluates the key's windows when t starts a later slice than it had. Called with m.mu held.
func (m *Monitor) advance(k *keyState, t time.Time, evs []Event) []Event {
	s := k.sliceOf(t)
	if k.cur == math.MinInt64 || s <= k.cur {
		return evs
	}
	lag := int(m.cfg.ReferenceLag / m.cfg.Slice())
	dc, bc := k.evaluate(s-1, m.cfg.Slices, lag)
	if dc {
		e := m.keyEvent(k, KindDrift, k.drifting, k.driftSince)
		e.Why = fmt.Sprintf("PSI %.3f (threshold %g), KS D %.3f p %.2g (threshold D %g at p < %g) over %d current vs %d reference values",
			k.psi, k.th.PSI, k.ks, k.ksP, k.th.KS, k.th.KSAlpha, k.curN, k.refN)
		evs = append(evs, e)
	}
	if bc {
		e := m.keyEvent(k, KindBadShare, k.bad, k.badSince)
		e.Why = fmt.Sprintf("bad-quality share %.3f (threshold %g) in the window ending %s", k.badShare, k.th.BadShare, k.badSince.Format(time.RFC3339))
		evs = append(evs, e)
	}
	return evs
}

func (m *Monitor) keyEvent(k *keyState, kind string, breach bool, at time.Time) Event {
	st := StateRecovered
	if breach {
		st = StateBreach
	}
	return Event{Kind: kind, State: st, Feature: k.feature, Key: k.key, Agent: k.feeder.Agent, Stream: k.feeder.Stream.String(),
		Incarnation: k.feeder.Incarnation, Time: at, PSI: num(k.psi), KS: num(k.ks), KSP: num(k.ksP), BadShare: num(k.badShare),
		Current: k.curN, Reference: k.refN}
}

func num(x float64) float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return 0
	}
	return x
}

// key returns the state of a feature × key fed at log time at, created on first sight; nil for a
// feature this hub does not define (a replica with another config wrote it) or past maxKeys.
// A key not fed for the log's retention starts afresh, as on a replica started now, which would
// not know it (its verdicts, kept while a window is empty, would otherwise hold on one replica
// only). Called with m.mu held.
func (m *Monitor) key(feature string, key []byte, at time.Time) *keyState {
	byKey := m.keys[feature]
	if k := byKey[string(key)]; k != nil { // no allocation for the lookup
		if at.Sub(k.fed) <= m.cfg.Retention() {
			k.fed = at
			return k
		}
		delete(byKey, k.key)
		m.nkeys--
	}
	d, ok := m.defs[feature]
	if !ok {
		m.Stats.Unknown.Add(1)
		return nil
	}
	if at.Sub(m.keysSwept) >= m.cfg.Slice() {
		m.evictKeys(at) // at most once a slice of log time: a sweep visits every key
	}
	if m.nkeys >= maxKeys {
		m.Stats.KeysDropped.Add(1)
		if !m.warned {
			m.warned = true
			m.log.Error("too many monitored keys: new ones are not monitored", "max", maxKeys, "feature", feature, "key", key)
		}
		return nil
	}
	th := m.th[feature]
	if th == nil {
		t := m.cfg.For(feature)
		th = &t
		m.th[feature] = th
	}
	maxAge := d.MaxAge
	if th.MaxAge > 0 {
		maxAge = th.MaxAge
	}
	k := newKeyState(feature, string(key), th, maxAge, m.cfg.ring(), m.cfg.Slice(), max(1, m.cfg.Samples/m.cfg.Slices))
	k.stuckAfter = m.cfg.stuckAfter(feature, d.Feature)
	if byKey == nil {
		byKey = map[string]*keyState{}
		m.keys[feature] = byKey
	}
	k.fed = at
	byKey[k.key] = k
	m.nkeys++
	return k
}

// evictKeys forgets keys not fed for the log's retention (a replica started now would not know
// them either), by log time, so every replica forgets the same, and the memory of keys that are
// gone (a SKU out of the catalogue) is given back. Called with m.mu held.
func (m *Monitor) evictKeys(at time.Time) {
	m.keysSwept = at
	for _, byKey := range m.keys {
		for key, k := range byKey {
			if at.Sub(k.fed) > m.cfg.Retention() {
				delete(byKey, key)
				m.nkeys--
			}
		}
	}
}

// ahead reports whether event time t is further past the log time at than max_ahead allows.
func (m *Monitor) ahead(t, at time.Time) bool {
	return m.cfg.MaxAhead > 0 && t.After(at.Add(m.cfg.MaxAhead))
}

// all iterates every key's state. Called with m.mu held.
func (m *Monitor) all() iter.Seq[*keyState] {
	return func(yield func(*keyState) bool) {
		for _, byKey := range m.keys {
			for _, k := range byKey {
				if !yield(k) {
					return
				}
			}
		}
	}
}

// tracker returns the sequence tracker of an agent stream. Called with m.mu held.
func (m *Monitor) tracker(ref streamRef, at time.Time) *seqTracker {
	if t := m.streams[ref]; t != nil {
		if at.Sub(t.updated) <= m.cfg.Retention() {
			return t
		}
		delete(m.streams, ref) // not fed for the retention: afresh, as on a replica started now
	}
	if len(m.streams) >= maxStreams {
		m.evictStreams(at)
		if len(m.streams) >= maxStreams {
			m.Stats.KeysDropped.Add(1)
			return nil
		}
	}
	t := &seqTracker{updated: at}
	m.streams[ref] = t
	return t
}

// evictStreams forgets trackers not updated for the log's retention (an old incarnation).
func (m *Monitor) evictStreams(now time.Time) {
	for ref, t := range m.streams {
		if now.Sub(t.updated) > m.cfg.Retention() {
			delete(m.streams, ref)
		}
	}
}

// tickLoop checks freshness and gaps against the clock.
func (m *Monitor) tickLoop(ctx context.Context) {
	t := time.NewTicker(m.cfg.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.Check()
		}
	}
}

// Check raises stale and gap events due at the clock's now (the ticker calls it; tests may).
func (m *Monitor) Check() { m.check(true) }

func (m *Monitor) check(emit bool) {
	now := m.now().UTC()
	var evs []Event
	m.mu.Lock()
	for k := range m.all() {
		if k.newest.IsZero() || k.maxAge <= 0 {
			continue
		}
		stale := now.Sub(k.newest) > k.maxAge
		if stale == k.stale {
			continue
		}
		k.stale = stale
		at := k.newest.Add(k.maxAge)
		if !stale {
			at = k.newest
		}
		k.staleSince = at
		e := m.keyEvent(k, KindStale, stale, at)
		e.Why = fmt.Sprintf("newest value at %s, max age %s", k.newest.Format(time.RFC3339), k.maxAge)
		evs = append(evs, e)
	}
	for ref, t := range m.streams {
		for i := 1; i < len(t.runs); i++ {
			r := &t.runs[i]
			from, to := t.runs[i-1].hi+1, r.lo-1
			if r.reported || to-from+1 >= jumpSize || now.Sub(r.opened) < m.cfg.GapAfter {
				continue
			}
			r.reported = true
			evs = append(evs, Event{Kind: KindGap, State: StateBreach, Agent: ref.Agent, Stream: ref.Stream.String(),
				Incarnation: ref.Incarnation, From: from, To: to, Time: r.opened,
				Why: fmt.Sprintf("sequences %d-%d (%d records) of %s/%s incarnation %s never arrived within %s", from, to, to-from+1,
					ref.Agent, ref.Stream, ref.Incarnation, m.cfg.GapAfter)})
		}
	}
	if len(m.streams) > maxStreams/2 {
		m.evictStreams(now)
	}
	emit = emit && m.loaded
	var lost []Event
	if emit {
		lost = m.queue(evs)
	}
	m.mu.Unlock()
	if emit {
		m.report(evs, lost)
	}
}
