package agent

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path"
	"strings"
	"time"

	"github.com/gemba-io/gemba/buffer"
	"github.com/gemba-io/gemba/collectors"
	"github.com/gemba-io/gemba/config"
	"github.com/gemba-io/gemba/features"
	"github.com/gemba-io/gemba/signal"
	"github.com/gemba-io/gemba/uplink"
)

// Config is the whole agent configuration file.
type Config struct {
	Agent      Settings          `yaml:"agent" json:"agent"`
	HTTP       HTTPConfig        `yaml:"http" json:"http"`
	Buffer     buffer.Config     `yaml:"buffer" json:"buffer"`
	Uplink     uplink.Config     `yaml:"uplink" json:"uplink"`
	Collectors []collectors.Spec `yaml:"collectors" json:"collectors"`
	Features   features.Config   `yaml:"features" json:"features"`
	version    string            // hash of the effective config, set by Load
}

// Settings identifies the agent and sets its process-wide behaviour.
type Settings struct {
	ID   string `yaml:"id" json:"id"`
	Site string `yaml:"site" json:"site"`
	// DataDir holds collector state (certificates, session state). Defaults to <buffer.dir>/state.
	DataDir string    `yaml:"data_dir" json:"data_dir"`
	Log     LogConfig `yaml:"log" json:"log"`
	// ShutdownTimeout bounds the drain on SIGINT/SIGTERM.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout" json:"shutdown_timeout"`
	// Restart is the backoff for collectors that fail.
	Restart Backoff `yaml:"restart" json:"restart"`
	// Linger is how long the writer waits to group samples into one buffer record (and so one NATS
	// message); MaxChunk caps the record size.
	Linger   time.Duration   `yaml:"linger" json:"linger"`
	MaxChunk config.ByteSize `yaml:"max_chunk" json:"max_chunk"`
	// Timestamps bounds the sample times the agent trusts; see docs/configuration.md.
	Timestamps features.TimeBounds `yaml:"timestamps" json:"timestamps"`
	// MaxFeatureSeries caps the series the feature engine holds (signals with a feature rule);
	// samples of new signals beyond it are forwarded raw, not folded.
	MaxFeatureSeries int `yaml:"max_feature_series" json:"max_feature_series"`
	// MemoryLimit is Go's soft memory limit for the process (runtime/debug.SetMemoryLimit): auto
	// (the default) keeps it at 32MiB, raised with the live heap (see RunMemoryLimit); off leaves
	// Go's default or GOMEMLIMIT/GOGC; a size is a fixed limit. Without a limit the heap grows to
	// twice what is live, and the peak RSS at 5,000 OPC UA variables went over 50 MiB.
	MemoryLimit MemoryLimit `yaml:"memory_limit" json:"memory_limit"`
}

// LogConfig selects log format and level.
type LogConfig struct {
	Level  string `yaml:"level" json:"level"`   // debug, info, warn, error
	Format string `yaml:"format" json:"format"` // json or text
}

// Backoff is a capped exponential backoff.
type Backoff struct {
	Initial time.Duration `yaml:"initial" json:"initial"`
	Max     time.Duration `yaml:"max" json:"max"`
}

// HTTPConfig is the health and metrics listener.
type HTTPConfig struct {
	Enabled bool   `yaml:"enabled" json:"enabled"`
	Listen  string `yaml:"listen" json:"listen"`
	// Pprof serves Go's profiler under /debug/pprof/ (off by default: it exposes internals).
	Pprof bool `yaml:"pprof" json:"pprof"`
	// AdminToken, when set, is required (Authorization: Bearer) by POST /admin/reload, on top of
	// the loopback-only rule. A value ("${VAR}") or {file: PATH}.
	AdminToken config.Secret `yaml:"admin_token" json:"admin_token"`
}

// maxChunkLimit leaves room under the buffer's record limit for the chunk header.
const maxChunkLimit = buffer.MaxRecord - 8<<10

// DefaultConfig returns the configuration an empty file gives.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		Agent: Settings{
			ID:               sanitizeToken(host),
			Log:              LogConfig{Level: "info", Format: "json"},
			ShutdownTimeout:  10 * time.Second,
			Restart:          Backoff{Initial: time.Second, Max: time.Minute},
			Linger:           2 * time.Millisecond,
			MaxChunk:         256 << 10,
			Timestamps:       features.DefaultTimeBounds(),
			MaxFeatureSeries: features.DefaultMaxSeries,
			MemoryLimit:      MemoryAuto,
		},
		HTTP:   HTTPConfig{Enabled: true, Listen: "127.0.0.1:7467"},
		Buffer: buffer.DefaultConfig(),
		Uplink: uplink.DefaultConfig(),
	}
}

func sanitizeToken(s string) string {
	s = strings.Map(func(r rune) rune {
		if strings.ContainsRune(signal.NotInToken, r) {
			return '-'
		}
		return r
	}, s)
	if s == "" {
		return "gemba-agent"
	}
	return s
}

// Validate implements config.Validator for the agent section.
func (s *Settings) Validate(r config.Report) {
	if err := signal.CheckToken(s.ID); err != nil {
		r.Errorf("id", "%v", err)
	}
	if err := signal.CheckToken(s.Site); err != nil {
		r.Errorf("site", "required: the plant or site name, one NATS subject token (%v)", err)
	}
	if _, err := ParseLevel(s.Log.Level); err != nil {
		r.Errorf("log.level", "%v", err)
	}
	if s.Log.Format != "json" && s.Log.Format != "text" {
		r.Errorf("log.format", "must be json or text, got %q", s.Log.Format)
	}
	if s.ShutdownTimeout <= 0 {
		r.Errorf("shutdown_timeout", "must be positive")
	}
	s.MemoryLimit.Check(r, "memory_limit", minFixedLimit)
	if s.Restart.Initial <= 0 || s.Restart.Max < s.Restart.Initial {
		r.Errorf("restart", "need 0 < initial <= max")
	}
	if s.Linger < 0 || s.Linger > time.Second {
		r.Errorf("linger", "must be between 0 and 1s")
	}
	if s.MaxFeatureSeries < 1 {
		r.Errorf("max_feature_series", "must be at least 1, got %d", s.MaxFeatureSeries)
	}
	if s.MaxChunk < 1<<10 || s.MaxChunk > maxChunkLimit {
		r.Errorf("max_chunk", "must be between 1KiB and %v (one buffer record and one NATS message hold one chunk)", config.ByteSize(maxChunkLimit))
	}
}

// Validate implements config.Validator for the HTTP section.
func (h *HTTPConfig) Validate(r config.Report) {
	if !h.Enabled {
		return
	}
	if _, _, err := net.SplitHostPort(h.Listen); err != nil {
		r.Errorf("listen", "want host:port, e.g. 127.0.0.1:7467 (%v)", err)
	}
}

// Validate implements config.Validator for checks that span sections.
func (c *Config) Validate(r config.Report) {
	names := map[string]int{}
	for i, s := range c.Collectors {
		if s.Name == "" {
			continue
		}
		if j, dup := names[s.Name]; dup {
			r.Errorf(fmt.Sprintf("collectors[%d].name", i), "duplicate collector name %q (also %s)", s.Name, collectorAt(r, j, "name"))
		}
		names[s.Name] = i
		if fl, ok := s.Settings.(collectors.FileLister); ok && !s.Disabled {
			for _, f := range fl.Files() {
				r.CheckFile(fmt.Sprintf("collectors[%d].%s", i, f.Field), f.Path)
			}
		}
	}
	src := c.signalSources(r)
	c.Features.CheckSignals(r.Sub("features"), src.produces)
	for i, ru := range c.Features {
		if !src.mayMatch(ru.Signal) {
			r.Errorf(fmt.Sprintf("features[%d].signal", i), "no collector produces a signal %q matches, so this rule never applies (checked against OPC UA node signals and MQTT signal templates)", ru.Signal)
		}
	}
}

// signals is what a config's collectors can produce. Names are known statically for OPC UA nodes
// and for MQTT signals written without placeholders; a template such as "line1.{topic.2}.{field}"
// is known only as a glob, and a collector type that declares nothing may produce anything.
type signals struct {
	static   map[string]bool
	patterns []string // globs in which "*" stands for any text
	open     bool
}

// signalSources collects what the collectors produce and reports a static signal name produced
// by two enabled collectors: two sources interleaved in one series make every feature and chart
// of it wrong. Templated names cannot be compared, so they are not checked.
func (c *Config) signalSources(r config.Report) signals {
	src := signals{static: map[string]bool{}}
	owner := map[string]int{} // static name -> first enabled collector producing it
	for i, s := range c.Collectors {
		var names []string
		switch l := s.Settings.(type) {
		case collectors.SignalLister:
			names = l.Signals()
		case collectors.SignalPatterner:
			for _, p := range l.SignalPatterns() {
				if strings.Contains(p, "*") {
					src.patterns = append(src.patterns, p)
				} else {
					names = append(names, p)
				}
			}
		case nil:
		default:
			src.open = true
		}
		seen := map[string]bool{}
		for _, n := range names {
			src.static[n] = true
			if s.Disabled || seen[n] || n == "" {
				continue
			}
			seen[n] = true
			j, dup := owner[n]
			if !dup {
				owner[n] = i
				continue
			}
			at := fmt.Sprintf("collectors[%d]", i)
			if p, ok := r.Locate(at, "signal", n); ok {
				at = p
			}
			r.Errorf(at, "signal %q is also produced by collector %q (%s); two sources would interleave in one series", n, c.Collectors[j].Name, collectorAt(r, j, "name"))
		}
	}
	return src
}

// collectorAt names where collector j's field is written, for a problem that names a second
// place: "collectors[j], line N" in one file; merged from conf.d, where the index means nothing to
// the reader, "at FILE:LINE".
func collectorAt(r config.Report, j int, field string) string {
	at := fmt.Sprintf("collectors[%d]", j)
	switch w := r.Where(at + "." + field); {
	case strings.HasPrefix(w, "line "):
		at += ", " + w
	case w != "":
		at = "at " + w
	}
	return at
}

// produces reports whether a collector may produce the exact name s. An OPC UA array node's
// elements are named signal[i]; only the node's own name is listed.
func (src signals) produces(s string) bool {
	if src.open || src.static[s] || src.static[trimIndex(s)] {
		return true
	}
	for _, p := range src.patterns {
		if collectors.MatchGlob(p, s) {
			return true
		}
	}
	return false
}

// mayMatch reports whether a feature rule's signal (a path.Match pattern) can match something a
// collector produces. A pattern is compared only with static names: whether two globs overlap is
// not worth guessing, and a pattern with [...] or \ escapes may be aimed at array elements.
func (src signals) mayMatch(rule string) bool {
	if rule == "" || !strings.ContainsAny(rule, "*?[\\") {
		return rule == "" || src.produces(rule)
	}
	if src.open || len(src.patterns) > 0 || strings.ContainsAny(rule, "[\\") {
		return true
	}
	for s := range src.static {
		if ok, _ := path.Match(rule, s); ok {
			return true
		}
	}
	return false
}

// trimIndex removes an array index suffix: "a.b[3]" gives "a.b".
func trimIndex(s string) string {
	if !strings.HasSuffix(s, "]") {
		return s
	}
	i := strings.LastIndexByte(s, '[')
	if i <= 0 || strings.Trim(s[i+1:len(s)-1], "0123456789") != "" || i+2 == len(s) {
		return s
	}
	return s[:i]
}

// Load reads, expands and validates a config file. lookup resolves ${VAR} (os.LookupEnv). The error,
// if any, is a config.Problems listing everything wrong, each with path and line.
func Load(path string, lookup func(string) (string, bool)) (*Config, error) {
	data, err := config.ReadFile(path, config.DefaultMaxSize)
	if err != nil {
		return nil, err
	}
	return Parse(data, lookup)
}

// Parse is Load on bytes.
func Parse(data []byte, lookup func(string) (string, bool)) (*Config, error) {
	cfg := DefaultConfig()
	d := config.NewDecoder(config.WithEnv(lookup))
	if err := d.Unmarshal(data, &cfg); err != nil {
		return nil, err
	}
	return finish(&cfg)
}

// finish fills what depends on other settings and stamps the version.
func finish(cfg *Config) (*Config, error) {
	if cfg.Agent.DataDir == "" {
		cfg.Agent.DataDir = cfg.Buffer.Dir + string(os.PathSeparator) + "state"
	}
	if _, err := json.Marshal(cfg); err != nil {
		return nil, fmt.Errorf("config: render effective config: %w", err)
	}
	// Hash what Effective shows: credentials in URLs are secrets too.
	cfg.version = versionOf(cfg)
	return cfg, nil
}

// Version is the hash of the effective config (secrets excluded): the lineage id carried by every
// batch the agent publishes.
func (c *Config) Version() string { return c.version }

// ParseLevel parses a log level name.
func ParseLevel(s string) (slog.Level, error) { return config.ParseLevel(s) }
