// Package decide is the hub's decision loop: it re-evaluates a SKU's rules when one of its inputs
// changes (and on a slow timer), and takes each decision through the guardrails, the audit and the outbox.
package decide

import (
	"time"

	"github.com/gemba-io/gemba/config"
)

// Config is the decide section of the hub config.
type Config struct {
	// Rules is a rule file activated when the hub starts and no version is active yet (relative to
	// the config file). Later versions go through `gemba-hub rules activate`.
	Rules string `yaml:"rules" json:"rules,omitempty"`
	// Bucket is the decision time bucket: one rule deciding for one SKU and channel within a bucket is
	// one decision, whichever replica and however often it evaluates (guard.DecisionID).
	Bucket time.Duration `yaml:"bucket" json:"bucket"`
	// Timer re-evaluates every SKU this often, for conditions on time (now) that no input change
	// triggers.
	Timer time.Duration `yaml:"timer" json:"timer"`
	// Lines says which features describe a production line.
	Lines Lines `yaml:"lines" json:"lines"`
	// Workers evaluates this many SKUs at once (GOMAXPROCS when 0).
	Workers int `yaml:"workers" json:"workers"`
	// OpTimeout bounds each decision's guardrail check, audit record and outbox write.
	OpTimeout time.Duration `yaml:"op_timeout" json:"op_timeout"`
	// SafetyDays is the stock a bandit's promotion must leave, in days of the SKU's daily rate: an
	// arm whose expected extra sales would eat into it is not chosen (docs/hub-learning.md).
	SafetyDays float64 `yaml:"safety_days" json:"safety_days"`
}

// Lines maps features keyed by line onto what rules see of a line.
type Lines struct {
	// Availability is the feature (keyed by line) of running time over planned time in a window.
	Availability string `yaml:"availability" json:"availability"`
	// Units is an optional feature (keyed by line) of units produced per window; units_per_hour
	// is its value over the window's length.
	Units string `yaml:"units" json:"units,omitempty"`
	// RunningAbove: a line whose latest availability is at least this reads as "running"; above 0 as
	// "degraded"; 0 as "down"; no value as "unknown".
	RunningAbove float64 `yaml:"running_above" json:"running_above"`
}

// State is a line's state from its latest availability: running at or above RunningAbove, degraded
// above 0, down at 0 (a line without a reading is "unknown").
func (l Lines) State(availability float64) string {
	switch {
	case availability >= l.RunningAbove:
		return "running"
	case availability > 0:
		return "degraded"
	}
	return "down"
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Bucket: time.Hour, Timer: time.Minute, OpTimeout: 10 * time.Second, SafetyDays: 3,
		Lines: Lines{Availability: "availability", RunningAbove: 0.5},
	}
}

// Validate implements config.Validator.
func (c *Config) Validate(r config.Report) {
	if c.Bucket < time.Second {
		r.Errorf("bucket", "must be at least 1s (got %s)", c.Bucket)
	}
	if c.Timer < time.Second {
		r.Errorf("timer", "must be at least 1s (got %s)", c.Timer)
	}
	if c.OpTimeout <= 0 {
		r.Errorf("op_timeout", "must be positive")
	}
	if c.SafetyDays < 0 || c.SafetyDays != c.SafetyDays {
		r.Errorf("safety_days", "must be a number of days ≥ 0 (got %g)", c.SafetyDays)
	}
	if c.Workers < 0 {
		r.Errorf("workers", "must not be negative")
	}
	if c.Lines.Availability == "" {
		r.Errorf("lines.availability", "required: the feature (keyed by line) that says whether a line runs")
	}
	if c.Lines.RunningAbove <= 0 || c.Lines.RunningAbove > 1 {
		r.Errorf("lines.running_above", "must be in (0, 1] (got %g)", c.Lines.RunningAbove)
	}
}
