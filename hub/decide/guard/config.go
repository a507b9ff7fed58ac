package guard

import (
	"math"
	"regexp"
	"strings"
	"time"

	"github.com/gemba-io/gemba/config"
)

// Budget weights: what one promotion takes from the daily discount budget.
const (
	// WeightDiscount: the discount in percent (a 15 % promotion takes 15).
	WeightDiscount = "discount"
	// WeightDiscountUnits: the discount in percent × the proposal's expected units; a promotion
	// without expected units is suppressed by the budget guardrail rather than guessed at.
	WeightDiscountUnits = "discount_x_units"
)

// Config is the guard section of the hub config. Limits of 0 mean "no limit" except where noted.
type Config struct {
	// Bucket is the KV bucket holding decisions, counters, cooldowns, the approval queue and the kill
	// switch. No bucket TTL: every guardrail's memory is an explicit key, removed by Sweep only once
	// it can no longer matter.
	Bucket   string `yaml:"bucket" json:"bucket"`
	Replicas int    `yaml:"replicas" json:"replicas"`

	// MaxDiscount is the largest discount in percent any promotion may carry (required, 0 < x ≤ 100).
	MaxDiscount float64 `yaml:"max_discount" json:"max_discount"`
	// Cooldown is the least time between two promotions of one SKU on one channel (0: none).
	Cooldown time.Duration `yaml:"cooldown" json:"cooldown"`
	// Daily caps all promotions of one day together.
	Daily Caps `yaml:"daily" json:"daily"`
	// BudgetWeight is what a promotion takes from a daily budget: "discount" or "discount_x_units".
	BudgetWeight string `yaml:"budget_weight" json:"budget_weight"`
	// Channels tightens the limits per channel; a channel not listed has only the global ones.
	Channels map[string]ChannelLimits `yaml:"channels" json:"channels"`
	// Approval sends large discounts to a person first.
	Approval ApprovalConfig `yaml:"approval" json:"approval"`

	// Zone is the time zone whose calendar days the daily caps count ("UTC", "Europe/Berlin").
	Zone string `yaml:"zone" json:"zone"`
	// MaxSkew suppresses a proposal dated further than this from the guard's clock: a replayed or
	// delayed proposal must not act, and a counter of a day long gone must not be re-created.
	MaxSkew time.Duration `yaml:"max_skew" json:"max_skew"`
	// ClaimLease is how long a replica may hold a decision it claimed before another replica takes it
	// over (the first crashed between claim and verdict).
	ClaimLease time.Duration `yaml:"claim_lease" json:"claim_lease"`
	// Retention is how long decisions and spent counters stay after they can no longer matter
	// (Sweep removes them); it must exceed max_skew and the approval ttl.
	Retention time.Duration `yaml:"retention" json:"retention"`
	// OpTimeout bounds each KV request; RetryFor is how long failed requests are retried.
	OpTimeout time.Duration `yaml:"op_timeout" json:"op_timeout"`
	RetryFor  time.Duration `yaml:"retry_for" json:"retry_for"`
	// MaxEntries bounds the promotions one daily counter remembers (each by decision id, so that
	// reserving is idempotent); a day past it suppresses further promotions.
	MaxEntries int `yaml:"max_entries" json:"max_entries"`

	// Now is the clock (time.Now when nil), injectable for backtests.
	Now func() time.Time `yaml:"-" json:"-"`
}

// Caps are daily limits.
type Caps struct {
	// MaxPromotions is the most promotions per day (0: no limit).
	MaxPromotions int `yaml:"max_promotions" json:"max_promotions"`
	// MaxBudget is the most discount weight per day (0: no limit); see BudgetWeight.
	MaxBudget float64 `yaml:"max_budget" json:"max_budget"`
}

// ChannelLimits are one channel's own limits.
type ChannelLimits struct {
	MaxDiscount float64 `yaml:"max_discount" json:"max_discount"`
	Daily       Caps    `yaml:"daily" json:"daily"`
}

// ApprovalConfig configures the approval queue.
type ApprovalConfig struct {
	// Above: a promotion whose discount is strictly above this percentage needs approval (0: never).
	Above float64 `yaml:"above_discount" json:"above_discount"`
	// TTL: a request not decided within it expires and never acts.
	TTL time.Duration `yaml:"ttl" json:"ttl"`
	// ForbidSelf refuses an approval by the proposal's requester.
	ForbidSelf bool `yaml:"forbid_self_approval" json:"forbid_self_approval"`
}

// DefaultConfig returns the defaults; MaxDiscount has none and must be set.
func DefaultConfig() Config {
	return Config{
		Bucket:       "GEMBA_GUARD",
		Replicas:     1,
		Cooldown:     24 * time.Hour,
		Daily:        Caps{},
		BudgetWeight: WeightDiscount,
		Approval:     ApprovalConfig{TTL: 24 * time.Hour, ForbidSelf: true},
		Zone:         "UTC",
		MaxSkew:      10 * time.Minute,
		ClaimLease:   30 * time.Second,
		Retention:    72 * time.Hour,
		OpTimeout:    5 * time.Second,
		RetryFor:     30 * time.Second,
		MaxEntries:   10_000,
	}
}

var (
	bucketRe  = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)
	channelRe = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)
)

// problems lists what is wrong as (field, message) pairs; Validate and New share it.
func (c *Config) problems() config.Checks {
	var ps config.Checks
	add := ps.Add
	pct := func(field string, v float64, required bool) {
		if math.IsNaN(v) || v < 0 || v > 100 || (required && v == 0) {
			if required {
				add(field, "must be a percentage above 0 and at most 100, got %v", v)
			} else {
				add(field, "must be a percentage from 0 (no limit) to 100, got %v", v)
			}
		}
	}
	caps := func(field string, c Caps) {
		if c.MaxPromotions < 0 {
			add(field+".max_promotions", "must not be negative (0: no limit), got %d", c.MaxPromotions)
		}
		if math.IsNaN(c.MaxBudget) || c.MaxBudget < 0 || math.IsInf(c.MaxBudget, 0) {
			add(field+".max_budget", "must be a finite number ≥ 0 (0: no limit), got %v", c.MaxBudget)
		}
	}
	if !bucketRe.MatchString(c.Bucket) {
		add("bucket", "must be letters, digits, '-' or '_', got %q", c.Bucket)
	}
	if c.Replicas != 0 && c.Replicas != 1 && c.Replicas != 3 {
		add("replicas", "must be 1 or 3, got %d (0: nats.replicas)", c.Replicas)
	}
	pct("max_discount", c.MaxDiscount, true)
	if c.Cooldown < 0 {
		add("cooldown", "must not be negative, got %s", c.Cooldown)
	}
	caps("daily", c.Daily)
	if c.BudgetWeight != WeightDiscount && c.BudgetWeight != WeightDiscountUnits {
		add("budget_weight", "must be %q or %q, got %q", WeightDiscount, WeightDiscountUnits, c.BudgetWeight)
	}
	for name, ch := range c.Channels {
		f := "channels." + name
		if !channelRe.MatchString(name) {
			add(f, "channel names are lower-case letters, digits, '-' and '_', got %q", name)
		}
		pct(f+".max_discount", ch.MaxDiscount, false)
		caps(f+".daily", ch.Daily)
	}
	pct("approval.above_discount", c.Approval.Above, false)
	if c.Approval.Above > 0 && c.Approval.TTL <= 0 {
		add("approval.ttl", "must be positive when approval.above_discount is set, got %s", c.Approval.TTL)
	}
	if _, err := time.LoadLocation(c.Zone); err != nil || c.Zone == "" || strings.EqualFold(c.Zone, "local") {
		add("zone", "must be an IANA time zone such as UTC or Europe/Berlin, got %q", c.Zone)
	}
	if c.MaxSkew <= 0 {
		add("max_skew", "must be positive, got %s", c.MaxSkew)
	}
	if c.ClaimLease < time.Second {
		add("claim_lease", "must be at least 1s, got %s", c.ClaimLease)
	}
	if c.Retention < 25*time.Hour || c.Retention <= c.MaxSkew || c.Retention <= c.Approval.TTL || c.Retention <= c.Cooldown {
		add("retention", "must be at least 25h and exceed max_skew, approval.ttl and cooldown, got %s", c.Retention)
	}
	if c.OpTimeout <= 0 {
		add("op_timeout", "must be positive, got %s", c.OpTimeout)
	}
	if c.RetryFor < 0 {
		add("retry_for", "must not be negative, got %s", c.RetryFor)
	}
	if c.MaxEntries < 1 || c.MaxEntries > 20_000 {
		// 20,000 entries of ~60 bytes stay well inside NATS's default 1 MiB message.
		add("max_entries", "must be between 1 and 20000, got %d", c.MaxEntries)
	}
	return ps
}

// Validate implements config.Validator.
func (c *Config) Validate(r config.Report) {
	c.problems().Report(r)
}

func (c *Config) err() error { return c.problems().Err("guard") }

func (c *Config) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}
