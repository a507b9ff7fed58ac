package inventory

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub/state/kvwatch"
	"github.com/gemba-io/gemba/internal/kvretry"
)

// Metrics counts what the store did; the wiring exports them (Prometheus counters).
type Metrics struct {
	Applied           atomic.Uint64 // movements that changed a position
	Duplicates        atomic.Uint64 // movements and snapshots already applied
	BeforeSnapshot    atomic.Uint64 // movements already in the count
	AppliedUnverified atomic.Uint64 // movements older than the horizon, applied to the base (checked against the remembered ids)
	Snapshots         atomic.Uint64 // snapshots that replaced the current one
	StaleSnapshots    atomic.Uint64 // snapshots older than the current one
	BeyondHorizon     atomic.Uint64 // snapshots refused because they fall inside the folded span
	Invalid           atomic.Uint64 // refused inputs (InputError)
	Conflicts         atomic.Uint64 // compare-and-set conflicts, retried
	Retries           atomic.Uint64 // failed KV requests, retried
	Failures          atomic.Uint64 // operations that gave up with an error
	Folded            atomic.Uint64 // movements folded out of a value's list
	ViewUpdates       atomic.Uint64 // summaries taken into the in-memory view
	ViewErrors        atomic.Uint64 // values the view could not decode
	Refollows         atomic.Uint64 // new consumers made by the view's follower (its node went away, or it lagged)
}

func (m *Metrics) count(o Outcome) {
	switch o {
	case Applied:
		m.Applied.Add(1)
	case Duplicate:
		m.Duplicates.Add(1)
	case BeforeSnapshot:
		m.BeforeSnapshot.Add(1)
	case AppliedUnverified:
		m.AppliedUnverified.Add(1)
	case Stale:
		m.StaleSnapshots.Add(1)
	case BeyondHorizon:
		m.BeyondHorizon.Add(1)
	}
}

// Store is the inventory state of the hub: the KV bucket and an in-memory view of its summaries. Open
// creates or binds the bucket and loads the view before returning; a background watcher keeps the view
// current until Close. All methods are safe for concurrent use; several Stores (replicas) may share a bucket.
type Store struct {
	cfg     Config
	kv      jetstream.KeyValue
	log     *slog.Logger
	maxVal  int // largest value we write: the connection's max payload less room for headers
	Metrics Metrics

	view   *view
	recent recent // the last value written to keys in production (see update)

	// stripes serialise the writes of one Store to one key: they would only conflict with each other.
	stripes [256]sync.Mutex
	seed    maphash.Seed

	closed    atomic.Bool
	closeOnce sync.Once
	stop      func() // ends the bucket's follower

	notify atomic.Pointer[func(sku, site string)]
}

// Open creates the bucket if needed (or updates it to cfg's replicas), loads every key's summary into
// memory and starts watching the bucket. ctx bounds the start only.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config, log *slog.Logger) (*Store, error) {
	if err := cfg.err(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "inventory", "bucket", cfg.Bucket)
	kv, err := kvretry.KeyValue(ctx, js, jetstream.KeyValueConfig{
		Bucket:      cfg.Bucket,
		Description: "gemba-hub inventory position per site × SKU",
		History:     1,
		Replicas:    cfg.Replicas,
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("inventory: bucket %s: %w", cfg.Bucket, err)
	}
	s := &Store{cfg: cfg, kv: kv, log: log, seed: maphash.MakeSeed(), maxVal: 1 << 20}
	if nc := js.Conn(); nc != nil && nc.MaxPayload() > 0 {
		s.maxVal = int(nc.MaxPayload())
	}
	// A value must also fit one load pull: a message larger than a pull is never delivered, and
	// the next Open would wait for it until its context ends (the hub's server allows 8 MiB).
	s.maxVal = min(s.maxVal, loadPullBytes) - 4<<10 // subject and headers share the payload limit
	hint := 0
	if st, err := kv.Status(ctx); err == nil {
		hint = int(st.Values())
	}
	s.view = newView(hint)
	// One follower loads every key's latest value and then keeps the view current: pulled, bounded
	// in bytes (a KV watch pushed the whole bucket at the server's pace, which at 300,000 keys queued
	// ~22 MiB for this connection in the server while the view was being built), and made again at
	// once when its consumer's node goes away (a watch noticed after 10 s; see kvwatch).
	stop, err := kvwatch.Follow(ctx, js, kv, s.take, kvwatch.Options{
		Log: log, Refollows: &s.Metrics.Refollows, Pull: []jetstream.PullConsumeOpt{jetstream.PullMaxBytes(loadPullBytes)},
	})
	if err != nil {
		return nil, fmt.Errorf("inventory: loading %w", err)
	}
	s.stop = stop
	log.Info("inventory loaded", "keys", s.view.len())
	return s, nil
}

// loadPullBytes bounds what the follower asks for per pull.
var loadPullBytes = 2 << 20 // a variable for tests

// take puts a watched entry's summary into the view.
func (s *Store) take(e jetstream.KeyValueEntry) {
	if e.Operation() != jetstream.KeyValuePut {
		return
	}
	s.takeValue(e.Key(), e.Value(), e.Revision())
}

// takeValue puts a key's value at revision rev into the view.
func (s *Store) takeValue(key string, value []byte, rev uint64) {
	sum, err := decodeSummary(value)
	if err == nil {
		_, _, err = splitKey(key)
	}
	if err != nil {
		s.Metrics.ViewErrors.Add(1)
		s.log.Warn("inventory value skipped", "key", key, "revision", rev, "err", err)
		return
	}
	sum.rev = rev
	s.view.put(key, sum)
	s.recent.seen(key, rev)
	s.Metrics.ViewUpdates.Add(1)
	if fn := s.notify.Load(); fn != nil {
		site, sku, _ := splitKey(key)
		(*fn)(sku, site)
	}
}

// Notify sets fn to be called with the SKU and site of every position that lands in the bucket
// (this replica's writes and other replicas'), once stored: what a decider re-evaluates on. fn
// must not block; it runs on the watcher's goroutine.
func (s *Store) Notify(fn func(sku, site string)) { s.notify.Store(&fn) }

// Close stops the watcher. It is idempotent; the JetStream connection belongs to the caller.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.stop()
	})
	return nil
}

// Move applies a movement. An InputError (wrapping ErrInvalid) names the movement's id and the bad field.
func (s *Store) Move(ctx context.Context, m Movement) (Result, error) {
	now := s.cfg.now()
	if err := m.check(now, s.cfg.MaxFuture); err != nil {
		s.Metrics.Invalid.Add(1)
		return Result{}, err
	}
	r, err := s.update(ctx, m.Site, m.SKU, "movement "+m.ID, func(st *state, c clock) (Outcome, bool) {
		return st.applyMove(&m, c)
	}, nil)
	if err == nil {
		s.Metrics.count(r.Outcome)
	}
	return r, err
}

// Snapshot applies an on-hand count.
func (s *Store) Snapshot(ctx context.Context, sn Snapshot) (Result, error) {
	now := s.cfg.now()
	if err := sn.check(now, s.cfg.MaxFuture); err != nil {
		s.Metrics.Invalid.Add(1)
		return Result{}, err
	}
	r, err := s.update(ctx, sn.Site, sn.SKU, "snapshot "+sn.ID, func(st *state, c clock) (Outcome, bool) {
		return st.applySnapshot(&sn, c)
	}, nil)
	if err == nil {
		if r.Outcome == Applied {
			s.Metrics.Snapshots.Add(1)
		} else {
			s.Metrics.count(r.Outcome)
		}
	}
	return r, err
}

// MoveAll applies movements of one SKU at one site, in order, with one read and one write of the
// key (Move takes a read and a compare-and-set each): what the ingest of a batch of agent messages
// does with the production of one key. Results and refusals are per movement, in input order: a
// movement the store refuses as invalid (ErrInvalid, wrapped) has its error in bad and a zero
// Result; err is a failure to read or write the key, after which a prefix of the valid movements
// may be stored (they are idempotent by id: the caller repeats them).
//
// Movements older than the horizon, and those a full list folds at once, have no place in the
// list: a value remembers their ids for the horizon, within the list's bound (at least recentCap
// of them), and a write whose reply was lost recognises itself by them. So a batch applying more
// of them than recentCap is written in several writes of at most recentCap each.
func (s *Store) MoveAll(ctx context.Context, ms []Movement) (rs []Result, bad []error, err error) {
	if len(ms) == 0 {
		return nil, nil, nil
	}
	now := s.cfg.now()
	bad = make([]error, len(ms))
	site, sku := ms[0].Site, ms[0].SKU
	valid := 0
	for i := range ms {
		if ms[i].Site != site || ms[i].SKU != sku {
			return nil, nil, fmt.Errorf("inventory: MoveAll of %s/%s given a movement of %s/%s", site, sku, ms[i].Site, ms[i].SKU)
		}
		if e := ms[i].check(now, s.cfg.MaxFuture); e != nil {
			s.Metrics.Invalid.Add(1)
			bad[i] = e
			continue
		}
		valid++
	}
	rs = make([]Result, len(ms))
	if valid == 0 {
		return rs, bad, nil
	}
	what := fmt.Sprintf("%d movements from %s", valid, ms[0].ID)
	applied := func(o Outcome) bool { return o != Duplicate && o != 0 }
	outs := make([]Outcome, len(ms))
	var r Result
	for start := 0; start < len(ms); {
		// This write takes ms[start:stop]; a retry never takes more than the attempt before it.
		stop := len(ms)
		var cur, lost []Outcome // this attempt's outcomes; those of the last write whose reply was lost
		r, err = s.update(ctx, site, sku, what, func(st *state, c clock) (Outcome, bool) {
			cur = make([]Outcome, len(ms))
			write := false
			for i := start; i < stop; i++ {
				if bad[i] != nil {
					continue
				}
				o, w := st.applyMove(&ms[i], c)
				cur[i], write = o, write || w
				if st.remembered >= recentCap {
					stop = i + 1
				}
			}
			return Applied, write
		}, func() { lost = cur })
		if err != nil {
			return nil, bad, err
		}
		if lost != nil && !slices.ContainsFunc(cur[start:stop], applied) {
			cur = lost // our write went through although its reply was lost
		}
		copy(outs[start:stop], cur[start:stop])
		start = stop
	}
	for i := range ms {
		if bad[i] == nil {
			rs[i] = Result{Outcome: outs[i], Position: r.Position}
			s.Metrics.count(outs[i])
		}
	}
	return rs, bad, nil
}

// update is the read → modify → compare-and-set loop. It retries conflicts at once and failed requests
// with backoff for cfg.RetryFor. A write whose reply was lost may have been stored: the retry then finds
// the movement's id (or the snapshot) in the value and reports what that write did rather than
// Duplicate, since the write was most likely ours; lost (when not nil) is called at each such write.
func (s *Store) update(ctx context.Context, site, sku, what string, apply func(*state, clock) (Outcome, bool), lost func()) (Result, error) {
	if s.closed.Load() {
		return Result{}, ErrClosed
	}
	key := keyOf(site, sku)
	mu := &s.stripes[maphash.String(s.seed, key)%uint64(len(s.stripes))]
	mu.Lock()
	defer mu.Unlock()

	var (
		giveUp    = time.Now().Add(s.cfg.RetryFor)
		uncertain Outcome // outcome of a write whose reply was lost (0: none)
		conflicts int
		backoff   = 10 * time.Millisecond
		buf       []byte
	)
	fail := func(err error) (Result, error) {
		s.Metrics.Failures.Add(1)
		return Result{}, fmt.Errorf("inventory: %s at %s/%s: %w", what, site, sku, err)
	}
	retry := func(err error) error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !time.Now().Before(giveUp) || !transient(err) {
			return err
		}
		s.Metrics.Retries.Add(1)
		s.log.Debug("inventory request failed, retrying", "key", key, "err", err, "backoff", backoff)
		if err := sleepCtx(ctx, backoff/2+rand.N(backoff/2+1)); err != nil {
			return err
		}
		backoff = min(2*backoff, time.Second)
		return nil
	}
	for attempt := 0; ; attempt++ {
		var st *state
		var rev uint64
		var size int
		var err error
		if attempt == 0 { // the first attempt may start from what this Store wrote last; any later one reads
			st, rev, size = s.remembered(key)
		}
		fromCache := st != nil
		if !fromCache {
			st, rev, size, err = s.read(ctx, key)
		}
		if err != nil {
			if errors.Is(err, errCorrupt) {
				return fail(fmt.Errorf("key %s: %w", key, err)) // never overwrite what we cannot read
			}
			if err := retry(err); err != nil {
				return fail(err)
			}
			continue
		}
		c := newClock(&s.cfg, s.cfg.now())
		out, write := apply(st, c)
		if !write && fromCache {
			continue // nothing to write: answer with the bucket's position, not a remembered one
		}
		if !write {
			if out == Duplicate && uncertain != 0 {
				out = uncertain
			}
			sum := st.summary()
			sum.rev = rev
			return Result{Outcome: out, Position: sum.position(site, sku)}, nil
		}
		if cap(buf) < size+256 {
			buf = make([]byte, 0, size+256)
		}
		buf = st.fit(c, buf[:0], s.maxVal)
		opCtx, cancel := context.WithTimeout(ctx, s.cfg.OpTimeout)
		var newRev uint64
		if rev == 0 {
			newRev, err = s.kv.Create(opCtx, key, buf)
		} else {
			newRev, err = s.kv.Update(opCtx, key, buf, rev)
		}
		cancel()
		switch {
		case err == nil:
			sum := st.summary()
			sum.rev = newRev
			s.view.put(key, sum) // read-your-writes; the watcher brings the same revision later
			s.recent.put(key, newRev, buf)
			s.Metrics.Folded.Add(uint64(st.folded))
			return Result{Outcome: out, Position: sum.position(site, sku)}, nil
		case errors.Is(err, jetstream.ErrKeyExists), errors.Is(err, jetstream.ErrKeyRevisionMismatch):
			// Another replica wrote first: read again. Each conflict means someone progressed, but a loser
			// can lose many times in a row, so spread the retries out and bound them like failures.
			s.Metrics.Conflicts.Add(1)
			s.recent.forget(key)
			conflicts++
			if !time.Now().Before(giveUp) {
				return fail(fmt.Errorf("still conflicting after %d attempts in %s: %w", conflicts, s.cfg.RetryFor, err))
			}
			if conflicts > 2 {
				if err := sleepCtx(ctx, rand.N(time.Duration(min(conflicts, 20))*time.Millisecond)); err != nil {
					return fail(err)
				}
			} else if ctx.Err() != nil {
				return fail(ctx.Err())
			}
		case errors.Is(err, nats.ErrMaxPayload):
			return fail(err)
		default:
			uncertain = out
			if lost != nil {
				lost()
			}
			s.recent.forget(key) // the write may have been stored: read it back
			if err := retry(err); err != nil {
				return fail(err)
			}
		}
	}
}

// remembered is the value this Store last wrote to key, decoded, when recent has it (nil state
// otherwise): a compare-and-set on its revision fails if anyone wrote the key since.
func (s *Store) remembered(key string) (*state, uint64, int) {
	b, rev, ok := s.recent.get(key)
	if !ok {
		return nil, 0, 0
	}
	st, err := decodeState(b)
	if err != nil { // cannot happen for what we encoded; read the bucket instead
		s.recent.forget(key)
		return nil, 0, 0
	}
	return st, rev, len(b)
}

// read returns a key's state, revision (0 when absent) and the size of its value.
func (s *Store) read(ctx context.Context, key string) (*state, uint64, int, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.OpTimeout)
	defer cancel()
	e, err := s.kv.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return &state{}, 0, 0, nil
	case err != nil:
		return nil, 0, 0, err
	}
	st, err := decodeState(e.Value())
	if err != nil {
		return nil, 0, 0, fmt.Errorf("revision %d: %w", e.Revision(), err)
	}
	return st, e.Revision(), len(e.Value()), nil
}

// The shared KV retry rules (internal/kvretry).
var (
	sleepCtx  = kvretry.Sleep
	transient = kvretry.Transient
)

// Get returns the position of one SKU at one site from the in-memory view.
func (s *Store) Get(sku, site string) (Position, bool) {
	if sku == "" || site == "" {
		return Position{}, false
	}
	sum, ok := s.view.get(keyOf(site, sku))
	if !ok {
		return Position{}, false
	}
	return sum.position(site, sku), true
}

// List returns the positions matching f from the in-memory view, sorted by site then SKU.
func (s *Store) List(f Filter) []Position { return s.view.list(f) }
