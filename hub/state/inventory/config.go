package inventory

import (
	"regexp"
	"time"

	"github.com/gemba-io/gemba/config"
)

// Config is the inventory section of the hub config.
type Config struct {
	// Bucket is the KV bucket holding one key per site × SKU (no TTL: a position never expires).
	Bucket string `yaml:"bucket" json:"bucket"`
	// Replicas of the bucket: 1, or 3 on a cluster (0: the hub's nats.replicas; one replica here).
	Replicas int `yaml:"replicas" json:"replicas"`
	// Horizon is how long movements keep their identity in the key's value (for exact late snapshots and
	// duplicate detection); older ones are folded into a base, their ids remembered for another horizon.
	// Keep it below the ingest dedup markers' TTL.
	Horizon time.Duration `yaml:"horizon" json:"horizon"`
	// MaxMovements bounds the movements kept per key; beyond it the oldest are folded early. The ids
	// remembered after the list share it (at least 32 of them). It bounds the value's size (each write
	// rewrites it) for very busy SKUs.
	MaxMovements int `yaml:"max_movements" json:"max_movements"`
	// DemandDays is how many UTC days of sales are kept per key for the demand rate.
	DemandDays int `yaml:"demand_days" json:"demand_days"`
	// RateWindow is how many complete days the moving average of daily sales spans.
	RateWindow int `yaml:"rate_window_days" json:"rate_window_days"`
	// MaxFuture refuses events dated further ahead of the hub clock (a wrong clock would otherwise keep
	// them out of folding and the demand window).
	MaxFuture time.Duration `yaml:"max_future" json:"max_future"`
	// OpTimeout bounds each KV request.
	OpTimeout time.Duration `yaml:"op_timeout" json:"op_timeout"`
	// RetryFor is how long Move and Snapshot keep retrying failed KV requests (leader elections, reconnects)
	// before returning the error.
	RetryFor time.Duration `yaml:"retry_for" json:"retry_for"`

	// Now is the clock (time.Now when nil); injectable so backtests can replay history.
	Now func() time.Time `yaml:"-" json:"-"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Bucket:       "GEMBA_INVENTORY",
		Replicas:     1,
		Horizon:      48 * time.Hour,
		MaxMovements: 4096,
		DemandDays:   14,
		RateWindow:   7,
		MaxFuture:    24 * time.Hour,
		OpTimeout:    5 * time.Second,
		RetryFor:     30 * time.Second,
	}
}

var bucketRe = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

// problems lists what is wrong, as (field, message) pairs; Validate and Open share it.
func (c *Config) problems() config.Checks {
	var ps config.Checks
	add := ps.Add
	if !bucketRe.MatchString(c.Bucket) {
		add("bucket", "must be letters, digits, '-' or '_', got %q", c.Bucket)
	}
	if c.Replicas != 0 && c.Replicas != 1 && c.Replicas != 3 {
		add("replicas", "must be 1 or 3, got %d (0: nats.replicas)", c.Replicas)
	}
	if c.Horizon < time.Minute {
		add("horizon", "must be at least 1m, got %s", c.Horizon)
	}
	if c.MaxMovements < 16 || c.MaxMovements > 100_000 {
		add("max_movements", "must be between 16 and 100000, got %d", c.MaxMovements)
	}
	if c.RateWindow < 1 {
		add("rate_window_days", "must be at least 1, got %d", c.RateWindow)
	}
	if c.DemandDays < c.RateWindow+1 || c.DemandDays > 366 {
		add("demand_days", "must be between rate_window_days+1 (%d) and 366, got %d", c.RateWindow+1, c.DemandDays)
	}
	if c.MaxFuture < 0 {
		add("max_future", "must not be negative, got %s", c.MaxFuture)
	}
	if c.OpTimeout <= 0 {
		add("op_timeout", "must be positive, got %s", c.OpTimeout)
	}
	if c.RetryFor < 0 {
		add("retry_for", "must not be negative, got %s", c.RetryFor)
	}
	return ps
}

// Validate implements config.Validator.
func (c *Config) Validate(r config.Report) {
	c.problems().Report(r)
}

func (c *Config) err() error { return c.problems().Err("inventory") }

func (c *Config) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}
