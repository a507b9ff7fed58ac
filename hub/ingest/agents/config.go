package agents

import (
	"path"
	"time"

	"github.com/gemba-io/gemba/config"
	"github.com/gemba-io/gemba/hub/state/features"
	"github.com/gemba-io/gemba/signal"
)

// Config is the ingest section of the hub config.
type Config struct {
	// Stream is the agents' JetStream stream (the agents' uplink.nats.stream).
	Stream string `yaml:"stream" json:"stream"`
	// Consumer is the durable consumer every hub replica shares.
	Consumer string `yaml:"consumer" json:"consumer"`
	// Samples also consumes the raw samples (counted per agent; features and status are always read).
	Samples bool `yaml:"samples" json:"samples"`
	// AckWait: a message a replica took and did not settle within this is given to another.
	AckWait       time.Duration `yaml:"ack_wait" json:"ack_wait"`
	MaxAckPending int           `yaml:"max_ack_pending" json:"max_ack_pending"`
	// Batch is the most messages processed (deduplicated, stored, acked) together.
	Batch int `yaml:"batch" json:"batch"`
	// DedupTTL is how long a message identity is remembered: longer than a record can wait in an
	// agent's buffer (buffer.max_age, more after wall-clock steps: docs/hub-configuration.md).
	DedupTTL time.Duration `yaml:"dedup_ttl" json:"dedup_ttl"`
	// Production lists the edge features that count finished units per SKU (a "sku" label): they
	// become produced stock in the inventory of the signal's site.
	Production []Production `yaml:"production" json:"production"`
	// MaxFuture refuses feature records whose window ends further ahead of the hub's clock (an agent
	// whose clock is ahead would pin the feature until then: the latest window wins).
	MaxFuture time.Duration `yaml:"max_future" json:"max_future"`
}

// Production names one edge feature that counts units produced.
type Production struct {
	Signal  string `yaml:"signal" json:"signal"`   // signal name or pattern (*.pack.parts)
	Feature string `yaml:"feature" json:"feature"` // the counter's delta feature (delta, or its rename)
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{Stream: "GEMBA", Consumer: "gemba-hub", AckWait: 30 * time.Second, MaxAckPending: 20000,
		Batch: 512, DedupTTL: 96 * time.Hour, MaxFuture: features.DefaultMaxFuture}
}

// Validate checks the section.
func (c *Config) Validate(r config.Report) {
	if err := signal.CheckToken(c.Stream); err != nil {
		r.Errorf("stream", "%v", err)
	}
	if err := signal.CheckToken(c.Consumer); err != nil {
		r.Errorf("consumer", "%v", err)
	}
	if c.AckWait < time.Second {
		r.Errorf("ack_wait", "%s is below 1s: slow batches would be redelivered to another replica", c.AckWait)
	}
	if c.MaxAckPending < c.Batch {
		r.Errorf("max_ack_pending", "%d is below batch %d", c.MaxAckPending, c.Batch)
	}
	if c.Batch < 1 || c.Batch > 10000 {
		r.Errorf("batch", "%d: want 1..10000", c.Batch)
	}
	if c.MaxFuture < time.Second {
		r.Errorf("max_future", "%s is below 1s: the agents' and the hub's clocks are never that close", c.MaxFuture)
	}
	if c.DedupTTL < time.Hour {
		r.Errorf("dedup_ttl", "%s: must cover the agents' buffer.max_age (hours or days)", c.DedupTTL)
	}
	for i, p := range c.Production {
		pr := r.Sub("production" + config.Index(i))
		if _, err := path.Match(p.Signal, ""); err != nil || p.Signal == "" {
			pr.Errorf("signal", "want a signal name or pattern, got %q", p.Signal)
		}
		if p.Feature == "" {
			pr.Errorf("feature", "required")
		}
	}
}
