// Package features is the hub's feature store: the latest value of every configured edge feature
// per key (line, SKU, site, ...) with its event time and lineage, on a JetStream log all replicas share.
package features

import (
	"context"
	"log/slog"
	"math"
	"path"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub/state/kvkey"
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
	Revision    uint64            `json:"-"`       // the log's sequence of the message that stored it (0: not yet stored)
}

// PerHour is a count over the value's window scaled to an hour (units made in a window → units per
// hour); 0 when the window has no length. Rules see it as lines[].units_per_hour.
func (v *Value) PerHour() float64 {
	if h := v.WindowEnd.Sub(v.WindowStart).Hours(); h > 0 {
		return v.Value / h
	}
	return 0
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
	Applied, Older, Unmatched, Unresolved, NonFinite atomic.Uint64
	// Future counts records refused for a window ending beyond max_future (an agent's clock ahead).
	Future atomic.Uint64
	// Writes counts values written to the log, Messages the messages that carried them, Snapshots
	// the snapshots this replica wrote, Unreadable the log messages it could not decode.
	// Dropped the values that cannot be stored (one too big for a log message).
	Writes, Messages, Snapshots, Unreadable, Dropped atomic.Uint64
	// Refollows counts the log followers' new consumers (the last one's server went away, or it lagged).
	Refollows atomic.Uint64
}

// Store keeps the latest values in memory, mirrored to and from the feature log (see log.go).
//
// Lifecycle: Open loads the log and starts following it (other replicas' writes become readable
// here); Apply and Flush are called by one ingest goroutine; Get and List by anyone; Close stops
// the follower.
type Store struct {
	cfg    Config
	defVer string
	js     jetstream.JetStream
	stream jetstream.Stream
	subj   string // gemba_features.<bucket>.
	writer string // this instance, in the header of the log messages it writes
	res    Resolver
	log    *slog.Logger
	now    func() time.Time
	Stats  Stats

	mu    sync.RWMutex
	vals  map[string]*Value // by key (kvkey.Join(name, key))
	dirty map[string]struct{}
	warn  map[string]bool // unresolved signals already logged
	// warnFuture: agents already logged for windows ending beyond maxFuture.
	warnFuture map[string]bool
	maxFuture  time.Duration
	route      map[routeKey][]route
	// applied is the stream sequence of the last message the follower folded: a snapshot taken
	// now covers every message up to it.
	applied uint64
	// unknownFrom is the sequence of the first log message in an encoding this version does not
	// know (a newer replica's): compaction stops short of it, as the snapshot cannot hold its
	// values. purged is where this replica's last compaction purged up to.
	unknownFrom, purged uint64

	notify atomic.Pointer[func(name, key string)]

	stop    context.CancelFunc
	wg      sync.WaitGroup
	closing atomic.Bool
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
	changed := s.apply(ins)
	if fn := s.notify.Load(); fn != nil {
		for _, k := range changed {
			(*fn)(k[0], k[1])
		}
	}
}

// apply folds records in under the lock and returns the (name, key) of each value it changed.
func (s *Store) apply(ins []Input) (changed [][2]string) {
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
			if f.WindowEnd.After(now.Add(s.maxFuture)) {
				s.Stats.Future.Add(1)
				if a := in.Lineage.Agent; !s.warnFuture[a] && len(s.warnFuture) < 10000 {
					s.warnFuture[a] = true
					s.log.Warn("feature refused: its window ends in the future (the agent's clock is ahead?); logged once per agent",
						"feature", d.Name, "signal", f.Signal, "agent", a, "window_end", f.WindowEnd.UTC(), "hub_now", now, "max_future", s.maxFuture)
				}
				continue
			}
			cur := s.vals[kvk]
			if cur != nil && !later(f.WindowEnd, in.Lineage.StreamSeq, f.Signal, cur) {
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
			*v = Value{
				Name: d.Name, Key: key, Value: f.Value, Count: f.Count, WindowStart: f.WindowStart.UTC(),
				WindowEnd: f.WindowEnd.UTC(), Partial: f.Partial, Historical: in.Historical,
				Lineage: in.Lineage, DefVersion: s.defVer, Updated: now,
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
			changed = append(changed, [2]string{d.Name, key})
		}
	}
	return changed
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
