package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gemba-io/gemba/buffer"
	"github.com/gemba-io/gemba/features"
	"github.com/gemba-io/gemba/internal/promreg"
	"github.com/gemba-io/gemba/internal/ratelog"
	"github.com/gemba-io/gemba/signal"
)

// writer is the single path from collectors into the buffer. It groups the samples of concurrent
// Emit calls (for up to linger, or until maxChunk bytes) into one chunk, appends it durably, feeds
// the feature engine, and only then releases the Emit callers, so a collector acknowledges its
// source only for data that is on disk.
type writer struct {
	buf buffer.Buffer
	// version is the config version stamped on chunks; a reload switches it between two flushes,
	// so every chunk carries exactly one version and no chunk after the switch the old one.
	version  atomic.Pointer[string]
	linger   time.Duration
	maxChunk int
	log      *slog.Logger
	m        *metrics
	// fold feeds the feature engine and returns the samples to forward raw (aliasing its argument);
	// nil forwards everything.
	fold    func([]signal.Sample) []signal.Sample
	scratch []signal.Sample
	// bounds are the sample times the agent trusts (agent.timestamps); the zero value trusts all.
	bounds features.TimeBounds
	now    func() time.Time
	oob    *prometheus.CounterVec // by collector and bound
	warn   *ratelog.Logger        // one line per signal and minute
	// appendCtx bounds appends that wait for space (policy block); the agent cancels it when the
	// shutdown timeout expires.
	appendCtx context.Context
	reqs      chan *emitReq
	featReady chan struct{}

	mu       sync.Mutex
	features []signal.Feature // emitted by the feature engine, waiting to be appended

	done chan struct{}
}

type emitReq struct {
	samples []signal.Sample
	meta    []buffer.Meta // written in the transaction of the samples' chunks (EmitMeta)
	done    chan error
}

var errStopping = errors.New("agent is stopping")

func newWriter(appendCtx context.Context, buf buffer.Buffer, version string, linger time.Duration, maxChunk int, log *slog.Logger, m *metrics) *writer {
	var err error
	// The collector label comes from the sample's Source ("<collector>:<node or topic>"): the
	// signal name would be unbounded cardinality (MQTT templates), so it goes to the log instead.
	oob := promreg.Register(m.reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gemba_writer_out_of_bounds_samples_total",
		Help: "Samples whose source time is outside agent.timestamps (bound future or past): stored Bad with the reason, never folded into features.",
	}, []string{"collector", "bound"}), &err)
	if err != nil {
		log.Error("register writer metrics", "err", err) // only a conflicting registration; counting goes on unregistered
	}
	w := &writer{
		appendCtx: appendCtx, buf: buf, linger: linger, maxChunk: maxChunk, log: log, m: m,
		now: time.Now, oob: oob, warn: ratelog.New(log, time.Minute),
		reqs:      make(chan *emitReq),
		featReady: make(chan struct{}, 1),
		done:      make(chan struct{}),
	}
	w.setVersion(version)
	return w
}

// setVersion switches the config version stamped on the chunks of the next flush.
func (w *writer) setVersion(v string) { w.version.Store(&v) }

var reqPool = sync.Pool{New: func() any { return &emitReq{done: make(chan error, 1)} }}

// Emit implements collectors.Emitter.
func (w *writer) Emit(ctx context.Context, samples []signal.Sample) error {
	return w.EmitMeta(ctx, samples, nil)
}

// EmitMeta is Emit, with buffer meta keys stored in the same durable write as the samples: a
// collector's record of what it has stored (the MQTT collector's digests of stored messages)
// then survives a crash exactly when the samples do. Meta of samples the buffer refused by policy
// (drop_newest) is not written. The meta values must not change until EmitMeta returns.
func (w *writer) EmitMeta(ctx context.Context, samples []signal.Sample, meta []buffer.Meta) error {
	if len(samples) == 0 && len(meta) == 0 {
		return nil
	}
	r := reqPool.Get().(*emitReq)
	r.samples, r.meta = samples, meta
	select {
	case w.reqs <- r:
	case <-ctx.Done():
		r.samples, r.meta = nil, nil
		reqPool.Put(r)
		return ctx.Err()
	case <-w.done:
		return errStopping
	}
	// Once handed over, wait for the outcome even if ctx ends: the writer still holds the slice.
	err := <-r.done
	r.samples, r.meta = nil, nil
	reqPool.Put(r)
	return err
}

// GetMeta reads a key written by EmitMeta (or the buffer's PutMeta); not found without a meta store.
func (w *writer) GetMeta(key string) ([]byte, bool, error) {
	if ms, ok := w.buf.(buffer.MetaStore); ok {
		return ms.GetMeta(key)
	}
	return nil, false, nil
}

// metaEmitter is what the writer offers beyond collectors.Emitter (the MQTT collector looks for it).
type metaEmitter interface {
	EmitMeta(ctx context.Context, samples []signal.Sample, meta []buffer.Meta) error
	GetMeta(key string) ([]byte, bool, error)
}

var _ metaEmitter = (*writer)(nil)

// EmitMeta forwards to the writer and counts like Emit (the supervisor's wrapper must not hide
// the writer's EmitMeta from a collector).
func (e countingEmitter) EmitMeta(ctx context.Context, samples []signal.Sample, meta []buffer.Meta) error {
	me, ok := e.s.emit.(metaEmitter)
	if !ok {
		if len(meta) > 0 {
			return errors.New("agent: emitter cannot store meta with samples")
		}
		return e.Emit(ctx, samples)
	}
	err := me.EmitMeta(ctx, samples, meta)
	if err == nil && len(samples) > 0 {
		e.s.mSamples.Add(float64(len(samples)))
		e.s.mu.Lock()
		e.s.samples += uint64(len(samples))
		e.s.mu.Unlock()
	}
	return err
}

// GetMeta forwards to the writer.
func (e countingEmitter) GetMeta(key string) ([]byte, bool, error) {
	if me, ok := e.s.emit.(metaEmitter); ok {
		return me.GetMeta(key)
	}
	return nil, false, nil
}

// AddFeatures queues features for the features stream. Safe for concurrent use.
func (w *writer) AddFeatures(fs []signal.Feature) {
	if len(fs) == 0 {
		return
	}
	w.mu.Lock()
	w.features = append(w.features, fs...)
	w.mu.Unlock()
	select {
	case w.featReady <- struct{}{}:
	default:
	}
}

// run is the writer loop. It returns when ctx is done, after draining every Emit already accepted
// and every pending feature.
func (w *writer) run(ctx context.Context) {
	defer close(w.done)
	var (
		batch  []*emitReq
		enc    []byte
		timer  = time.NewTimer(time.Hour)
		timerC <-chan time.Time
	)
	timer.Stop()
	defer timer.Stop()
	size := 0
	flush := func() {
		if len(batch) > 0 {
			enc = w.flushSamples(batch, enc[:0])
			clear(batch)
			batch, size = batch[:0], 0
		}
		w.flushFeatures()
		timerC = nil
	}
	for {
		select {
		case r := <-w.reqs:
			batch = append(batch, r)
			size += estimate(r.samples)
			if size >= w.maxChunk || w.linger == 0 {
				flush()
				continue
			}
			if timerC == nil {
				timer.Reset(w.linger)
				timerC = timer.C
			}
		case <-timerC:
			flush()
		case <-w.featReady:
			if timerC == nil {
				flush()
			}
		case <-ctx.Done():
			flush()
			return
		}
	}
}

// estimate guesses the encoded size of samples without encoding them.
func estimate(s []signal.Sample) int {
	n := 0
	for i := range s {
		n += 64 + len(s[i].Signal) + len(s[i].Source) + len(s[i].Reason)
		if v, ok := s[i].Value.Str(); ok {
			n += len(v)
		}
	}
	return n
}

// flushSamples folds the batch into the feature engine, appends the samples to forward raw as
// chunks of at most maxChunk bytes (in one Append, so one group commit), and releases the Emit callers
// with the outcome. Folding happens before the append so that the engine decides what is forwarded
// (late samples always are); if the append then fails with an I/O error, the callers get the error and
// their sources redeliver, which can count those samples twice in a feature window. That is the price
// of never losing a sample, and only on disk failure.
func (w *writer) flushSamples(batch []*emitReq, enc []byte) []byte {
	all := w.scratch[:0]
	var meta []buffer.Meta
	for _, r := range batch {
		all = append(all, r.samples...)
		meta = append(meta, r.meta...)
	}
	w.checkTimes(all)
	fwd := all
	if w.fold != nil {
		fwd = w.fold(all)
	}
	// The capture time is now, when the agent holds the samples, not their source time: the uplink
	// marks a message historical by how long it waited here, not by how old its values are.
	k := chunker{stream: signal.StreamSamples, version: *w.version.Load(), max: w.maxChunk, enc: enc, captured: w.now()}
	for i := range fwd {
		s := &fwd[i]
		k.enc = signal.AppendSampleJSON(k.begin(), s)
		if k.end(s.Time) {
			// One sample alone is too big for a record (a huge string payload): keep the fact, not
			// the value, so the source is released instead of redelivering it forever.
			big := *s
			big.Value, big.Quality = signal.Value{}, signal.Bad
			big.Reason = fmt.Sprintf("value of %d bytes exceeds agent.max_chunk (%d bytes)", len(k.enc), w.maxChunk)
			k.enc = signal.AppendSampleJSON(k.alone(), &big)
			w.m.oversized.Inc()
		}
	}
	chunks := k.finish()
	enc = k.enc
	var err error
	switch {
	case len(chunks) > 0:
		err = w.append(signal.StreamSamples, len(fwd), meta, chunks...)
	case len(meta) > 0:
		// Nothing forwarded raw (the feature engine took every sample): the meta alone.
		err = w.putMeta(meta)
	}
	clear(all) // drop references to strings so the scratch slice does not pin them
	w.scratch = all[:0]
	for _, r := range batch {
		r.done <- err
	}
	return enc
}

// checkTimes flags samples whose source time is out of bounds: Bad, with the reason, counted and
// logged. They are stored (the value may be right where the clock is wrong) and the feature engine,
// with the same bounds, forwards them without folding. ss is the writer's copy: the caller's
// samples are not changed.
func (w *writer) checkTimes(ss []signal.Sample) {
	lim := w.bounds.At(w.now())
	for i := range ss {
		s := &ss[i]
		why := lim.Check(s.Time)
		if why == features.InBounds {
			continue
		}
		reason := w.bounds.Reason(s.Time, why)
		if s.Reason != "" {
			reason += "; " + s.Reason
		}
		s.Quality, s.Reason = signal.Bad, reason
		coll, _, _ := strings.Cut(s.Source, ":")
		if coll == "" {
			coll = "unknown"
		}
		w.oob.WithLabelValues(coll, why.String()).Inc()
		w.warn.Warn(s.Signal, "sample time out of bounds: stored as Bad", "signal", s.Signal, "source", s.Source,
			"time", s.Time, "bound", why.String(), "max_future_skew", w.bounds.MaxFutureSkew, "min_time", w.bounds.MinTime.Time)
	}
}

func (w *writer) flushFeatures() {
	w.mu.Lock()
	fs := w.features
	w.features = nil
	w.mu.Unlock()
	if len(fs) == 0 {
		return
	}
	k := chunker{stream: signal.StreamFeatures, version: *w.version.Load(), max: w.maxChunk, captured: w.now()}
	for i := range fs {
		k.enc = signal.AppendFeatureJSON(k.begin(), &fs[i])
		k.end(fs[i].WindowEnd) // a feature is small: one alone always fits a record
	}
	if err := w.append(signal.StreamFeatures, len(fs), nil, k.finish()...); err != nil {
		w.log.Error("features lost: buffer refused them", "count", len(fs), "err", err)
	}
}

// append writes chunks holding n records in one group commit, and meta in the transaction of the
// chunks. A drop_newest refusal is the configured policy, counted by the buffer; the emitters are
// released with nil so their sources do not redeliver forever (and no meta is written).
func (w *writer) append(st signal.Stream, n int, meta []buffer.Meta, chunks ...[]byte) error {
	// Shutdown does not cancel the append: a chunk accepted from a collector is written. Only the
	// hard shutdown deadline ends a wait for space.
	var err error
	if ma, ok := w.buf.(buffer.MetaAppender); ok && len(meta) > 0 {
		_, err = ma.AppendMeta(w.appendCtx, st, meta, chunks...)
	} else {
		_, err = w.buf.Append(w.appendCtx, st, chunks...)
		if err == nil && len(meta) > 0 {
			// A buffer without MetaAppender (the in-memory one survives no crash anyway): after
			// the records, never before them.
			err = w.putMeta(meta)
		}
	}
	switch {
	case err == nil:
		w.m.written.WithLabelValues(st.String()).Add(float64(n))
		return nil
	case errors.Is(err, buffer.ErrFull):
		w.m.refused.WithLabelValues(st.String()).Add(float64(n))
		return nil
	default:
		w.m.writeErrors.WithLabelValues(st.String()).Inc()
		w.log.Error("buffer append failed", "stream", st.String(), "records", n, "err", err)
		return err
	}
}

// chunker packs JSON records into chunks (buffer records) of at most max bytes, in order:
//
//	k.enc = appendRecord(k.begin(), rec)
//	k.end(rec.Time)
type chunker struct {
	stream   signal.Stream
	version  string
	max      int
	captured time.Time // stamped on every chunk: when the agent received the records
	enc      []byte    // the open chunk's records array
	start    int       // where the last record begins, before its separator
	moved    []byte
	c        signal.Chunk
	chunks   [][]byte
}

// begin opens the next record and returns the buffer to append it to.
func (k *chunker) begin() []byte {
	k.start = len(k.enc)
	if k.c.Count == 0 {
		k.enc = append(k.enc[:0], '[')
		k.start = 1
	} else {
		k.enc = append(k.enc, ',')
	}
	return k.enc
}

// end closes the record appended since begin, captured at t. A record that would take the open
// chunk past max starts the next one. It reports whether the record alone reaches max, in which
// case the caller may encode a smaller stand-in into alone().
func (k *chunker) end(t time.Time) (tooBig bool) {
	if len(k.enc) >= k.max && k.c.Count > 0 {
		k.moved = append(k.moved[:0], k.enc[k.start+1:]...) // the record, without its comma
		k.enc = k.enc[:k.start]
		k.cut()
		k.enc = append(append(k.enc[:0], '['), k.moved...)
	}
	if k.c.Count == 0 || t.Before(k.c.Oldest) {
		k.c.Oldest = t
	}
	if t.After(k.c.Newest) {
		k.c.Newest = t
	}
	k.c.Count++
	return len(k.enc) >= k.max
}

// alone empties the open chunk, which holds just the last record, for a replacement.
func (k *chunker) alone() []byte { return append(k.enc[:0], '[') }

func (k *chunker) cut() {
	if k.c.Count == 0 {
		return
	}
	k.enc = append(k.enc, ']')
	k.c.Stream, k.c.ConfigVersion, k.c.Captured, k.c.Records = k.stream, k.version, k.captured, k.enc
	k.chunks = append(k.chunks, signal.AppendChunk(make([]byte, 0, len(k.enc)+64), &k.c))
	k.c, k.enc = signal.Chunk{}, k.enc[:0]
}

// finish closes the open chunk and returns every chunk.
func (k *chunker) finish() [][]byte {
	k.cut()
	return k.chunks
}

// putMeta stores meta without records.
func (w *writer) putMeta(meta []buffer.Meta) error {
	ms, ok := w.buf.(buffer.MetaStore)
	if !ok {
		return nil // nothing to keep it in: the collector falls back to what it remembers in memory
	}
	for _, m := range meta {
		if err := ms.PutMeta(m.Key, m.Value); err != nil {
			w.m.writeErrors.WithLabelValues(signal.StreamSamples.String()).Inc()
			w.log.Error("buffer meta write failed", "key", m.Key, "err", err)
			return err
		}
	}
	return nil
}
