// Package features is the hub's feature store: the latest value of every configured edge feature
// per key (line, SKU, site, ...) with its event time and lineage, in a KV bucket all replicas share.
package features

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"path"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub/state/kvkey"
	"github.com/gemba-io/gemba/hub/state/kvwatch"
	"github.com/gemba-io/gemba/signal"
)

// Lineage says where a value came from, back to the agent's buffer record and the stream message.
type Lineage struct {
	Agent         string `json:"agent"`
	Site          string `json:"site"`
	Incarnation   string `json:"incarnation,omitempty"`
	ConfigVersion string `json:"config_version"`
	Signal        string `json:"signal"`
	FirstSeq      uint64 `json:"first_seq"`  // the agent's buffer sequence (message identity)
	StreamSeq     uint64 `json:"stream_seq"` // the message's sequence in the agents' stream
}

// Value is the latest value of one feature for one key.
type Value struct {
	Name        string            `json:"name"`
	Key         string            `json:"key"`
	Value       float64           `json:"value"`
	Count       int64             `json:"count"`
	WindowStart time.Time         `json:"window_start"`
	WindowEnd   time.Time         `json:"window_end"` // the event time of the value
	Partial     bool              `json:"partial,omitempty"`
	Historical  bool              `json:"historical,omitempty"` // from a replayed backlog: never acted on
	Labels      map[string]string `json:"labels,omitempty"`
	Lineage     Lineage           `json:"lineage"`
	DefVersion  string            `json:"def_version"`
	Updated     time.Time         `json:"updated"` // when the hub stored it
	Revision    uint64            `json:"-"`
}

// Stale reports whether the value is older than maxAge at now.
func (v *Value) Stale(now time.Time, maxAge time.Duration) bool {
	return now.Sub(v.WindowEnd) > maxAge
}

// Input is one edge feature record with the envelope it came in.
type Input struct {
	Feature    *signal.Feature
	Lineage    Lineage // Signal is taken from Feature
	Historical bool
}

// Resolver places a signal in the plant (the knowledge graph).
type Resolver interface {
	// Place returns the machine, line and site of a signal, ok=false when the graph does not know it.
	Place(signal string) (machine, line, site string, ok bool)
}

// Stats are the store's counters (read by the hub's metrics).
type Stats struct {
	Applied, Older, Unmatched, Unresolved, NonFinite, Conflicts, Writes atomic.Uint64
}

// Store keeps the latest values in memory, mirrored to and from the KV bucket.
//
// Lifecycle: Open loads the bucket and starts watching it (other replicas' writes become readable
// here); Apply and Flush are called by one ingest goroutine; Get and List by anyone; Close stops
// the watcher.
type Store struct {
	cfg    Config
	defVer string
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	subj   string // "$KV.<bucket>."
	res    Resolver
	log    *slog.Logger
	now    func() time.Time
	Stats  Stats

	mu    sync.RWMutex
	vals  map[string]*Value // by KV key
	dirty map[string]struct{}
	warn  map[string]bool // unresolved signals already logged
	route map[routeKey][]route
	// inflight holds the encoded values being written (until settled), to recognise their echo
	// from the watcher without decoding it.
	inflight map[string][]byte

	stop func() // ends the bucket watch

	notify atomic.Pointer[func(name, key string)]
}

// Open creates or binds the bucket and loads it.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config, res Resolver, log *slog.Logger) (*Store, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: cfg.Bucket, Replicas: max(cfg.Replicas, 1), History: 1,
		Description: "gemba-hub: latest value of each feature per key, with lineage",
	})
	if err != nil {
		return nil, fmt.Errorf("features bucket %s: %w", cfg.Bucket, err)
	}
	s := &Store{
		cfg: cfg, defVer: cfg.Definitions.Version(), js: js, kv: kv, subj: "$KV." + cfg.Bucket + ".",
		res: res, log: log, now: time.Now,
		vals: map[string]*Value{}, dirty: map[string]struct{}{}, warn: map[string]bool{}, route: map[routeKey][]route{}, inflight: map[string][]byte{},
	}
	stop, err := kvwatch.Follow(kv, s.remote)
	if err != nil {
		return nil, fmt.Errorf("features bucket %s: %w", cfg.Bucket, err)
	}
	s.stop = stop
	return s, nil
}

// Close stops watching the bucket. It does not flush: the caller flushes before acking input.
func (s *Store) Close() {
	if s.stop != nil {
		s.stop()
		s.stop = nil
	}
}

// Notify sets fn to be called with the name and key of every value that lands in the bucket (this
// replica's writes and other replicas'), once stored: what a decider re-evaluates on. fn must not
// block; it runs on the watcher's goroutine.
func (s *Store) Notify(fn func(name, key string)) { s.notify.Store(&fn) }

// remote applies a bucket update (another replica's write, or our own coming back).
func (s *Store) remote(e jetstream.KeyValueEntry) {
	name, key, ok := s.take(e)
	if !ok {
		return
	}
	if fn := s.notify.Load(); fn != nil {
		(*fn)(name, key)
	}
}

// take folds a bucket update into the view and returns the feature and key it is about, ok when it
// is news.
func (s *Store) take(e jetstream.KeyValueEntry) (string, string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.vals[e.Key()]
	if e.Operation() != jetstream.KeyValuePut {
		delete(s.vals, e.Key())
		return "", "", false
	}
	if cur != nil && e.Revision() < cur.Revision {
		return "", "", false
	}
	if cur != nil && e.Revision() == cur.Revision {
		// Our own write, back after its ack already recorded the revision: nothing to change, but
		// it is stored, which is what a reader waiting for the value is told.
		return cur.Name, cur.Key, true
	}
	if mine, ok := s.inflight[e.Key()]; ok && cur != nil && bytes.Equal(mine, e.Value()) {
		// Our own write, back before its ack: the value is cur, only the revision is new. (Decoding
		// it cost as much as the rest of the write.)
		cur.Revision = e.Revision()
		return cur.Name, cur.Key, true
	}
	var v Value
	if err := json.Unmarshal(e.Value(), &v); err != nil {
		s.log.Error("feature value unreadable, ignored", "bucket", s.cfg.Bucket, "key", e.Key(), "revision", e.Revision(), "err", err)
		return "", "", false
	}
	v.Revision = e.Revision()
	if _, dirty := s.dirty[e.Key()]; dirty && cur != nil && cur.WindowEnd.After(v.WindowEnd) {
		cur.Revision = e.Revision() // ours is newer and will be written over this revision
		return "", "", false
	}
	s.vals[e.Key()] = &v
	return v.Name, v.Key, true
}

// keyOf returns the key of a feature for a definition, or "" when it cannot be placed.
func (s *Store) keyOf(d *Definition, f *signal.Feature) string {
	switch d.Key {
	case BySignal:
		return f.Signal
	case BySKU:
		sku, _ := f.Labels.Get("sku")
		return sku
	}
	if s.res == nil {
		return ""
	}
	machine, line, site, ok := s.res.Place(f.Signal)
	if !ok {
		return ""
	}
	switch d.Key {
	case ByMachine:
		return machine
	case ByLine:
		return line
	case BySite:
		return site
	}
	return ""
}

// route is where records of one (signal, feature name) go: a definition and, unless the key comes
// from the record's labels (sku), the KV key. Computed once per pair (path.Match per definition, the
// graph lookup, the key's escaping) instead of once per record.
type route struct {
	def      int
	key, kvk string // empty for BySKU (taken from each record), or when the key is unknown
}

type routeKey struct{ signal, feature string }

// maxRoutes bounds the route cache (signals × features seen); past it the cache starts over.
const maxRoutes = 1 << 20

// routes returns the routes of a record, computing them on first sight. Called with s.mu held.
// The resolver's answers are cached with them: the hub loads its graph once, at start.
func (s *Store) routes(f *signal.Feature) []route {
	if rs, ok := s.route[routeKey{f.Signal, f.Name}]; ok {
		return rs
	}
	rs := []route{} // non-nil: "matches nothing" is cached too
	for di := range s.cfg.Definitions {
		d := &s.cfg.Definitions[di]
		if d.Feature != f.Name {
			continue
		}
		if ok, _ := path.Match(d.Signal, f.Signal); !ok {
			continue
		}
		r := route{def: di}
		if d.Key != BySKU {
			if r.key = s.keyOf(d, f); r.key != "" {
				r.kvk = kvkey.Join(d.Name, r.key)
			}
		}
		rs = append(rs, r)
	}
	if len(s.route) >= maxRoutes {
		clear(s.route)
	}
	s.route[routeKey{f.Signal, f.Name}] = rs
	return rs
}

// Apply folds records into the in-memory view, keeping per key the value with the latest window
// end (an older or equal window never overwrites: out-of-order and re-delivered records are
// harmless). Changed keys are written by the next Flush.
func (s *Store) Apply(ins []Input) {
	now := s.now().UTC()
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range ins {
		in := &ins[i]
		f := in.Feature
		rs := s.routes(f)
		if len(rs) == 0 {
			s.Stats.Unmatched.Add(1)
			continue
		}
		for _, r := range rs {
			d := &s.cfg.Definitions[r.def]
			key, kvk := r.key, r.kvk
			if d.Key == BySKU {
				if key, _ = f.Labels.Get("sku"); key != "" {
					kvk = kvkey.Join(d.Name, key)
				}
			}
			if key == "" {
				s.Stats.Unresolved.Add(1)
				if !s.warn[f.Signal] && len(s.warn) < 10000 {
					s.warn[f.Signal] = true
					s.log.Warn("feature not placed: its key is unknown", "feature", d.Name, "key", d.Key,
						"signal", f.Signal, "agent", in.Lineage.Agent, "hint", "add the signal to the graph (or the sku label)")
				}
				continue
			}
			if math.IsNaN(f.Value) || math.IsInf(f.Value, 0) {
				s.Stats.NonFinite.Add(1)
				continue
			}
			cur := s.vals[kvk]
			if cur != nil && !f.WindowEnd.After(cur.WindowEnd) {
				s.Stats.Older.Add(1)
				continue
			}
			v := cur
			_, dirty := s.dirty[kvk]
			if !dirty || v == nil {
				// A value already written may be in a reader's hands or awaiting its ack: replace it.
				// One not written since the last flush is ours alone (Apply and Flush run on one
				// goroutine, readers copy under the lock): overwrite it in place.
				v = &Value{}
				s.vals[kvk] = v
				s.dirty[kvk] = struct{}{}
			}
			rev := v.Revision
			if cur != nil {
				rev = cur.Revision
			}
			*v = Value{
				Name: d.Name, Key: key, Value: f.Value, Count: f.Count, WindowStart: f.WindowStart.UTC(),
				WindowEnd: f.WindowEnd.UTC(), Partial: f.Partial, Historical: in.Historical,
				Lineage: in.Lineage, DefVersion: s.defVer, Updated: now, Revision: rev,
			}
			v.Lineage.Signal = f.Signal
			if len(f.Labels) > 0 {
				// Always a new map: a reader's copy of the previous value shares the old one.
				v.Labels = make(map[string]string, len(f.Labels))
				for _, l := range f.Labels {
					v.Labels[l.Key] = l.Value
				}
			}
			s.Stats.Applied.Add(1)
		}
	}
}

// Flush writes every changed key to the bucket (asynchronously, compare-and-set on the revision
// this replica last saw) and returns when all are stored. A conflict with another replica's write
// is settled by keeping the later window. On error the keys stay dirty.
func (s *Store) Flush(ctx context.Context) error {
	s.mu.Lock()
	type pending struct {
		key string
		val *Value
		rev uint64 // read under the lock: the watcher updates revisions
		fut jetstream.PubAckFuture
	}
	ps := make([]pending, 0, len(s.dirty))
	for k := range s.dirty {
		v := s.vals[k]
		ps = append(ps, pending{key: k, val: v, rev: v.Revision})
	}
	clear(s.dirty)
	s.mu.Unlock()

	var firstErr error
	fail := func(key string, err error) {
		s.mu.Lock()
		s.dirty[key] = struct{}{}
		s.mu.Unlock()
		if firstErr == nil {
			firstErr = err
		}
	}
	// At most maxInFlight writes wait for their acks: a flush of more keys than the connection's
	// async publish limit (4,000 by default) would otherwise stall and fail the whole batch.
	waited := 0
	for i := range ps {
		for ; waited <= i-maxInFlight; waited++ {
			s.settleWrite(ctx, ps[waited].key, ps[waited].val, ps[waited].fut, fail)
		}
		p := &ps[i]
		data, err := encodeValue(p.val)
		if err != nil {
			fail(p.key, fmt.Errorf("features: encode %s: %w", p.key, err))
			continue
		}
		msg := nats.NewMsg(s.subj + p.key)
		msg.Data = data
		s.mu.Lock()
		s.inflight[p.key] = data
		s.mu.Unlock()
		p.fut, err = s.js.PublishMsgAsync(msg, jetstream.WithExpectLastSequencePerSubject(p.rev))
		if err != nil {
			s.landed(p.key)
			fail(p.key, fmt.Errorf("features: write %s: %w", p.key, err))
		}
	}
	for _, p := range ps[waited:] {
		s.settleWrite(ctx, p.key, p.val, p.fut, fail)
	}
	return firstErr
}

// maxInFlight bounds the unacknowledged writes of one Flush.
const maxInFlight = 1024

// settleWrite waits for one write's ack and settles a conflict; fail keeps the key dirty.
func (s *Store) settleWrite(ctx context.Context, key string, val *Value, fut jetstream.PubAckFuture, fail func(string, error)) {
	if fut == nil {
		return
	}
	defer s.landed(key)
	select {
	case ack := <-fut.Ok():
		s.Stats.Writes.Add(1)
		s.stored(key, val, ack.Sequence)
	case err := <-fut.Err():
		if !wrongLastSeq(err) {
			fail(key, fmt.Errorf("features: write %s: %w", key, err))
			return
		}
		s.Stats.Conflicts.Add(1)
		if err := s.settle(ctx, key, val); err != nil {
			fail(key, err)
		}
	case <-ctx.Done():
		fail(key, ctx.Err())
	}
}

// landed forgets an in-flight write once settled.
func (s *Store) landed(key string) {
	s.mu.Lock()
	delete(s.inflight, key)
	s.mu.Unlock()
}

// stored records the revision of our own write unless a newer one is already known.
func (s *Store) stored(key string, v *Value, rev uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur := s.vals[key]; cur == v || (cur != nil && cur.Revision < rev && !cur.WindowEnd.After(v.WindowEnd)) {
		cur.Revision = rev
	}
}

// settle resolves a compare-and-set conflict: read the bucket's value and keep the later window.
func (s *Store) settle(ctx context.Context, key string, ours *Value) error {
	for range 10 {
		e, err := s.kv.Get(ctx, key)
		var rev uint64
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return fmt.Errorf("features: read %s: %w", key, err)
		default:
			var theirs Value
			if json.Unmarshal(e.Value(), &theirs) == nil && !ours.WindowEnd.After(theirs.WindowEnd) {
				theirs.Revision = e.Revision()
				s.mu.Lock()
				if cur := s.vals[key]; cur == nil || !cur.WindowEnd.After(theirs.WindowEnd) {
					s.vals[key] = &theirs
				}
				s.mu.Unlock()
				return nil
			}
			rev = e.Revision()
		}
		data, err := json.Marshal(ours)
		if err != nil {
			return err
		}
		if rev == 0 {
			rev, err = s.kv.Create(ctx, key, data)
		} else {
			rev, err = s.kv.Update(ctx, key, data, rev)
		}
		if err == nil {
			s.Stats.Writes.Add(1)
			s.stored(key, ours, rev)
			return nil
		}
		if !wrongLastSeq(err) && !errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("features: write %s: %w", key, err)
		}
	}
	return fmt.Errorf("features: write %s: still conflicting after 10 attempts", key)
}

func wrongLastSeq(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// Reading is a value with its freshness for a reader.
type Reading struct {
	Value
	Stale bool `json:"stale"`
	// AgeSeconds is the time since the window ended.
	AgeSeconds float64 `json:"age_s"`
}

func (s *Store) reading(v *Value, now time.Time) Reading {
	r := Reading{Value: *v, AgeSeconds: now.Sub(v.WindowEnd).Seconds()}
	r.Stale = true
	for i := range s.cfg.Definitions {
		if d := &s.cfg.Definitions[i]; d.Name == v.Name {
			r.Stale = v.Stale(now, d.MaxAge)
		}
	}
	return r
}

// Get returns the value of feature name for key. A value past its definition's max age reads as
// stale; a value of a feature no longer defined reads as stale too.
func (s *Store) Get(name, key string) (Reading, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	v := s.vals[kvkey.Join(name, key)]
	if v == nil {
		return Reading{}, false
	}
	return s.reading(v, s.now()), true
}

// List returns the values of feature name (every feature when empty), sorted by name and key.
func (s *Store) List(name string) []Reading {
	now := s.now()
	s.mu.RLock()
	out := make([]Reading, 0, len(s.vals))
	for _, v := range s.vals {
		if name == "" || v.Name == name {
			out = append(out, s.reading(v, now))
		}
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].Key < out[j].Key
	})
	return out
}

// Definitions returns the configured definitions and their version.
func (s *Store) Definitions() (Definitions, string) { return s.cfg.Definitions, s.defVer }
