package hub

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
	"unicode"

	"go.yaml.in/yaml/v3"

	"github.com/gemba-io/gemba/config"
	"github.com/gemba-io/gemba/hub/act"
	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/console"
	"github.com/gemba-io/gemba/hub/decide"
	"github.com/gemba-io/gemba/hub/decide/guard"
	"github.com/gemba-io/gemba/hub/decide/versions"
	"github.com/gemba-io/gemba/hub/ingest/agents"
	"github.com/gemba-io/gemba/hub/ingest/commerce"
	"github.com/gemba-io/gemba/hub/monitor/fleet"
	"github.com/gemba-io/gemba/hub/monitor/quality"
	"github.com/gemba-io/gemba/hub/state/features"
	"github.com/gemba-io/gemba/hub/state/inventory"
	"github.com/gemba-io/gemba/internal/memlimit"
	"github.com/gemba-io/gemba/signal"
)

// Config is the whole hub configuration file.
type Config struct {
	Hub       Settings             `yaml:"hub" json:"hub"`
	HTTP      HTTPConfig           `yaml:"http" json:"http"`
	NATS      NATSConfig           `yaml:"nats" json:"nats"`
	Ingest    agents.Config        `yaml:"ingest" json:"ingest"`
	Commerce  commerce.Config      `yaml:"commerce" json:"commerce"`
	Features  features.Definitions `yaml:"features" json:"features"`
	Inventory inventory.Config     `yaml:"inventory" json:"inventory"`
	Graph     GraphConfig          `yaml:"graph" json:"graph"`
	Fleet     FleetConfig          `yaml:"fleet" json:"fleet"`

	// The decision room is on when the file has a guard section (its max_discount is required):
	// rules, guardrails, the decision log and action delivery.
	Guard  *guard.Config   `yaml:"guard" json:"guard,omitempty"`
	Act    *act.Config     `yaml:"act" json:"act,omitempty"` // default: NATS only, on the commerce channels
	Decide decide.Config   `yaml:"decide" json:"decide"`
	Audit  audit.Config    `yaml:"audit" json:"audit"`
	Rules  versions.Config `yaml:"rules" json:"rules"`

	// Console is the web console on the HTTP listener (off by default).
	Console console.Config `yaml:"console" json:"console"`

	// Learn is the demand model registry: forecasts for days of cover (off by default; hub/learning.go).
	Learn LearnConfig `yaml:"learn" json:"learn"`

	// Monitor is data-quality and drift monitoring per feature × key and agent stream (on by
	// default; hub/monitoring.go).
	Monitor quality.Config `yaml:"monitor" json:"monitor"`

	version string
}

// Decisions reports whether the decision room runs (the config has a guard section).
func (c *Config) Decisions() bool { return c.Guard != nil }

// Settings name the replica and set its process-wide behaviour.
type Settings struct {
	// ID names this replica in logs and the embedded server (default: the host name).
	ID string `yaml:"id" json:"id"`
	// DataDir holds the embedded NATS server's store (when no nats.servers are configured).
	DataDir         string        `yaml:"data_dir" json:"data_dir"`
	Log             config.Log    `yaml:"log" json:"log"`
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout" json:"shutdown_timeout"`
	// MemoryLimit is Go's soft memory limit for the process (runtime/debug.SetMemoryLimit): auto (the
	// default) follows MemoryPolicy; off leaves Go's default or GOMEMLIMIT/GOGC; a size is fixed.
	// Without a limit the heap grows to twice what is live (docs/BENCHMARKS.md, "RSS").
	MemoryLimit memlimit.Setting `yaml:"memory_limit" json:"memory_limit"`
}

// MemoryPolicy is memory_limit: auto. The 120 MiB floor holds a hub with 100,000 SKUs × 3 sites
// (~95 MiB live with its embedded server) at ~140 MiB of RSS at rest, where Go's default lets the
// heap double to 340–380 MiB (docs/BENCHMARKS.md, "RSS"). A state that stays bigger raises the limit
// to 25 % over the live heap it keeps for 30 s, so the collector never runs without end; a burst
// shorter than that (a backlog's messages in flight) is collected harder within the limit.
var MemoryPolicy = memlimit.Policy{Floor: 120 << 20, Headroom: 25, Window: 30 * time.Second}

// HTTPConfig is the API, health and metrics listener.
type HTTPConfig struct {
	Enabled bool   `yaml:"enabled" json:"enabled"`
	Listen  string `yaml:"listen" json:"listen"`
	// ReadToken, when set, is required for the read API (it is open on the listener otherwise). The
	// commerce endpoints have their own token (commerce.http.token).
	ReadToken config.Secret `yaml:"read_token" json:"read_token"`
	// Writers are named tokens for the API's changes (approve, reject, kill switch): a change made
	// with one is recorded as made by its name. Without writers or write_token changes are refused.
	Writers []Writer `yaml:"writers" json:"writers,omitempty"`
	// WriteToken is a token shared by everyone who makes changes: a change made with it is recorded
	// under the name its body gives, marked as not verified (kept for compatibility; use writers).
	WriteToken config.Secret `yaml:"write_token" json:"write_token"`
}

// Writer is one of http.writers: a person or tool allowed to change decisions, and its token.
type Writer struct {
	Name  string        `yaml:"name" json:"name"`
	Token config.Secret `yaml:"token" json:"token"`
}

// NATSConfig is how the hub reaches NATS; without servers it runs an embedded server.
type NATSConfig struct {
	Servers   []string      `yaml:"servers" json:"servers"`
	Name      string        `yaml:"name" json:"name"`
	User      string        `yaml:"user" json:"user"`
	Password  config.Secret `yaml:"password" json:"password"`
	Token     config.Secret `yaml:"token" json:"token"`
	CredsFile string        `yaml:"creds_file" json:"creds_file"`
	TLS       TLSConfig     `yaml:"tls" json:"tls"`
	// SubjectPrefix is the agents' (uplink.nats.subject_prefix) and the commerce subjects' prefix.
	SubjectPrefix string `yaml:"subject_prefix" json:"subject_prefix"`
	// Replicas of the hub's KV buckets and streams: 1, or 3 on a cluster.
	Replicas int            `yaml:"replicas" json:"replicas"`
	Embedded EmbeddedConfig `yaml:"embedded" json:"embedded"`
}

// MarshalJSON shows the servers with their credentials redacted (also those written without a
// scheme, which the effective config's URL redaction does not recognise).
func (n NATSConfig) MarshalJSON() ([]byte, error) {
	type plain NATSConfig
	p := plain(n)
	p.Servers = make([]string, len(n.Servers))
	for i, s := range n.Servers {
		p.Servers[i] = redactAll(s)
	}
	return json.Marshal(p)
}

// serverURL is s as nats.go reads it: nats:// when it has no scheme.
func serverURL(s string) string {
	if strings.Contains(s, "://") {
		return s
	}
	return "nats://" + s
}

// TLSConfig verifies the server and presents a client certificate (mTLS).
type TLSConfig struct {
	CAFile   string `yaml:"ca_file" json:"ca_file"`
	CertFile string `yaml:"cert_file" json:"cert_file"`
	KeyFile  string `yaml:"key_file" json:"key_file"`
}

// EmbeddedConfig is the embedded NATS server (used when nats.servers is empty).
type EmbeddedConfig struct {
	// Listen is where agents connect (loopback by default; set 0.0.0.0:4222 to accept gateways).
	Listen string `yaml:"listen" json:"listen"`
	// MaxStore caps JetStream's disk use (0: the server's default, a share of the free disk).
	MaxStore config.ByteSize `yaml:"max_store" json:"max_store"`
	// MaxMemory caps JetStream's memory storage.
	MaxMemory config.ByteSize `yaml:"max_memory" json:"max_memory"`
}

// GraphConfig points at the knowledge graph file.
type GraphConfig struct {
	File string `yaml:"file" json:"file"`
	// Bucket records each graph version (version, hash, when) loaded by any replica.
	Bucket string `yaml:"bucket" json:"bucket"`
}

// FleetConfig is the agents' heartbeat table.
type FleetConfig struct {
	Bucket string `yaml:"bucket" json:"bucket"`
	// StaleAfter marks an agent whose last heartbeat is older than this (a few heartbeat intervals).
	StaleAfter time.Duration `yaml:"stale_after" json:"stale_after"`
	// ForgetAfter deletes an agent not heard from for this long from the fleet (agents that come
	// and go would grow it for ever).
	ForgetAfter time.Duration `yaml:"forget_after" json:"forget_after"`
}

// Bucket names of the hub's own state, beside those of the sections above.
const (
	featuresBucket = "GEMBA_FEATURES"
	dedupBucket    = "GEMBA_DEDUP"
)

// DefaultConfig is what an empty file gives.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		Hub: Settings{ID: sanitize(host), DataDir: "/var/lib/gemba-hub", Log: config.Log{Level: "info", Format: "json"},
			ShutdownTimeout: 15 * time.Second},
		HTTP:      HTTPConfig{Enabled: true, Listen: "127.0.0.1:9400"},
		NATS:      NATSConfig{SubjectPrefix: "gemba", Replicas: 1, Embedded: EmbeddedConfig{Listen: "127.0.0.1:4222"}},
		Ingest:    agents.DefaultConfig(),
		Commerce:  defaultCommerce(),
		Inventory: defaultInventory(),
		Graph:     GraphConfig{Bucket: "GEMBA_GRAPH"},
		Fleet:     FleetConfig{Bucket: "GEMBA_FLEET", StaleAfter: 30 * time.Second, ForgetAfter: fleet.DefaultForgetAfter},
		Decide:    decide.DefaultConfig(),
		Audit:     audit.Config{Stream: audit.DefaultStream, Retention: audit.DefaultRetention, DuplicateWindow: audit.DefaultDuplicateWindow},
		Rules:     versions.Config{Bucket: versions.DefaultBucket},
		Console:   console.DefaultConfig(),
		Learn:     DefaultLearnConfig(),
		Monitor:   quality.DefaultConfig(),
	}
}

// defaultCommerce names three sales channels: the commerce stream must list its channels when it
// shares the agents' subject prefix (see Config.Validate).
func defaultCommerce() commerce.Config {
	c := commerce.DefaultConfig()
	c.Channels = []string{"web", "retail", "wholesale"}
	c.Replicas = 0 // nats.replicas
	return c
}

// defaultInventory is the inventory section's defaults, its replicas nats.replicas.
func defaultInventory() inventory.Config {
	c := inventory.DefaultConfig()
	c.Replicas = 0
	return c
}

var nonToken = regexp.MustCompile(`[^A-Za-z0-9_-]+`)

func sanitize(s string) string {
	if s = nonToken.ReplaceAllString(s, "-"); s == "" {
		return "gemba-hub"
	}
	return s
}

// Validate checks the settings.
func (s *Settings) Validate(r config.Report) {
	if err := signal.CheckToken(s.ID); err != nil {
		r.Errorf("id", "%v", err)
	}
	if s.ShutdownTimeout <= 0 {
		r.Errorf("shutdown_timeout", "must be positive")
	}
	s.MemoryLimit.Check(r, "memory_limit", 32<<20)
}

// Validate checks the listener.
func (h *HTTPConfig) Validate(r config.Report) {
	if !h.Enabled {
		return
	}
	if _, _, err := net.SplitHostPort(h.Listen); err != nil {
		r.Errorf("listen", "%q: %v", h.Listen, err)
	}
	// A token is one identity: a writer's that is another's, the shared one's or the read token
	// would record changes under a name its holder may not be, or let a reader change decisions.
	names := map[string]bool{}
	tokens := map[string]string{}
	if h.ReadToken.IsSet() {
		tokens[h.ReadToken.Value()] = "http.read_token"
	}
	if h.WriteToken.IsSet() {
		if other, ok := tokens[h.WriteToken.Value()]; ok {
			r.Errorf("write_token", "the same token as %s: whoever may read could approve and throw the kill switch", other)
		}
		tokens[h.WriteToken.Value()] = "http.write_token"
	}
	for i, w := range h.Writers {
		at := "writers" + config.Index(i)
		switch name := strings.TrimSpace(w.Name); {
		case name == "":
			r.Errorf(at+".name", "required: the name a change made with this token is recorded under")
		case name != w.Name || strings.ContainsFunc(name, unicode.IsControl):
			r.Errorf(at+".name", "%q: one line, without leading or trailing white space", w.Name)
		case names[name]:
			r.Errorf(at+".name", "%q is already a writer: each name once", name)
		default:
			names[name] = true
		}
		if !w.Token.IsSet() {
			r.Errorf(at+".token", "required (inline, ${VAR} or {file: PATH}): an empty token would let anyone change decisions as %q", w.Name)
			continue
		}
		if other, ok := tokens[w.Token.Value()]; ok {
			r.Errorf(at+".token", "the same token as %s: each token is one identity", other)
			continue
		}
		tokens[w.Token.Value()] = "http." + at
	}
}

// changedBy names the key of tok when it is a token for the API's changes (write_token or a
// writer's), "" otherwise.
func (h *HTTPConfig) changedBy(tok string) string {
	if h.WriteToken.Value() == tok {
		return "http.write_token"
	}
	for i, w := range h.Writers {
		if w.Token.Value() == tok {
			return "http.writers" + config.Index(i)
		}
	}
	return ""
}

// Validate checks the NATS section.
func (n *NATSConfig) Validate(r config.Report) {
	if err := signal.CheckToken(n.SubjectPrefix); err != nil {
		r.Errorf("subject_prefix", "%v", err)
	}
	if n.Replicas != 1 && n.Replicas != 3 {
		r.Errorf("replicas", "must be 1 or 3, got %d", n.Replicas)
	}
	if len(n.Servers) == 0 {
		if _, _, err := net.SplitHostPort(n.Embedded.Listen); err != nil {
			r.Errorf("embedded.listen", "%q: %v", n.Embedded.Listen, err)
		}
		if n.Replicas != 1 {
			r.Errorf("replicas", "the embedded server is a single node: replicas must be 1")
		}
	}
	for i, s := range n.Servers {
		if s == "" {
			r.Errorf("servers"+config.Index(i), "empty URL")
			continue
		}
		for _, u := range strings.Split(s, ",") { // nats.go reads a comma-separated list too
			if _, err := url.Parse(serverURL(u)); err != nil {
				// The parser's error quotes the URL: name it redacted instead.
				r.Errorf("servers"+config.Index(i), "invalid URL %s (a password with %%, /, ? or # must be percent-encoded)", config.RedactURL(u))
			}
		}
	}
	if n.Password.Value() != "" && n.User == "" {
		r.Errorf("password", "set without user")
	}
	for f, p := range map[string]string{"creds_file": n.CredsFile, "tls.ca_file": n.TLS.CAFile, "tls.cert_file": n.TLS.CertFile, "tls.key_file": n.TLS.KeyFile} {
		if p != "" {
			r.CheckFile(f, p)
		}
	}
	if (n.TLS.CertFile == "") != (n.TLS.KeyFile == "") {
		r.Errorf("tls", "cert_file and key_file go together")
	}
}

// Validate checks the graph section.
// The file itself is read (and every problem in it reported with its line) by validate and run.
func (g *GraphConfig) Validate(r config.Report) {
	if err := signal.CheckToken(g.Bucket); err != nil {
		r.Errorf("bucket", "%v", err)
	}
}

// Validate checks the fleet section.
func (f *FleetConfig) Validate(r config.Report) {
	if err := signal.CheckToken(f.Bucket); err != nil {
		r.Errorf("bucket", "%v", err)
	}
	if f.StaleAfter < time.Second {
		r.Errorf("stale_after", "%s: want at least 1s (a few agent heartbeat intervals)", f.StaleAfter)
	}
	if f.ForgetAfter < time.Hour || f.ForgetAfter <= f.StaleAfter {
		r.Errorf("forget_after", "%s: want at least 1h and longer than stale_after %s (an agent is stale long before it is forgotten)",
			f.ForgetAfter, f.StaleAfter)
	}
}

// fillReplicas gives every section whose replicas are unset (0) nats.replicas; a value set is
// honoured (1 on a 3-node cluster: a bucket that may be rebuilt, or not worth three copies).
func (c *Config) fillReplicas() {
	for _, r := range []*int{&c.Inventory.Replicas, &c.Commerce.Replicas, &c.Monitor.Replicas} {
		if *r == 0 {
			*r = c.NATS.Replicas
		}
	}
}

// fillDecisions sets what the decision room's sections take from the others: the subject prefix,
// the replicas, and (without an act section) delivery on NATS alone to the commerce channels.
func (c *Config) fillDecisions() {
	c.Audit.Prefix = c.NATS.SubjectPrefix
	c.Audit.Defaults()
	if c.Audit.Replicas == 0 {
		c.Audit.Replicas = c.NATS.Replicas
	}
	if c.Rules.Replicas == 0 {
		c.Rules.Replicas = c.NATS.Replicas
	}
	if c.Guard == nil {
		return
	}
	if c.Guard.Replicas == 0 {
		c.Guard.Replicas = c.NATS.Replicas
	}
	if c.Act == nil {
		c.Act = &act.Config{Channels: map[string]act.Channel{}}
		for _, ch := range c.Commerce.Channels {
			c.Act.Channels[ch] = act.Channel{}
		}
	}
	if c.Act.Prefix == "" {
		c.Act.Prefix = c.NATS.SubjectPrefix
	}
	if c.Act.Replicas == 0 {
		c.Act.Replicas = c.NATS.Replicas
	}
	c.Act.Defaults()
}

// Validate checks what spans sections.
func (c *Config) Validate(r config.Report) {
	names := make([]string, 0, len(c.Features))
	for _, f := range c.Features {
		names = append(names, f.Name)
	}
	c.Monitor.CheckFeatures(r.Sub("monitor"), names)
	if c.Guard == nil && c.Decide.Rules != "" {
		r.Errorf("guard", "required with decide.rules: no decision acts without guardrails (set at least guard.max_discount)")
	}
	if len(c.NATS.Servers) == 0 && c.Hub.DataDir == "" {
		// Empty, the store would be the working directory's nats/: another on each start from elsewhere.
		r.Errorf("hub.data_dir", "required for the embedded NATS server's store (nats.servers is empty)")
	}
	if c.Console.Enabled && !c.HTTP.Enabled {
		r.Errorf("console.enabled", "the console is served on the HTTP listener: set http.enabled too")
	}
	if c.Guard != nil && c.Decide.Bucket+c.Guard.MaxSkew >= c.Guard.Retention {
		// The sweep removes a decision's record retention after it was decided; a proposal of the same
		// id can come until its bucket ends, dated up to max_skew off: it would be decided again.
		r.Errorf("guard.retention", "must exceed decide.bucket + guard.max_skew (%s + %s): a decision id is "+
			"remembered that long, or it is decided again within its bucket, got %s", c.Decide.Bucket, c.Guard.MaxSkew, c.Guard.Retention)
	}
	if c.Guard == nil && c.Act != nil {
		r.Errorf("guard", "required with act: no decision acts without guardrails (set at least guard.max_discount)")
	}
	if t := c.Commerce.HTTP.Token; t.IsSet() {
		if other := c.HTTP.changedBy(t.Value()); other != "" {
			r.Errorf("commerce.http.token", "the same token as %s: the sales system that sends events could approve "+
				"promotions and throw the kill switch", other)
		}
	}
	if c.Commerce.Prefix == c.NATS.SubjectPrefix && len(c.Commerce.Channels) == 0 {
		r.Errorf("commerce.channels", "list the sales channels: the commerce stream shares the prefix %q with the agents' "+
			"stream, and a catch-all <prefix>.commerce.> would overlap <prefix>.*.*.samples (JetStream refuses overlapping streams)",
			c.NATS.SubjectPrefix)
	}
}

// Warnings are what the config allows but should not be: the hub logs each at start, validate
// prints them.
func (c *Config) Warnings() []string {
	var w []string
	if c.HTTP.WriteToken.IsSet() && c.Guard != nil && c.Guard.Approval.ForbidSelf {
		w = append(w, "http.write_token with guard.approval.forbid_self_approval: a change made with the shared token "+
			"is recorded under whatever name its body gives, so whoever holds it can approve their own rule set's "+
			"promotions under another name; give each approver a token of their own in http.writers and remove write_token")
	}
	return w
}

// Load reads, expands and validates a config file; every problem is reported at once.
func Load(path string, lookup func(string) (string, bool)) (*Config, error) {
	data, err := config.ReadFile(path, config.DefaultMaxSize)
	if err != nil {
		return nil, err
	}
	cfg, err := Parse(data, lookup)
	if err != nil {
		return nil, err
	}
	// The graph travels with the config: a relative path is relative to the config file.
	if cfg.Graph.File != "" && !filepath.IsAbs(cfg.Graph.File) {
		cfg.Graph.File = filepath.Join(filepath.Dir(path), cfg.Graph.File)
	}
	if cfg.Decide.Rules != "" && !filepath.IsAbs(cfg.Decide.Rules) {
		cfg.Decide.Rules = filepath.Join(filepath.Dir(path), cfg.Decide.Rules)
	}
	return cfg, nil
}

// Parse is Load on bytes; a relative graph.file stays relative to the working directory.
func Parse(data []byte, lookup func(string) (string, bool)) (*Config, error) {
	cfg := DefaultConfig()
	// The optional sections start from their defaults when the file has them (and stay nil, off and
	// unchecked, when it does not).
	var top map[string]yaml.Node
	if yaml.Unmarshal(data, &top) == nil {
		if _, ok := top["guard"]; ok {
			g := guard.DefaultConfig()
			g.Replicas = 0 // nats.replicas
			cfg.Guard = &g
		}
		if _, ok := top["act"]; ok {
			cfg.Act = &act.Config{}
		}
	}
	if err := config.NewDecoder(config.WithEnv(lookup)).Unmarshal(data, &cfg); err != nil {
		return nil, err
	}
	cfg.fillReplicas()
	cfg.fillDecisions()
	eff, err := json.Marshal(&cfg)
	if err != nil {
		return nil, fmt.Errorf("config: render effective config: %w", err)
	}
	sum := sha256.Sum256(config.RedactJSON(eff))
	cfg.version = hex.EncodeToString(sum[:8])
	return &cfg, nil
}

// Version is the hash of the effective config (secrets excluded).
func (c *Config) Version() string { return c.version }

// Effective renders the effective config as indented JSON, secrets redacted.
func (c *Config) Effective() ([]byte, error) {
	out, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return nil, err
	}
	return config.RedactJSON(out), nil
}
