// Package versions holds rule set versions: immutable contents in a KV bucket, and the active,
// shadow and canary state as changes on the decision log (hub/audit).
package versions

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/config"
	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/decide/rules"
	"github.com/gemba-io/gemba/internal/kvretry"
)

// Config is the rules section of the hub config.
type Config struct {
	Bucket   string `yaml:"bucket" json:"bucket"`
	Replicas int    `yaml:"replicas" json:"replicas"`
}

// DefaultBucket holds the versions.
const DefaultBucket = "GEMBA_RULES"

// Defaults fills what was left empty.
func (c *Config) Defaults() {
	if c.Bucket == "" {
		c.Bucket = DefaultBucket
	}
}

// Validate implements config.Validator.
func (c *Config) Validate(r config.Report) {
	if c.Bucket != "" && strings.ContainsAny(c.Bucket, " \t\r\n.*>/\\") {
		r.Errorf("bucket", "%q is not a bucket name (no white space, '.', '*', '>', '/' or '\\')", c.Bucket)
	}
	switch c.Replicas {
	case 0, 1, 3, 5:
	default:
		r.Errorf("replicas", "must be 1, 3 or 5, got %d", c.Replicas)
	}
}

var (
	// ErrUnknownVersion: no version stored under that name (or prefix).
	ErrUnknownVersion = errors.New("unknown rule set version")
	// ErrNoPrevious: a rollback with nothing to return to.
	ErrNoPrevious = errors.New("no previous version to roll back to")
	// ErrNothingToClear: a clear of a shadow or canary that is not set (nothing is recorded: a change
	// would fence the decisions in flight for nothing).
	ErrNothingToClear = errors.New("nothing to clear")
	// ErrUnchanged: activating the version already active records nothing (a change would fence
	// the decisions in flight for nothing); the error comes with the current state. Not a failure:
	// deploying the same rules twice is a no-op.
	ErrUnchanged = errors.New("already active: nothing recorded")
	// errCorrupt: what is stored under a version is not that version.
	errCorrupt = errors.New("corrupt stored version")
)

// Meta describes a stored version.
type Meta struct {
	Version  string    `json:"version"`
	Name     string    `json:"name"`
	Label    string    `json:"label,omitempty"`
	StoredAt time.Time `json:"stored_at"`
	By       string    `json:"by"`
}

// stored is a version's KV value: the file as written (bytes: base64 in JSON, so a file is kept
// byte for byte), and who stored it.
type stored struct {
	Meta
	Content []byte `json:"content"`
}

// Stats are the registry's counters (the hub exports them).
type Stats struct {
	LoadFailures atomic.Uint64 // a followed change whose versions could not be loaded
	LoadRetries  atomic.Uint64 // reads of a followed change's versions tried again
	Retries      atomic.Uint64 // changes retried after a concurrent change
}

// Registry stores versions and changes the rules state. Safe for concurrent use.
type Registry struct {
	kv    jetstream.KeyValue
	log   *audit.Log
	lg    *slog.Logger
	opts  []rules.Option
	cache *rules.Cache
	now   func() time.Time
	Stats Stats
}

// Open creates or updates the versions bucket. opts are the rules options (cost limit, known
// features) of Store's strict load and Follow's compile.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config, log *audit.Log, logger *slog.Logger, opts ...rules.Option) (*Registry, error) {
	cfg.Defaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if log == nil {
		return nil, errors.New("versions: the decision log is required")
	}
	// History 1 and Create only: a version's key is written once and never changes.
	kv, err := kvretry.KeyValue(ctx, js, jetstream.KeyValueConfig{
		Bucket: cfg.Bucket, History: 1, Replicas: max(cfg.Replicas, 1),
		Description: "gemba-hub: rule set versions, immutable, keyed v.<version>",
	})
	if err != nil {
		return nil, fmt.Errorf("rules bucket %s: %w", cfg.Bucket, err)
	}
	return &Registry{kv: kv, log: log, lg: logger.With("bucket", cfg.Bucket), opts: opts, cache: rules.NewCache(8), now: time.Now}, nil
}

// Bind opens the versions bucket as it is, for the CLI (rules diff, and the rules changes, which
// store versions in it): it never creates the bucket nor changes its settings. A bucket that is not
// there is an error naming it.
func Bind(ctx context.Context, js jetstream.JetStream, cfg Config, log *audit.Log, logger *slog.Logger, opts ...rules.Option) (*Registry, error) {
	cfg.Defaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if log == nil {
		return nil, errors.New("versions: the decision log is required")
	}
	var kv jetstream.KeyValue
	err := kvretry.Attempts(ctx, kvretry.SetupAttempt, func(ctx context.Context) (err error) {
		kv, err = js.KeyValue(ctx, cfg.Bucket)
		return err
	})
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("rules bucket %s: not found on these servers: the hub has not run with decisions against "+
			"them yet, or rules.bucket names another bucket, or it was deleted (see gemba-hub run --recreate): %w", cfg.Bucket, err)
	}
	if err != nil {
		return nil, fmt.Errorf("rules bucket %s: %w", cfg.Bucket, err)
	}
	return &Registry{kv: kv, log: log, lg: logger.With("bucket", cfg.Bucket), opts: opts, cache: rules.NewCache(8), now: time.Now}, nil
}

func key(version string) string { return "v." + version }

// Store checks data as a new rule set (strictly) and stores it under its version. Storing a
// version already stored is fine and changes nothing: the first content stays.
func (r *Registry) Store(ctx context.Context, data []byte, by string) (string, error) {
	s, err := rules.Load(data, r.opts...)
	if err != nil {
		return "", err
	}
	v := s.Version()
	val, err := json.Marshal(stored{Meta: Meta{Version: v, Name: s.Name(), Label: s.Label(), StoredAt: r.now().UTC(), By: by}, Content: data})
	if err != nil {
		return "", fmt.Errorf("rule set %s: %w", v, err)
	}
	if _, err := r.kv.Create(ctx, key(v), val); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return v, nil
		}
		return "", fmt.Errorf("store rule set %s: %w", v, err)
	}
	return v, nil
}

func (r *Registry) get(ctx context.Context, version string) (stored, error) {
	e, err := r.kv.Get(ctx, key(version))
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrInvalidKey) {
		return stored{}, fmt.Errorf("rule set %q: %w", version, ErrUnknownVersion)
	}
	if err != nil {
		return stored{}, fmt.Errorf("rule set %q: %w", version, err)
	}
	var s stored
	if err := json.Unmarshal(e.Value(), &s); err != nil {
		return stored{}, fmt.Errorf("rule set %q: %w: the stored value does not decode: %w", version, errCorrupt, err)
	}
	return s, nil
}

// Load returns a stored version's file content.
func (r *Registry) Load(ctx context.Context, version string) ([]byte, error) {
	s, err := r.get(ctx, version)
	return s.Content, err
}

// Meta returns a stored version's description.
func (r *Registry) Meta(ctx context.Context, version string) (Meta, error) {
	s, err := r.get(ctx, version)
	return s.Meta, err
}

// Resolve turns a version or a prefix of at least 8 hex digits into the one stored version it
// names.
func (r *Registry) Resolve(ctx context.Context, prefix string) (string, error) {
	if len(prefix) < 8 {
		return "", fmt.Errorf("version %q: give at least 8 hex digits", prefix)
	}
	keys, err := r.kv.ListKeys(ctx)
	if err != nil {
		return "", fmt.Errorf("list rule set versions: %w", err)
	}
	var found []string
	for k := range keys.Keys() {
		if v, ok := strings.CutPrefix(k, "v."); ok && strings.HasPrefix(v, prefix) {
			found = append(found, v)
		}
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("version %q: %w", prefix, ErrUnknownVersion)
	case 1:
		return found[0], nil
	}
	slices.Sort(found)
	return "", fmt.Errorf("version %q is ambiguous: %s", prefix, strings.Join(found, ", "))
}

// conflictFor bounds how long a change retries concurrent changes: by time, since n changes at
// once need up to n tries for the last of them.
const conflictFor = 10 * time.Second

// change reads the rules state, computes the next one and records it, again on a concurrent change.
func (r *Registry) change(ctx context.Context, next func(cur audit.Change) (audit.Change, error)) (audit.Change, error) {
	rt := kvretry.New(ctx, conflictFor)
	for {
		cur, err := r.log.Current(ctx)
		if err != nil {
			return audit.Change{}, err
		}
		c, err := next(cur)
		if err != nil {
			return audit.Change{}, err
		}
		c.At = r.now().UTC()
		seq, err := r.log.RecordChange(ctx, c, cur.Seq)
		if errors.Is(err, audit.ErrConflict) {
			if err := rt.Conflict(err); err != nil {
				return audit.Change{}, err
			}
			r.Stats.Retries.Add(1)
			continue
		}
		if err != nil {
			return audit.Change{}, err
		}
		c.Seq = seq
		return c, nil
	}
}

// carry starts the next state from the current one.
func carry(cur audit.Change, op, by, why string) audit.Change {
	c := audit.Change{Op: op, Active: cur.Active, Shadow: cur.Shadow, Previous: slices.Clone(cur.Previous), By: by, Why: why, ActiveBy: cur.ActiveBy}
	if c.ActiveBy == "" && (cur.Op == audit.OpActivate || cur.Op == audit.OpRollback) {
		c.ActiveBy = cur.By // a state recorded before ActiveBy was kept
	}
	if cur.Canary != nil {
		cs := *cur.Canary
		c.Canary = &cs
	}
	return c
}

// known refuses a version that is not stored, or whose content does not compile to it.
func (r *Registry) known(ctx context.Context, version string) error {
	_, err := r.compile(ctx, version)
	return err
}

// compile loads a stored version with the permissive environment (it was valid when stored).
func (r *Registry) compile(ctx context.Context, version string) (*rules.Set, error) {
	st, err := r.get(ctx, version)
	if err != nil {
		return nil, err
	}
	s, err := r.cache.LoadStored(st.Content, r.opts...)
	if err != nil {
		return nil, fmt.Errorf("rule set %q: %w: %s", version, errCorrupt, strings.Join(rules.Describe(key(version), err), "; "))
	}
	if s.Version() != version {
		return nil, fmt.Errorf("rule set %q: %w: its content is version %s", version, errCorrupt, s.Version())
	}
	return s, nil
}

// Activate makes version the active one; the old active goes on the rollback stack, and a canary
// of the same version ends (it is now live for everything).
func (r *Registry) Activate(ctx context.Context, version, by, why string) (audit.Change, error) {
	if err := r.known(ctx, version); err != nil {
		return audit.Change{}, err
	}
	var unchanged audit.Change
	c, err := r.change(ctx, func(cur audit.Change) (audit.Change, error) {
		if cur.Active == version {
			unchanged = cur
			return audit.Change{}, ErrUnchanged
		}
		c := carry(cur, audit.OpActivate, by, why)
		c.From, c.To, c.Active, c.ActiveBy = cur.Active, version, version, by
		if cur.Active != "" && cur.Active != version {
			c.Previous = append([]string{cur.Active}, c.Previous...)
			c.Previous = c.Previous[:min(len(c.Previous), audit.MaxPrevious)]
		}
		if c.Canary != nil && c.Canary.Version == version {
			c.Canary = nil
		}
		return c, nil
	})
	if errors.Is(err, ErrUnchanged) {
		return unchanged, err
	}
	return c, err
}

// Rollback returns to the active version before the current one. It goes back from the active it
// read first: when another change replaced that active meanwhile (another rollback, an activate),
// nothing is recorded and the error wraps audit.ErrConflict (recomputed, two rollbacks at once
// would go back two versions).
func (r *Registry) Rollback(ctx context.Context, by, why string) (audit.Change, error) {
	var from string
	read := false
	return r.change(ctx, func(cur audit.Change) (audit.Change, error) {
		if !read {
			from, read = cur.Active, true
		} else if cur.Active != from {
			return audit.Change{}, fmt.Errorf("rollback from %s: change #%d (%s by %s) made %s active meanwhile; nothing rolled back: %w",
				from, cur.Seq, cur.Op, cur.By, cur.Active, audit.ErrConflict)
		}
		if len(cur.Previous) == 0 {
			return audit.Change{}, ErrNoPrevious
		}
		// As activate: a version that does not load would leave every replica deciding nothing.
		if err := r.known(ctx, cur.Previous[0]); err != nil {
			return audit.Change{}, fmt.Errorf("roll back to %s: %w", cur.Previous[0], err)
		}
		c := carry(cur, audit.OpRollback, by, why)
		c.From, c.To, c.Active, c.Previous, c.ActiveBy = cur.Active, cur.Previous[0], cur.Previous[0], c.Previous[1:], by
		return c, nil
	})
}

// Shadow evaluates version next to the active one without acting ("" ends the shadow).
func (r *Registry) Shadow(ctx context.Context, version, by, why string) (audit.Change, error) {
	if version != "" {
		if err := r.known(ctx, version); err != nil {
			return audit.Change{}, err
		}
	}
	return r.change(ctx, func(cur audit.Change) (audit.Change, error) {
		op := audit.OpShadow
		if version == "" {
			if cur.Shadow == "" {
				return audit.Change{}, fmt.Errorf("%w: no shadow version is set", ErrNothingToClear)
			}
			op = audit.OpClearShadow
		}
		c := carry(cur, op, by, why)
		c.From, c.To, c.Shadow = cur.Shadow, version, version
		return c, nil
	})
}

// Canary makes version act for share of the SKUs or sites (unit "sku" or "site"); "" ends it.
func (r *Registry) Canary(ctx context.Context, version string, share float64, unit, by, why string) (audit.Change, error) {
	if version != "" {
		if !(share > 0 && share <= 1) {
			return audit.Change{}, fmt.Errorf("canary share %v: give a share in (0, 1], e.g. 0.1", share)
		}
		if unit != "sku" && unit != "site" {
			return audit.Change{}, fmt.Errorf("canary unit %q: sku or site", unit)
		}
		if err := r.known(ctx, version); err != nil {
			return audit.Change{}, err
		}
	}
	return r.change(ctx, func(cur audit.Change) (audit.Change, error) {
		if version == "" && cur.Canary == nil {
			return audit.Change{}, fmt.Errorf("%w: no canary is set", ErrNothingToClear)
		}
		c := carry(cur, audit.OpCanary, by, why)
		if cur.Canary != nil {
			c.From = cur.Canary.Version
		}
		c.To, c.Canary = version, &audit.CanarySpec{Version: version, Share: share, By: unit, Author: by}
		if version == "" {
			c.Op, c.Canary = audit.OpClearCanary, nil
		}
		return c, nil
	})
}

// InCanary reports whether unit (a SKU or site id) is in version's canary of share: a hash of
// (version, unit) below share, so each version picks its own stable sample.
func InCanary(version, unit string, share float64) bool {
	h := sha256.Sum256([]byte(version + "\x00" + unit))
	x := float64(binary.BigEndian.Uint64(h[:8])>>11) / (1 << 53) // uniform in [0, 1)
	return x < share
}
