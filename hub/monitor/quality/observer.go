package quality

import (
	"context"
	"fmt"
	"math"
	"path"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub/state/features"
	"github.com/gemba-io/gemba/signal"
)

// Resolver places a signal in the plant (the knowledge graph), as the feature store does.
type Resolver = features.Resolver

// maxMessage is the size past which a monitor log message is sealed (JetStream's default max
// payload is 1 MiB); maxMsgSize is the log's max_msg_size, which no message may exceed: a chunk
// that would take one past it starts a new message, and what of one chunk alone does not fit is
// left out (ObserverStats.Truncated), since a message over it would be refused every time.
const (
	maxMessage = 768 << 10
	maxMsgSize = maxMessage + 64<<10
)

// Observer is the ingest side: it sees every fresh agents' message on this replica (it
// implements the agents consumer's Observer) and appends what the monitor needs to the monitor
// log, from which every replica's Monitor folds the same state. Observe and Flush are called by
// the one ingest goroutine.
type Observer struct {
	js    jetstream.JetStream
	subj  string
	defs  features.Definitions
	res   Resolver
	Stats ObserverStats

	mu      sync.Mutex
	routes  map[routeKey][]target
	enc     encoder
	open    bool
	pending [][]byte
	agg     map[aggKey]*sampleRec // per chunk of samples, reused
	// maxAhead is the monitor's max_ahead: samples dated further ahead of now are summed apart, so
	// that the fold counts them bad without the others of their key (0: no check).
	maxAhead time.Duration
}

// aggKey sums a message's samples per feature × key, those dated past max_ahead apart.
type aggKey struct {
	feature, key string
	ahead        bool
}

// ObserverStats are the observer's counters.
type ObserverStats struct {
	Chunks, Values, Messages atomic.Uint64
	// Truncated counts chunks whose values did not all fit in one message (the rest left out).
	Truncated atomic.Uint64
}

type routeKey struct{ signal, feature string } // feature "" for samples

// target is a hub feature a record feeds and its key (empty when taken from the sku label).
type target struct {
	feature string
	bySKU   bool
	key     string
}

// maxRoutes bounds the route cache; past it the cache starts over.
const maxRoutes = 1 << 18

func newObserver(js jetstream.JetStream, subj string, defs features.Definitions, res Resolver, maxAhead time.Duration) *Observer {
	return &Observer{js: js, subj: subj, defs: defs, res: res, routes: map[routeKey][]target{}, agg: map[aggKey]*sampleRec{}, maxAhead: maxAhead}
}

// route returns the hub features a record of (signal, edge feature) feeds; an empty edge feature
// (a sample) feeds every definition of its signal.
func (o *Observer) route(sig, feat string) []target {
	rk := routeKey{sig, feat}
	if ts, ok := o.routes[rk]; ok {
		return ts
	}
	ts := []target{}
	for i := range o.defs {
		d := &o.defs[i]
		if feat != "" && d.Feature != feat {
			continue
		}
		if ok, _ := path.Match(d.Signal, sig); !ok {
			continue
		}
		t := target{feature: d.Name}
		switch d.Key {
		case features.BySKU:
			t.bySKU = true
		case features.BySignal:
			t.key = sig
		default:
			if o.res == nil {
				continue
			}
			machine, line, site, ok := o.res.Place(sig)
			if !ok {
				continue
			}
			t.key = map[features.KeyKind]string{features.ByMachine: machine, features.ByLine: line, features.BySite: site}[d.Key]
			if t.key == "" {
				continue
			}
		}
		ts = append(ts, t)
	}
	if len(o.routes) >= maxRoutes {
		clear(o.routes)
	}
	o.routes[rk] = ts
	return ts
}

func keyOf(t *target, labels signal.Labels) string {
	if t.bySKU {
		k, _ := labels.Get("sku")
		return k
	}
	return t.key
}

// Observe records one fresh message: its identity always (for gaps), its monitored values.
func (o *Observer) Observe(b *signal.Batch) {
	if b.Stream != signal.StreamFeatures && b.Stream != signal.StreamSamples {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.open || len(o.enc.buf) > maxMessage {
		o.seal()
		o.enc.reset()
		o.open = true
	}
	o.Stats.Chunks.Add(1)
	mark := o.enc.mark()
	n, ok := o.encode(b)
	if !ok && mark.buf > 2 {
		// Other chunks share the message: this one starts the next, whole if it fits.
		o.enc.rewind(mark)
		o.seal()
		o.enc.reset()
		o.open = true
		n, ok = o.encode(b)
	}
	o.Stats.Values.Add(uint64(n))
	if !ok {
		o.Stats.Truncated.Add(1)
	}
}

// encode appends the chunk's identity and values to the message being written, and reports how
// many values it wrote and whether they all fit under maxMsgSize (those that do not are left out).
// Called with o.mu held.
func (o *Observer) encode(b *signal.Batch) (n int, ok bool) {
	// full: an entry of feature and key (and its string, if new) might not fit.
	full := func(feature, key string) bool { return len(o.enc.buf)+len(feature)+len(key)+64 > maxMsgSize }
	o.enc.chunk(&b.Header)
	if b.Stream == signal.StreamFeatures {
		for i := range b.Features {
			f := &b.Features[i]
			for _, t := range o.route(f.Signal, f.Name) {
				if k := keyOf(&t, f.Labels); k != "" {
					if full(t.feature, k) {
						return n, false
					}
					o.enc.value(t.feature, k, f.Value, unixNano(f.WindowEnd), f.Partial)
					n++
				}
			}
		}
		return n, true
	}
	clear(o.agg)
	var bound int64 = math.MaxInt64
	if o.maxAhead > 0 {
		bound = time.Now().Add(o.maxAhead).UnixNano()
	}
	for i := range b.Samples {
		s := &b.Samples[i]
		for _, t := range o.route(s.Signal, "") {
			k := keyOf(&t, s.Labels)
			if k == "" {
				continue
			}
			ak := aggKey{t.feature, k, unixNano(s.Time) > bound}
			a := o.agg[ak]
			if a == nil {
				a = &sampleRec{Feature: t.feature, Key: k}
				o.agg[ak] = a
			}
			a.Total++
			if s.Quality == signal.Bad {
				a.Bad++
			}
			a.Time = max(a.Time, unixNano(s.Time))
		}
	}
	for _, a := range o.agg {
		if full(a.Feature, a.Key) {
			return n, false
		}
		o.enc.samples(a.Feature, a.Key, a.Time, a.Total, a.Bad)
	}
	return n, true
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// seal closes the message being written. Called with o.mu held.
func (o *Observer) seal() {
	if o.open && len(o.enc.buf) > 2 {
		// The buffer is handed over, not copied: the next message starts a new one.
		o.pending = append(o.pending, o.enc.buf)
		o.enc.buf = make([]byte, 0, min(2*len(o.enc.buf), maxMessage+64<<10))
	}
	o.open = false
}

// Flush appends what was observed since the last flush to the monitor log and waits for it to be
// stored. On error what it took is kept for the next Flush (the caller retries it, or hands the
// batch back to be observed again): the monitor folds a message identity once however often it
// is logged.
func (o *Observer) Flush(ctx context.Context) (err error) {
	o.mu.Lock()
	o.seal()
	msgs := o.pending
	o.pending = nil
	o.mu.Unlock()
	if len(msgs) == 0 {
		return nil
	}
	defer func() {
		if err != nil && len(msgs) <= maxKept {
			// Kept, unless it has piled up (failure after failure, each handed-back batch observed
			// again): then it is dropped, and its batches are observed again on their redelivery.
			o.mu.Lock()
			o.pending = append(msgs, o.pending...)
			o.mu.Unlock()
		}
	}()
	futs := make([]jetstream.PubAckFuture, 0, len(msgs))
	for _, data := range msgs {
		f, err := o.js.PublishMsgAsync(&nats.Msg{Subject: o.subj, Data: data})
		if err != nil {
			return fmt.Errorf("monitor log %s: %w", o.subj, err)
		}
		futs = append(futs, f)
	}
	for _, f := range futs {
		select {
		case <-f.Ok():
			o.Stats.Messages.Add(1)
		case err := <-f.Err():
			return fmt.Errorf("monitor log %s: %w", o.subj, err)
		case <-ctx.Done():
			return fmt.Errorf("monitor log %s: %w", o.subj, ctx.Err())
		}
	}
	return nil
}

// maxKept bounds the messages a failed Flush keeps for the next (each at most maxMessage).
const maxKept = 16

// finite reports whether v is a usable number (NaN and ±Inf count as bad values).
func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
