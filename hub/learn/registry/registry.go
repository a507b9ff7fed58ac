package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/internal/kvretry"
)

// Buckets names the registry's JetStream buckets.
type Buckets struct {
	// Sets is the object store holding the fitted sets, one object per version.
	Sets string `yaml:"sets" json:"sets"`
	// State is the KV bucket holding the active and shadow pointers ("state") and the change log
	// ("change.<n>").
	State string `yaml:"state" json:"state"`
	// Lock is the KV bucket of the refit lock (its TTL is the lock's).
	Lock string `yaml:"lock" json:"lock"`
}

// Default bucket names.
const (
	DefaultSetsBucket  = "GEMBA_MODELS"
	DefaultStateBucket = "GEMBA_MODELS_STATE"
	DefaultLockBucket  = "GEMBA_MODELS_LOCK"
)

// Defaults fills what was left empty.
func (b *Buckets) Defaults() {
	if b.Sets == "" {
		b.Sets = DefaultSetsBucket
	}
	if b.State == "" {
		b.State = DefaultStateBucket
	}
	if b.Lock == "" {
		b.Lock = DefaultLockBucket
	}
}

var (
	// ErrUnknownVersion: no set stored under that version (or prefix).
	ErrUnknownVersion = errors.New("unknown model set version")
	// ErrNoPrevious: a rollback with nothing to return to.
	ErrNoPrevious = errors.New("no previous model set to roll back to")
	// ErrConflict: the state kept changing under a change (retried, then given up).
	ErrConflict = errors.New("model state changed concurrently")
	// ErrNothingToClear: clearing the shadow when no shadow set is set records nothing.
	ErrNothingToClear = errors.New("nothing to clear")
	// ErrUnchanged: promoting the set already active records nothing; the error comes with the
	// current state. Not a failure: promoting the same set twice is a no-op.
	ErrUnchanged = errors.New("already active: nothing recorded")
)

// Operations a change records.
const (
	OpPromote     = "promote"
	OpRollback    = "rollback"
	OpShadow      = "shadow"
	OpClearShadow = "clear-shadow"
)

// MaxPrevious bounds the rollback stack.
const MaxPrevious = 16

// Change is one change of the pointers: what it did, who, why, when, from → to, and the state after.
type Change struct {
	Seq      uint64    `json:"seq"`
	Op       string    `json:"op"`
	From     string    `json:"from,omitempty"`
	To       string    `json:"to,omitempty"`
	Active   string    `json:"active,omitempty"`
	Shadow   string    `json:"shadow,omitempty"`
	Previous []string  `json:"previous,omitempty"`
	By       string    `json:"by"`
	Why      string    `json:"why,omitempty"`
	At       time.Time `json:"at"`
}

// Meta describes a stored set without loading it (from its object's metadata).
type Meta struct {
	Version  string    `json:"version"`
	Created  time.Time `json:"created"`
	By       string    `json:"by"`
	Why      string    `json:"why,omitempty"`
	From     time.Time `json:"from"`
	To       time.Time `json:"to"`
	Series   int       `json:"series"`
	Failed   int       `json:"failed"`
	MASE     float64   `json:"mase"`
	Baseline float64   `json:"baseline_mase"`
	// Backtested is how many series MASE and Baseline average over: 0 when none was long enough
	// to backtest (the two are then no score), -1 for a set stored before it was recorded.
	Backtested int    `json:"backtested"`
	Size       uint64 `json:"size"`
}

// Registry stores sets and changes the pointers. Safe for concurrent use.
type Registry struct {
	js   jetstream.JetStream
	obs  jetstream.ObjectStore
	kv   jetstream.KeyValue
	lock jetstream.KeyValue
	b    Buckets
	lg   *slog.Logger
	now  func() time.Time
}

// Options open a registry.
type Options struct {
	Buckets  Buckets
	Replicas int
	// LockTTL is how long a refit lock lasts without a refresh (default 2 minutes).
	LockTTL time.Duration
	Logger  *slog.Logger
	Now     func() time.Time
}

// Open creates or updates the registry's buckets.
func Open(ctx context.Context, js jetstream.JetStream, o Options) (*Registry, error) {
	o.Buckets.Defaults()
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.LockTTL <= 0 {
		o.LockTTL = 2 * time.Minute
	}
	rep := max(o.Replicas, 1)
	obs, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: o.Buckets.Sets, Replicas: rep,
		Description: "gemba-hub: demand model sets, immutable, one object per version"})
	if err != nil {
		return nil, fmt.Errorf("model sets bucket %s: %w", o.Buckets.Sets, err)
	}
	// History 1: the change log is its own keys, each written once.
	kv, err := kvretry.KeyValue(ctx, js, jetstream.KeyValueConfig{Bucket: o.Buckets.State, Replicas: rep, History: 1,
		Description: "gemba-hub: active and shadow model sets (key state, changed by CAS) and their change log (change.<n>)"})
	if err != nil {
		return nil, fmt.Errorf("model state bucket %s: %w", o.Buckets.State, err)
	}
	// The bucket's TTL is the lock's: a holder that dies stops refreshing and its key expires.
	lock, err := kvretry.KeyValue(ctx, js, jetstream.KeyValueConfig{Bucket: o.Buckets.Lock, Replicas: rep, History: 1,
		TTL: o.LockTTL, Description: "gemba-hub: refit lock (one refit at a time over all replicas)"})
	if err != nil {
		return nil, fmt.Errorf("model lock bucket %s: %w", o.Buckets.Lock, err)
	}
	return &Registry{js: js, obs: obs, kv: kv, lock: lock, b: o.Buckets, lg: o.Logger.With("bucket", o.Buckets.Sets), now: o.Now}, nil
}

// Bind opens the registry's buckets as they are, for the CLI (models list, show, history, and the
// changes: promote, rollback, shadow, refit): it never creates them nor changes their settings (a
// newer release's, the lock's TTL, which a refit's lock then follows). A bucket that is not there
// is an error naming it.
func Bind(ctx context.Context, js jetstream.JetStream, o Options) (*Registry, error) {
	o.Buckets.Defaults()
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	missing := func(what, bucket string, err error) error {
		if errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("%s %s: not found on these servers: the hub has not run with learn.enabled against them "+
				"yet, or learn.buckets names another bucket: %w", what, bucket, err)
		}
		return fmt.Errorf("%s %s: %w", what, bucket, err)
	}
	var obs jetstream.ObjectStore
	var kv, lock jetstream.KeyValue
	err := kvretry.Attempts(ctx, kvretry.SetupAttempt, func(ctx context.Context) (err error) {
		obs, err = js.ObjectStore(ctx, o.Buckets.Sets)
		return err
	})
	if err != nil {
		return nil, missing("model sets bucket", o.Buckets.Sets, err)
	}
	for _, b := range []struct {
		what, name string
		kv         *jetstream.KeyValue
	}{{"model state bucket", o.Buckets.State, &kv}, {"model lock bucket", o.Buckets.Lock, &lock}} {
		err := kvretry.Attempts(ctx, kvretry.SetupAttempt, func(ctx context.Context) (err error) {
			*b.kv, err = js.KeyValue(ctx, b.name)
			return err
		})
		if err != nil {
			return nil, missing(b.what, b.name, err)
		}
	}
	return &Registry{js: js, obs: obs, kv: kv, lock: lock, b: o.Buckets, lg: o.Logger.With("bucket", o.Buckets.Sets), now: o.Now}, nil
}

// Store stores s as a new version and returns it. A set already stored (same content) is left as
// it is: an object is written once.
func (r *Registry) Store(ctx context.Context, s *Set) (string, error) {
	data, err := s.encode()
	if err != nil {
		return "", err
	}
	v := s.Version
	if info, err := r.obs.GetInfo(ctx, v); err == nil && !info.Deleted {
		return v, nil
	} else if err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return "", fmt.Errorf("store model set %s: %w", v, err)
	}
	sum := s.Summary()
	md := map[string]string{
		"created": s.Created.Format(time.RFC3339Nano), "by": s.By, "why": s.Why,
		"from": s.From.Format(time.RFC3339), "to": s.To.Format(time.RFC3339),
		"series": strconv.Itoa(sum.Series), "failed": strconv.Itoa(sum.Failed),
		"mase": strconv.FormatFloat(sum.MeanMASE, 'g', 6, 64), "baseline_mase": strconv.FormatFloat(sum.MeanBaseline, 'g', 6, 64),
		"backtested": strconv.Itoa(sum.Backtested),
	}
	meta := jetstream.ObjectMeta{Name: v, Metadata: md,
		Description: fmt.Sprintf("%d series, data %s to %s", sum.Series, day(s.From), day(s.To))}
	if _, err := r.obs.Put(ctx, meta, bytes.NewReader(data)); err != nil {
		return "", fmt.Errorf("store model set %s: %w", v, err)
	}
	return v, nil
}

// Load returns a stored set, checked: a set whose bytes are not the version it is stored under is a
// corrupt-set error naming the version.
func (r *Registry) Load(ctx context.Context, version string) (*Set, error) {
	data, err := r.obs.GetBytes(ctx, version)
	if errors.Is(err, jetstream.ErrObjectNotFound) || errors.Is(err, jetstream.ErrInvalidStoreName) || errors.Is(err, jetstream.ErrBadObjectMeta) {
		return nil, fmt.Errorf("model set %q: %w", version, ErrUnknownVersion)
	}
	if err != nil {
		return nil, fmt.Errorf("model set %q: %w", version, err)
	}
	return decode(version, data)
}

// List returns every stored set's description, oldest first.
func (r *Registry) List(ctx context.Context) ([]Meta, error) {
	infos, err := r.obs.List(ctx)
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list model sets: %w", err)
	}
	out := make([]Meta, 0, len(infos))
	for _, in := range infos {
		md := in.Metadata
		m := Meta{Version: in.Name, By: md["by"], Why: md["why"], Size: in.Size}
		m.Created, _ = time.Parse(time.RFC3339Nano, md["created"])
		m.From, _ = time.Parse(time.RFC3339, md["from"])
		m.To, _ = time.Parse(time.RFC3339, md["to"])
		m.Series, _ = strconv.Atoi(md["series"])
		m.Failed, _ = strconv.Atoi(md["failed"])
		m.MASE, _ = strconv.ParseFloat(md["mase"], 64)
		m.Baseline, _ = strconv.ParseFloat(md["baseline_mase"], 64)
		m.Backtested = -1
		if b, ok := md["backtested"]; ok {
			m.Backtested, _ = strconv.Atoi(b)
		}
		if m.Created.IsZero() {
			m.Created = in.ModTime
		}
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b Meta) int { return a.Created.Compare(b.Created) })
	return out, nil
}

// Resolve turns a version or a prefix of at least 6 hex digits into the one stored version it names.
func (r *Registry) Resolve(ctx context.Context, prefix string) (string, error) {
	if len(prefix) < 6 {
		return "", fmt.Errorf("model set %q: give at least 6 hex digits of its version", prefix)
	}
	metas, err := r.List(ctx)
	if err != nil {
		return "", err
	}
	var found []string
	for _, m := range metas {
		if strings.HasPrefix(m.Version, prefix) {
			found = append(found, m.Version)
		}
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("model set %q: %w", prefix, ErrUnknownVersion)
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("model set %q is ambiguous: %s", prefix, strings.Join(found, ", "))
}

const stateKey = "state"

func changeKey(seq uint64) string { return fmt.Sprintf("change.%012d", seq) }

// State returns the current pointers (the last change; the zero Change before any) and the KV
// revision it was read at.
func (r *Registry) State(ctx context.Context) (Change, uint64, error) {
	e, err := r.kv.Get(ctx, stateKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Change{}, 0, nil
	}
	if err != nil {
		return Change{}, 0, fmt.Errorf("model state: %w", err)
	}
	var c Change
	if err := json.Unmarshal(e.Value(), &c); err != nil {
		return Change{}, 0, fmt.Errorf("model state (%s key %q, revision %d): does not decode: %w", r.b.State, stateKey, e.Revision(), err)
	}
	return c, e.Revision(), nil
}

// conflictFor bounds how long a change retries conflicts. Bounded by time, not by a count of
// tries: each conflict means another change landed, so n changes at once need up to n tries for the
// last of them, and a count below n failed one of ten concurrent changes in a CI run.
const conflictFor = 10 * time.Second

// change reads the state, computes the next and writes it if nothing changed in between (CAS on the
// key's revision), again on a conflict. The change is also written to its log key; a writer that
// dies between the two leaves the log one short, which the next change fills in.
func (r *Registry) change(ctx context.Context, next func(cur Change) (Change, error)) (Change, error) {
	rt := kvretry.New(ctx, conflictFor)
	for {
		cur, rev, err := r.State(ctx)
		if err != nil {
			return Change{}, err
		}
		if cur.Seq > 0 {
			r.logChange(ctx, cur)
		}
		last := cur.Seq
		if rev == 0 {
			// No state key: none yet, or it was purged. The log outlives a purge, and numbering
			// from 1 again would give the next change a number an old one holds (and no log entry).
			if last, err = r.lastLogged(ctx); err != nil {
				return Change{}, err
			}
		}
		c, err := next(cur)
		if err != nil {
			return Change{}, err
		}
		c.Seq, c.At = last+1, r.now().UTC()
		val, err := json.Marshal(c)
		if err != nil {
			return Change{}, err
		}
		if rev == 0 {
			_, err = r.kv.Create(ctx, stateKey, val)
		} else {
			_, err = r.kv.Update(ctx, stateKey, val, rev)
		}
		if errors.Is(err, jetstream.ErrKeyExists) || isWrongLast(err) {
			if err := rt.Conflict(fmt.Errorf("%s: %w", c.Op, ErrConflict)); err != nil {
				return Change{}, err
			}
			continue
		}
		if err != nil {
			return Change{}, fmt.Errorf("%s: write model state: %w", c.Op, err)
		}
		r.logChange(ctx, c)
		return c, nil
	}
}

func isWrongLast(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// logChange writes c to its log key once (Create: a key already there is that same change).
func (r *Registry) logChange(ctx context.Context, c Change) {
	val, _ := json.Marshal(c)
	if _, err := r.kv.Create(ctx, changeKey(c.Seq), val); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		r.lg.Warn("model change not logged (the next change logs it)", "seq", c.Seq, "err", err)
	}
}

// lastLogged is the highest change number in the log (0 when it is empty).
func (r *Registry) lastLogged(ctx context.Context) (uint64, error) {
	kl, err := r.kv.ListKeysFiltered(ctx, "change.>")
	if err != nil {
		return 0, fmt.Errorf("model change log (%s): %w", r.b.State, err)
	}
	defer func() { _ = kl.Stop() }()
	var last uint64
	for k := range kl.Keys() {
		if n, err := strconv.ParseUint(strings.TrimPrefix(k, "change."), 10, 64); err == nil {
			last = max(last, n)
		}
	}
	return last, nil
}

// Changes returns the change log, oldest first (with the state key purged, the log as it is).
func (r *Registry) Changes(ctx context.Context) ([]Change, error) {
	cur, rev, err := r.State(ctx)
	if err != nil {
		return nil, err
	}
	last := cur.Seq
	if rev == 0 {
		if last, err = r.lastLogged(ctx); err != nil {
			return nil, err
		}
	}
	out := make([]Change, 0, last)
	for seq := uint64(1); seq <= last; seq++ {
		if seq == cur.Seq && rev != 0 {
			out = append(out, cur)
			break
		}
		e, err := r.kv.Get(ctx, changeKey(seq))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // its writer died before logging it and no change came after to fill it in
		}
		if err != nil {
			return nil, fmt.Errorf("model change %d: %w", seq, err)
		}
		var c Change
		if err := json.Unmarshal(e.Value(), &c); err != nil {
			return nil, fmt.Errorf("model change %d (%s key %s): does not decode: %w", seq, r.b.State, changeKey(seq), err)
		}
		out = append(out, c)
	}
	return out, nil
}

// known refuses a version that is not stored or does not load.
func (r *Registry) known(ctx context.Context, version string) error {
	_, err := r.Load(ctx, version)
	return err
}

// Promote makes version the active set; the old active goes on the rollback stack. Promoting the
// set already active records nothing: the error wraps ErrUnchanged and the Change is the current
// state.
func (r *Registry) Promote(ctx context.Context, version, by, why string) (Change, error) {
	if err := r.known(ctx, version); err != nil {
		return Change{}, err
	}
	var unchanged Change
	c, err := r.change(ctx, func(cur Change) (Change, error) {
		if cur.Active == version {
			unchanged = cur
			return Change{}, fmt.Errorf("promote %s: %w (model state at change #%d)", version, ErrUnchanged, cur.Seq)
		}
		return promoted(cur, version, by, why), nil
	})
	if errors.Is(err, ErrUnchanged) {
		return unchanged, err
	}
	return c, err
}

// promoted is the change that makes version active after cur.
func promoted(cur Change, version, by, why string) Change {
	c := Change{Op: OpPromote, From: cur.Active, To: version, Active: version, Shadow: cur.Shadow,
		Previous: slices.Clone(cur.Previous), By: by, Why: why}
	if cur.Active != "" && cur.Active != version {
		c.Previous = append([]string{cur.Active}, c.Previous...)
		c.Previous = c.Previous[:min(len(c.Previous), MaxPrevious)]
	}
	if c.Shadow == version {
		c.Shadow = "" // it is live now: no shadow of itself
	}
	return c
}

// Rollback returns to the active set before the current one (refused if that set no longer loads).
// It goes back from the active set it read first: when another change replaced it meanwhile (another
// rollback, a promotion), nothing is recorded and the error wraps ErrConflict — recomputed, two
// rollbacks at once would go back two sets.
func (r *Registry) Rollback(ctx context.Context, by, why string) (Change, error) {
	var from string
	read := false
	return r.change(ctx, func(cur Change) (Change, error) {
		if !read {
			from, read = cur.Active, true
		} else if cur.Active != from {
			return Change{}, fmt.Errorf("rollback from %s: change #%d (%s by %s) made %s active meanwhile; nothing rolled back: %w",
				from, cur.Seq, cur.Op, cur.By, cur.Active, ErrConflict)
		}
		if len(cur.Previous) == 0 {
			return Change{}, ErrNoPrevious
		}
		if err := r.known(ctx, cur.Previous[0]); err != nil {
			return Change{}, fmt.Errorf("rollback to %s: %w", cur.Previous[0], err)
		}
		return Change{Op: OpRollback, From: cur.Active, To: cur.Previous[0], Active: cur.Previous[0], Shadow: cur.Shadow,
			Previous: slices.Clone(cur.Previous[1:]), By: by, Why: why}, nil
	})
}

// Shadow forecasts with version beside the active set without using it ("" ends the shadow; with
// no shadow set the error wraps ErrNothingToClear and nothing is recorded).
func (r *Registry) Shadow(ctx context.Context, version, by, why string) (Change, error) {
	if version != "" {
		if err := r.known(ctx, version); err != nil {
			return Change{}, err
		}
	}
	return r.change(ctx, func(cur Change) (Change, error) {
		if version == "" && cur.Shadow == "" {
			active := cur.Active
			if active == "" {
				active = "none"
			}
			return Change{}, fmt.Errorf("clear shadow: %w: no shadow model set is set (active %s, model state at change #%d)",
				ErrNothingToClear, active, cur.Seq)
		}
		return shadowed(cur, version, by, why), nil
	})
}

// shadowed is the change that makes version the shadow after cur ("" ends the shadow).
func shadowed(cur Change, version, by, why string) Change {
	op := OpShadow
	if version == "" {
		op = OpClearShadow
	}
	return Change{Op: op, From: cur.Shadow, To: version, Active: cur.Active, Shadow: version,
		Previous: slices.Clone(cur.Previous), By: by, Why: why}
}

// shadowOrFirst shadows version, or promotes it when there is no active set yet: decided on the
// state the change replaces (a promotion landing meanwhile makes it a shadow).
func (r *Registry) shadowOrFirst(ctx context.Context, version, by, why string) (Change, error) {
	if err := r.known(ctx, version); err != nil {
		return Change{}, err
	}
	return r.change(ctx, func(cur Change) (Change, error) {
		if cur.Active == "" {
			return promoted(cur, version, by, why), nil
		}
		return shadowed(cur, version, by, why), nil
	})
}
