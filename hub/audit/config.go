package audit

import (
	"strings"
	"time"

	"github.com/gemba-io/gemba/config"
	"github.com/gemba-io/gemba/signal"
)

// Config is the audit section of the hub config.
type Config struct {
	// Prefix is the subject prefix, set by the hub from nats.subject_prefix: records go to
	// <prefix>.decisions.<decision id>, rule changes to <prefix>.decisions.rules.
	Prefix   string `yaml:"-" json:"prefix"`
	Stream   string `yaml:"stream" json:"stream"`
	Replicas int    `yaml:"replicas" json:"replicas"`
	// Retention is the TTL of each decision record (Nats-TTL). Rule changes carry none: the last
	// one is the rules state, and the history of changes is kept.
	Retention time.Duration `yaml:"retention" json:"retention"`
	// DuplicateWindow is the stream's Nats-Msg-Id window: a record re-published within it after a
	// crash is stored once.
	DuplicateWindow time.Duration `yaml:"duplicate_window" json:"duplicate_window"`
}

// Defaults.
const (
	DefaultStream          = "GEMBA_DECISIONS"
	DefaultRetention       = 2160 * time.Hour // 90 days
	DefaultDuplicateWindow = 10 * time.Minute
)

// Defaults fills what was left empty.
func (c *Config) Defaults() {
	if c.Prefix == "" {
		c.Prefix = "gemba"
	}
	if c.Stream == "" {
		c.Stream = DefaultStream
	}
	if c.Retention == 0 {
		c.Retention = DefaultRetention
	}
	if c.DuplicateWindow == 0 {
		c.DuplicateWindow = DefaultDuplicateWindow
	}
}

// problems checks the config as it will run (defaults filled on a copy).
func (c Config) problems() config.Checks {
	c.Defaults()
	var ps config.Checks
	add := ps.Add
	if err := signal.CheckToken(c.Prefix); err != nil {
		add("prefix", "subject prefix: %v", err)
	}
	if strings.ContainsAny(c.Stream, " \t\r\n.*>/\\") {
		add("stream", "%q is not a stream name (no white space, '.', '*', '>', '/' or '\\')", c.Stream)
	}
	switch c.Replicas {
	case 0, 1, 3, 5:
	default:
		add("replicas", "must be 1, 3 or 5, got %d", c.Replicas)
	}
	if c.Retention < time.Second {
		add("retention", "%s: a decision record must be kept at least a second (the TTL header counts in seconds)", c.Retention)
	}
	if c.DuplicateWindow <= 0 {
		add("duplicate_window", "must be positive")
	} else if c.DuplicateWindow > c.Retention {
		add("duplicate_window", "%s is longer than retention %s: a record would expire while its duplicates are still detected", c.DuplicateWindow, c.Retention)
	}
	return ps
}

// Validate implements config.Validator.
func (c *Config) Validate(r config.Report) {
	c.problems().Report(r)
}

func (c *Config) err() error { return c.problems().Err("audit") }

// RulesSubject is the subject of the rule changes: its last message is the rules state.
func (c Config) RulesSubject() string { return c.Prefix + ".decisions.rules" }

// RecordSubject is the subject of a decision's records.
func (c Config) RecordSubject(decisionID string) string { return c.Prefix + ".decisions." + decisionID }

// subjects of the stream: exactly three tokens, so that it never overlaps the agents'
// <prefix>.*.*.features (a '>' here would, and JetStream refuses overlapping streams).
func (c Config) subjects() []string { return []string{c.Prefix + ".decisions.*"} }
