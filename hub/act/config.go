package act

import (
	"encoding/base64"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/gemba-io/gemba/config"
)

// Config is the act section of the hub config.
type Config struct {
	// Prefix is the subject prefix ("gemba"): actions go to <prefix>.actions.promotions.<channel>
	// and <prefix>.actions.holds.<channel>.
	Prefix string `yaml:"prefix" json:"prefix"`
	// Bucket is the outbox KV bucket; Stream the actions stream. Neither has a TTL: a delivered
	// record stays so that a late Enqueue of the same decision is still a no-op.
	Bucket   string `yaml:"bucket" json:"bucket"`
	Stream   string `yaml:"stream" json:"stream"`
	Replicas int    `yaml:"replicas" json:"replicas"`
	// DuplicateWindow is the stream's Nats-Msg-Id window. It must exceed Lease: a loop that crashed
	// after its publish and before marking it is taken over after the lease, and its retry must
	// still fall within the window.
	DuplicateWindow time.Duration `yaml:"duplicate_window" json:"duplicate_window"`
	// Lease is how long a loop owns a record it claimed; another loop takes it over after that.
	Lease time.Duration `yaml:"lease" json:"lease"`
	// Poll is how often a loop looks for records whose time has come (retries, ends, expired leases).
	Poll time.Duration `yaml:"poll" json:"poll"`
	// Channels lists every channel actions may name; one without a webhook gets NATS only. The
	// names are subject tokens, listed literally in the stream (a wildcard channel token would
	// overlap the agents' <prefix>.*.*.samples|features|status).
	Channels map[string]Channel `yaml:"channels" json:"channels"`
	// Workers bounds the attempts one loop runs at once; one channel's attempts take at most
	// Workers-1 of them (when Workers > 1), so a slow webhook does not hold up the others.
	Workers int `yaml:"workers" json:"workers"`
	// Retry paces failed webhooks.
	Retry Retry `yaml:"retry" json:"retry"`
	// Owner names this replica in leases (host name, pod name); a random one when empty.
	Owner string `yaml:"owner" json:"owner"`
	// Now is the clock (time.Now when nil), injectable for tests.
	Now func() time.Time `yaml:"-" json:"-"`
}

// Channel is one sales channel's delivery.
type Channel struct {
	Webhook *Webhook `yaml:"webhook" json:"webhook,omitempty"`
}

// Webhook is a Standard Webhooks endpoint.
type Webhook struct {
	// URL is kept as a secret (it often carries the receiver's token: "${ENV}" or {file: PATH});
	// errors and logs name only its scheme and host.
	URL config.Secret `yaml:"url" json:"url"`
	// Secret is "whsec_" + base64 of the key, as the spec writes it.
	Secret  config.Secret `yaml:"secret" json:"secret"`
	Timeout time.Duration `yaml:"timeout" json:"timeout"`
}

// Retry paces failed webhook calls: exponential backoff with jitter from Initial to Max, a
// Retry-After on 429/503 honoured, dead-lettered after MaxAttempts or MaxAge (whichever first).
type Retry struct {
	Initial     time.Duration `yaml:"initial" json:"initial"`
	Max         time.Duration `yaml:"max" json:"max"`
	MaxAttempts int           `yaml:"max_attempts" json:"max_attempts"`
	MaxAge      time.Duration `yaml:"max_age" json:"max_age"`
}

// Defaults fills what was left empty.
func (c *Config) Defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.Prefix == "" {
		c.Prefix = "gemba"
	}
	if c.Bucket == "" {
		c.Bucket = "GEMBA_ACT_OUTBOX"
	}
	if c.Stream == "" {
		c.Stream = "ACTIONS"
	}
	def(&c.Lease, 30*time.Second)
	def(&c.DuplicateWindow, 10*time.Minute)
	def(&c.Poll, 250*time.Millisecond)
	def(&c.Retry.Initial, time.Second)
	def(&c.Retry.Max, 10*time.Minute)
	def(&c.Retry.MaxAge, 24*time.Hour)
	if c.Workers == 0 {
		c.Workers = 8
	}
	if c.Retry.MaxAttempts == 0 {
		c.Retry.MaxAttempts = 20
	}
	chs := make(map[string]Channel, len(c.Channels)) // a copy: the caller's map stays as decoded
	for name, ch := range c.Channels {
		if ch.Webhook != nil {
			w := *ch.Webhook
			def(&w.Timeout, min(10*time.Second, c.Lease/2))
			ch.Webhook = &w
		}
		chs[name] = ch
	}
	c.Channels = chs
}

// reserved are the agents' last subject tokens: a channel of that name would make
// <prefix>.actions.<kind>.<channel> overlap <prefix>.*.*.<name>, which JetStream refuses.
var reserved = map[string]bool{"samples": true, "features": true, "status": true}

// problems checks the config as it will run, defaults filled (Validate sees it as decoded).
func (c *Config) problems() config.Checks {
	d := *c
	d.Defaults()
	c = &d
	var ps config.Checks
	add := ps.Add
	if !subjectToken(c.Prefix) {
		add("prefix", "%q is not one subject token", c.Prefix)
	}
	if c.Lease <= 0 {
		add("lease", "must be positive")
	}
	if c.DuplicateWindow <= c.Lease {
		add("duplicate_window", "%s must exceed lease %s (a retry after a takeover must still be deduplicated)", c.DuplicateWindow, c.Lease)
	}
	if c.Poll <= 0 {
		add("poll", "must be positive")
	}
	if c.Retry.Initial <= 0 || c.Retry.Max < c.Retry.Initial {
		add("retry", "need 0 < initial (%s) <= max (%s)", c.Retry.Initial, c.Retry.Max)
	}
	if c.Workers < 1 {
		add("workers", "must be at least 1")
	}
	if c.Retry.MaxAttempts < 1 {
		add("retry.max_attempts", "must be at least 1")
	}
	if c.Retry.MaxAge <= 0 {
		add("retry.max_age", "must be positive")
	}
	if len(c.Channels) == 0 {
		add("channels", "at least one channel is needed")
	}
	for _, name := range sortedKeys(c.Channels) {
		field := "channels." + name
		switch {
		case !subjectToken(name):
			add(field, "channel %q is not one subject token (letters, digits, '-', '_')", name)
		case reserved[name]:
			add(field, "channel %q would overlap the agents' %s.*.*.%s subjects", name, c.Prefix, name)
		}
		w := c.Channels[name].Webhook
		if w == nil {
			continue
		}
		if u, err := url.Parse(w.URL.Value()); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			add(field+".webhook.url", "not an http(s) URL with a host (the URL itself is not repeated: it may hold a token)")
		}
		if _, err := decodeSecret(w.Secret.Value()); err != nil {
			add(field+".webhook.secret", "%v", err)
		}
		if w.Timeout <= 0 || w.Timeout > c.Lease/2 {
			add(field+".webhook.timeout", "%s must be positive and at most half the lease %s (a call must end well before another loop may take over)", w.Timeout, c.Lease)
		}
	}
	return ps
}

// Validate implements config.Validator.
func (c *Config) Validate(r config.Report) {
	c.problems().Report(r)
}

func (c *Config) err() error { return c.problems().Err("act") }

func (c *Config) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// subjects lists the stream's subjects: every configured channel literally, for both kinds.
func (c *Config) subjects() []string {
	var s []string
	for _, name := range sortedKeys(c.Channels) {
		s = append(s, c.subject(Promote, name), c.subject(Hold, name))
	}
	return s
}

func (c *Config) subject(k Kind, channel string) string {
	if k == Hold {
		return c.Prefix + ".actions.holds." + channel
	}
	return c.Prefix + ".actions.promotions." + channel
}

func subjectToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// decodeSecret reads a Standard Webhooks secret: "whsec_" + base64 of the key.
func decodeSecret(s string) ([]byte, error) {
	b64, ok := strings.CutPrefix(s, "whsec_")
	if !ok {
		return nil, fmt.Errorf("secret must start with \"whsec_\" (Standard Webhooks)")
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("secret after \"whsec_\" is not base64: %v", err)
	}
	if len(key) < 16 {
		return nil, fmt.Errorf("secret key is %d bytes; at least 16 are needed", len(key))
	}
	return key, nil
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
