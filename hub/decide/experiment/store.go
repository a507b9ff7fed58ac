package experiment

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub/state/kvkey"
	"github.com/gemba-io/gemba/internal/kvretry"
)

// StoreConfig places the bandits' posteriors.
type StoreConfig struct {
	// Bucket is the KV bucket of posteriors, one key per experiment and pool (History 1, no TTL).
	Bucket   string `yaml:"bucket" json:"bucket"`
	Replicas int    `yaml:"replicas" json:"replicas"`
	// OpTimeout bounds each KV request; RetryFor is how long failed requests and lost races are retried.
	OpTimeout time.Duration `yaml:"op_timeout" json:"op_timeout"`
	RetryFor  time.Duration `yaml:"retry_for" json:"retry_for"`
}

// DefaultStoreConfig returns the defaults.
func DefaultStoreConfig() StoreConfig {
	return StoreConfig{Bucket: "GEMBA_EXPERIMENTS", Replicas: 1, OpTimeout: 5 * time.Second, RetryFor: 30 * time.Second}
}

var bucketRe = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

func (c StoreConfig) err() error {
	var errs []error
	if !bucketRe.MatchString(c.Bucket) {
		errs = append(errs, fmt.Errorf("experiments: bucket: must be letters, digits, '-' or '_', got %q", c.Bucket))
	}
	if c.Replicas != 1 && c.Replicas != 3 {
		errs = append(errs, fmt.Errorf("experiments: replicas: must be 1 or 3, got %d", c.Replicas))
	}
	if c.OpTimeout <= 0 {
		errs = append(errs, fmt.Errorf("experiments: op_timeout: must be positive, got %s", c.OpTimeout))
	}
	if c.RetryFor < 0 {
		errs = append(errs, fmt.Errorf("experiments: retry_for: must not be negative, got %s", c.RetryFor))
	}
	return errors.Join(errs...)
}

// Store keeps the bandits' posteriors in a JetStream KV bucket. Every replica of the hub opens the
// same bucket: a choice reads the newest posterior, and an outcome is applied by compare-and-set on
// the key's revision, carrying its id inside the value, so that two replicas recording the same
// outcome, or one recording it twice, apply it once. Safe for concurrent use.
type Store struct {
	cfg StoreConfig
	kv  jetstream.KeyValue
	log *slog.Logger
}

// Open creates or binds the bucket.
func Open(ctx context.Context, js jetstream.JetStream, cfg StoreConfig, log *slog.Logger) (*Store, error) {
	if err := cfg.err(); err != nil {
		return nil, err
	}
	if js == nil {
		return nil, fmt.Errorf("experiments: bucket %s: no JetStream context", cfg.Bucket)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	kv, err := kvretry.KeyValue(ctx, js, jetstream.KeyValueConfig{
		Bucket:      cfg.Bucket,
		Description: "gemba-hub experiments: bandit posteriors per experiment and pool",
		History:     1,
		Replicas:    cfg.Replicas,
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("experiments: bucket %s: %w", cfg.Bucket, err)
	}
	return &Store{cfg: cfg, kv: kv, log: log.With("component", "experiments")}, nil
}

// Keys are the KV keys a SKU × channel reads in experiment cfg: its pool's (pool channel: per
// channel; rule: one; unit: its channel's population) and, with pool unit, its own.
func Keys(cfg Config, sku, channel string) (pool, unit string, err error) {
	if cfg.ID == "" {
		return "", "", errors.New("experiment: empty id (the engine sets it to the rule's name)")
	}
	if cfg.Bandit == nil {
		return "", "", fmt.Errorf("experiment %s: no bandit block", cfg.ID)
	}
	switch cfg.Bandit.pool() {
	case PoolUnit:
		return kvkey.Join(cfg.ID, PoolChannel, channel), kvkey.Join(cfg.ID, PoolUnit, sku, channel), nil
	case PoolChannel:
		return kvkey.Join(cfg.ID, PoolChannel, channel), "", nil
	default:
		return kvkey.Join(cfg.ID, PoolRule), "", nil
	}
}

func checkBandit(cfg *Config) error {
	if err := cfg.Err(); err != nil {
		return err
	}
	if cfg.Bandit == nil {
		return fmt.Errorf("experiment %s: no bandit block", cfg.ID)
	}
	return nil
}

// Choose picks the discount for one decision of a bandit rule on unit u. It reads the pool's
// posterior and writes nothing: the choice, with the posterior it came from, goes into the
// decision record, and the same decision id against the same revision chooses the same arm on any
// replica. ErrNoEligibleArm (wrapped) means no discount fits the unit's cover.
func (s *Store) Choose(ctx context.Context, cfg Config, decisionID string, u Unit) (Choice, error) {
	if err := checkBandit(&cfg); err != nil {
		return Choice{}, err
	}
	if decisionID == "" {
		return Choice{}, fmt.Errorf("experiment %s: choose for %s/%s: empty decision id", cfg.ID, u.SKU, u.Channel)
	}
	if err := u.check(); err != nil {
		return Choice{}, fmt.Errorf("experiment %s: choose for decision %s: %w", cfg.ID, decisionID, err)
	}
	pk, uk, err := Keys(cfg, u.SKU, u.Channel)
	if err != nil {
		return Choice{}, err
	}
	pool, prev, err := s.read(ctx, pk)
	if err != nil {
		return Choice{}, err
	}
	c := Choice{Experiment: cfg.ID, Pool: cfg.Bandit.pool(), PoolKey: pk, PoolRevision: prev, DecisionID: decisionID}
	var unit *State
	if uk != "" {
		us, urev, err := s.read(ctx, uk)
		if err != nil {
			return Choice{}, err
		}
		unit, c.UnitKey, c.UnitRevision = &us, uk, urev
	}
	return choose(c, &pool, unit, cfg.Bandit, u)
}

// Record applies a measured outcome to its pool's posterior. It returns false without error when
// the outcome was applied before (by this replica or another). Safe to call again after an error:
// a write whose reply was lost is found applied on the next read.
func (s *Store) Record(ctx context.Context, cfg Config, o Outcome) (bool, error) {
	if err := checkBandit(&cfg); err != nil {
		return false, err
	}
	if err := o.check(); err != nil {
		return false, fmt.Errorf("experiment %s: %w", cfg.ID, err)
	}
	pk, uk, err := Keys(cfg, o.SKU, o.Channel)
	if err != nil {
		return false, err
	}
	if uk == "" {
		return s.apply(ctx, cfg.ID, pk, o, [2]float64{})
	}
	// Pool unit: the outcome goes to the channel's population and to the unit, two keys each
	// updated on its own and as idempotent as the other, so a call that failed between the two
	// completes on retry. The channel first, with the unit's within-arm deviation read from the
	// unit's state before this outcome (zero once the unit has it: a retry adds nothing twice).
	us, _, err := s.read(ctx, uk)
	if err != nil {
		return false, err
	}
	var within [2]float64
	if !slices.ContainsFunc(us.Applied, func(a AppliedOutcome) bool { return a.ID == o.ID }) {
		a := find(us.Arms, o.Discount)
		within[0], within[1] = a.add(o.Units / o.Baseline)
	}
	if _, err := s.apply(ctx, cfg.ID, pk, o, within); err != nil {
		return false, err
	}
	return s.apply(ctx, cfg.ID, uk, o, [2]float64{})
}

// apply is the read → apply → compare-and-set loop of one outcome on one key.
func (s *Store) apply(ctx context.Context, exp, key string, o Outcome, within [2]float64) (bool, error) {
	r := s.retrier(ctx)
	for {
		st, rev, err := s.read(ctx, key)
		if err != nil {
			return false, err
		}
		changed, err := st.apply(o, within)
		if err != nil || !changed {
			if err != nil {
				err = fmt.Errorf("experiment %s: key %s: %w", exp, key, err)
			}
			return false, err
		}
		val, err := json.Marshal(&st)
		if err != nil {
			return false, fmt.Errorf("experiment %s: key %s: encode: %w", exp, key, err)
		}
		err = s.write(ctx, key, val, rev)
		switch {
		case err == nil:
			s.log.Debug("outcome applied", "experiment", exp, "key", key, "outcome", o.ID, "discount", o.Discount, "lift", o.Units/o.Baseline)
			return true, nil
		case kvretry.IsConflict(err):
			if err := r.Conflict(err); err != nil {
				return false, fmt.Errorf("experiment %s: key %s: %w", exp, key, err)
			}
		default:
			if err := r.Failed(err); err != nil {
				return false, fmt.Errorf("experiment %s: key %s: write: %w", exp, key, err)
			}
		}
	}
}

// Posterior is the pool state a SKU × channel reads and, with pool unit, its own state (nil
// otherwise); an empty state before any outcome. For the read API and tests.
func (s *Store) Posterior(ctx context.Context, cfg Config, sku, channel string) (pool State, unit *State, err error) {
	pk, uk, err := Keys(cfg, sku, channel)
	if err != nil {
		return State{}, nil, err
	}
	if pool, _, err = s.read(ctx, pk); err != nil {
		return State{}, nil, err
	}
	if uk != "" {
		us, _, err := s.read(ctx, uk)
		if err != nil {
			return State{}, nil, err
		}
		unit = &us
	}
	return pool, unit, nil
}

// read returns the state at key and its revision; an absent key is an empty state at revision 0.
// A value that does not decode, or decodes to a state this package could not have written, is an
// error naming the bucket, key and revision: it is never overwritten silently.
func (s *Store) read(ctx context.Context, key string) (State, uint64, error) {
	r := s.retrier(ctx)
	for {
		e, err := s.getOnce(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			return newState(), 0, nil
		case err != nil:
			if err := r.Failed(err); err != nil {
				return State{}, 0, fmt.Errorf("experiments: bucket %s: read %s: %w", s.cfg.Bucket, key, err)
			}
			continue
		}
		var st State
		if err := json.Unmarshal(e.Value(), &st); err != nil {
			return State{}, 0, fmt.Errorf("experiments: bucket %s: key %s revision %d: corrupt entry: %w", s.cfg.Bucket, key, e.Revision(), err)
		}
		if err := st.check(); err != nil {
			return State{}, 0, fmt.Errorf("experiments: bucket %s: key %s revision %d: corrupt entry: %w", s.cfg.Bucket, key, e.Revision(), err)
		}
		return st, e.Revision(), nil
	}
}

func (s *Store) getOnce(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	opCtx, cancel := context.WithTimeout(ctx, s.cfg.OpTimeout)
	defer cancel()
	return s.kv.Get(opCtx, key)
}

// write stores val at key if the key is still at rev (0: absent).
func (s *Store) write(ctx context.Context, key string, val []byte, rev uint64) error {
	opCtx, cancel := context.WithTimeout(ctx, s.cfg.OpTimeout)
	defer cancel()
	var err error
	if rev == 0 {
		_, err = s.kv.Create(opCtx, key, val)
	} else {
		_, err = s.kv.Update(opCtx, key, val, rev)
	}
	return err
}

func (s *Store) retrier(ctx context.Context) *kvretry.Retrier {
	return kvretry.New(ctx, s.cfg.RetryFor)
}
