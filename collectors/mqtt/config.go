package mqtt

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/gemba-io/gemba/config"
)

// Config is the YAML of one MQTT collector. NewConfig returns the defaults it is decoded over.
type Config struct {
	// Broker is one broker URL; Brokers lists several for failover (tried in order). Use one or the other.
	Broker  string   `yaml:"broker" json:"broker,omitempty"`
	Brokers []string `yaml:"brokers" json:"brokers,omitempty"`
	// ClientID must be stable when the session is persistent; the default is "gemba-<agent>-<name>".
	ClientID string        `yaml:"client_id" json:"client_id,omitempty"`
	Username string        `yaml:"username" json:"username,omitempty"`
	Password config.Secret `yaml:"password" json:"password"`
	TLS      TLSConfig     `yaml:"tls" json:"tls"`
	// QoS is the default QoS of subscriptions that do not set their own.
	QoS int `yaml:"qos" json:"qos"`
	// CleanSession nil means: persistent session (false) when any subscription has QoS >= 1.
	CleanSession   *bool         `yaml:"clean_session" json:"clean_session,omitempty"`
	KeepAlive      time.Duration `yaml:"keepalive" json:"keepalive"`
	ConnectTimeout time.Duration `yaml:"connect_timeout" json:"connect_timeout"`
	Reconnect      Backoff       `yaml:"reconnect" json:"reconnect"`
	// StallTimeout is the default silence after which a live subscription counts as stalled (0: off).
	StallTimeout time.Duration `yaml:"stall_timeout" json:"stall_timeout"`
	// MaxPayload is the largest payload parsed; larger ones are counted as bad and acknowledged,
	// and not read into memory beyond it (pubCutter).
	MaxPayload config.ByteSize `yaml:"max_payload" json:"max_payload"`
	// MaxBatch caps the messages handed to the buffer in one Emit (one durable write).
	MaxBatch int `yaml:"max_batch" json:"max_batch"`
	// Sparkplug holds host-application settings for sparkplugb subscriptions.
	Sparkplug SparkplugConfig `yaml:"sparkplug" json:"sparkplug"`
	// Subscriptions are the topic filters and how their payloads map to samples.
	Subscriptions []Subscription `yaml:"subscriptions" json:"subscriptions"`
}

// TLSConfig configures TLS for ssl://, tls://, mqtts:// and wss:// brokers.
type TLSConfig struct {
	CAFile             string `yaml:"ca_file" json:"ca_file,omitempty"`
	CertFile           string `yaml:"cert_file" json:"cert_file,omitempty"`
	KeyFile            string `yaml:"key_file" json:"key_file,omitempty"`
	ServerName         string `yaml:"server_name" json:"server_name,omitempty"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify" json:"insecure_skip_verify,omitempty"`
}

// Backoff bounds the wait between connection attempts.
type Backoff struct {
	Initial time.Duration `yaml:"initial" json:"initial"`
	Max     time.Duration `yaml:"max" json:"max"`
}

// SparkplugConfig configures the Sparkplug B host behaviour.
type SparkplugConfig struct {
	// RebirthOnGap publishes an NCMD "Node Control/Rebirth" when a seq gap or an unknown alias is seen.
	RebirthOnGap bool `yaml:"rebirth_on_gap" json:"rebirth_on_gap"`
	// RebirthInterval is the least time between two rebirth requests to one node.
	RebirthInterval time.Duration `yaml:"rebirth_interval" json:"rebirth_interval"`
}

// Subscription is one topic filter and its payload mapping.
type Subscription struct {
	Topic string `yaml:"topic" json:"topic"`
	// QoS nil takes the collector's qos.
	QoS *int `yaml:"qos" json:"qos,omitempty"`
	// Format is json, value or sparkplugb.
	Format string `yaml:"format" json:"format"`
	// Signal is the signal name template: {topic}, {topic.N} (0-based, negative from the end),
	// {field}, {json.PATH}; for sparkplugb {group}, {node}, {device}, {metric}.
	Signal string `yaml:"signal" json:"signal,omitempty"`
	// Each is the path of an array whose elements are mapped one by one ("." for a root array).
	Each string `yaml:"each" json:"each,omitempty"`
	// Fields select values by path; empty means every scalar leaf.
	Fields     []Field `yaml:"fields" json:"fields,omitempty"`
	TimeField  string  `yaml:"time_field" json:"time_field,omitempty"`
	TimeFormat string  `yaml:"time_format" json:"time_format,omitempty"`
	// Type forces the value type of a value-format payload: auto, float, int, bool, string.
	Type string `yaml:"type" json:"type,omitempty"`
	// Labels are added to every sample; values are templates like Signal.
	Labels map[string]string `yaml:"labels" json:"labels,omitempty"`
	// StallTimeout overrides the collector's stall_timeout for this subscription (0: inherit, "off": none).
	StallTimeout *time.Duration `yaml:"stall_timeout" json:"stall_timeout,omitempty"`
}

// Field selects one value of a JSON payload.
type Field struct {
	Path string `yaml:"path" json:"path"`
	// Name is what {field} expands to; the default is the path.
	Name string `yaml:"name" json:"name,omitempty"`
	// Signal overrides the subscription's signal template for this field.
	Signal string `yaml:"signal" json:"signal,omitempty"`
	// Type converts the value: auto (default), float, int, bool, string.
	Type string `yaml:"type" json:"type,omitempty"`
	// Optional fields may be absent without counting the payload as bad.
	Optional bool `yaml:"optional" json:"optional,omitempty"`
}

// Payload formats.
const (
	FormatJSON       = "json"
	FormatValue      = "value"
	FormatSparkplugB = "sparkplugb"
)

// NewConfig returns the defaults.
func NewConfig() *Config {
	return &Config{
		QoS:            1,
		KeepAlive:      30 * time.Second,
		ConnectTimeout: 10 * time.Second,
		Reconnect:      Backoff{Initial: time.Second, Max: 30 * time.Second},
		MaxPayload:     1 << 20,
		MaxBatch:       1000,
		Sparkplug:      SparkplugConfig{RebirthOnGap: true, RebirthInterval: 10 * time.Second},
	}
}

// BrokerList returns the configured brokers.
func (c *Config) BrokerList() []string {
	if c.Broker != "" {
		return append([]string{c.Broker}, c.Brokers...)
	}
	return c.Brokers
}

// Persistent reports whether the session is kept by the broker across connections.
func (c *Config) Persistent() bool {
	if c.CleanSession != nil {
		return !*c.CleanSession
	}
	for i := range c.Subscriptions {
		if c.subQoS(i) > 0 {
			return true
		}
	}
	return false
}

func (c *Config) subQoS(i int) byte {
	if q := c.Subscriptions[i].QoS; q != nil {
		return byte(*q)
	}
	return byte(c.QoS)
}

var brokerSchemes = map[string]bool{"tcp": true, "mqtt": true, "ssl": true, "tls": true, "mqtts": true, "ws": true, "wss": true}

// Validate implements config.Validator. Subscriptions validate themselves.
func (c *Config) Validate(r config.Report) {
	if c.Broker != "" && len(c.Brokers) > 0 {
		r.Errorf("brokers", "set broker or brokers, not both")
	}
	brokers := c.BrokerList()
	if len(brokers) == 0 {
		r.Errorf("broker", "required: a broker URL such as tcp://127.0.0.1:1883")
	}
	for i, b := range brokers {
		field := "broker"
		if c.Broker == "" {
			field = "brokers" + config.Index(i)
		}
		u, err := url.Parse(b)
		switch {
		case err != nil && config.RedactURL(b) != b:
			// The parser's message quotes the URL, credentials included.
			r.Errorf(field, "invalid URL %s", config.RedactURL(b))
		case err != nil:
			r.Errorf(field, "invalid URL: %v", err)
		case !brokerSchemes[u.Scheme]:
			r.Errorf(field, "unsupported scheme %q (use tcp, ssl, tls, mqtts, ws or wss)", u.Scheme)
		case u.Host == "":
			r.Errorf(field, "missing host in %q", config.RedactURL(b))
		}
	}
	if c.QoS < 0 || c.QoS > 2 {
		r.Errorf("qos", "must be 0, 1 or 2, got %d", c.QoS)
	}
	if c.KeepAlive < 0 || (c.KeepAlive > 0 && c.KeepAlive < time.Second) {
		r.Errorf("keepalive", "must be at least 1s (or 0 to disable), got %s", c.KeepAlive)
	}
	if c.ConnectTimeout <= 0 {
		r.Errorf("connect_timeout", "must be positive")
	}
	if c.Reconnect.Initial <= 0 {
		r.Errorf("reconnect.initial", "must be positive")
	}
	if c.Reconnect.Max < c.Reconnect.Initial {
		r.Errorf("reconnect.max", "must be at least reconnect.initial (%s)", c.Reconnect.Initial)
	}
	if c.StallTimeout < 0 {
		r.Errorf("stall_timeout", "must not be negative")
	}
	if c.MaxPayload <= 0 {
		r.Errorf("max_payload", "must be positive")
	}
	if c.MaxBatch < 1 {
		r.Errorf("max_batch", "must be at least 1")
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		r.Errorf("tls", "cert_file and key_file go together")
	}
	if c.Password.IsSet() && c.Username == "" {
		r.Errorf("username", "required when a password is set")
	}
	if len(c.Subscriptions) == 0 {
		r.Errorf("subscriptions", "required: at least one subscription")
	}
	seen := map[string]int{}
	for i, s := range c.Subscriptions {
		p := "subscriptions" + config.Index(i)
		if j, dup := seen[s.Topic]; dup && s.Topic != "" {
			r.Errorf(p+".topic", "topic %q is already subscribed by subscriptions[%d]", s.Topic, j)
		}
		seen[s.Topic] = i
	}
	// The collector subscribes only filters no other covers (overlap.go), but a shared
	// subscription covers nothing: its messages and another subscription's would each bring a copy.
	for j, b := range c.Subscriptions {
		for i, a := range c.Subscriptions[:j] {
			shared := strings.HasPrefix(a.Topic, "$share/") || strings.HasPrefix(b.Topic, "$share/")
			if shared && a.Topic != b.Topic && filtersIntersect(stripShare(a.Topic), stripShare(b.Topic)) {
				what := "shared subscription %q overlaps %q (subscriptions[%d]): a message both match would be stored twice; use one filter"
				if !strings.HasPrefix(b.Topic, "$share/") {
					what = "%q overlaps shared subscription %q (subscriptions[%d]): a message both match would be stored twice; use one filter"
				}
				r.Errorf("subscriptions"+config.Index(j)+".topic", what, b.Topic, a.Topic, i)
				break
			}
		}
	}
}

// filtersIntersect reports whether some topic matches both filters (neither a $share prefix).
func filtersIntersect(a, b string) bool {
	al, bl := strings.Split(a, "/"), strings.Split(b, "/")
	for i := 0; ; i++ {
		switch {
		case i == len(al) && i == len(bl):
			return true
		case i < len(al) && al[i] == "#": // the rest, and the parent level; not a $-topic at the first
			return i > 0 || i == len(bl) || !strings.HasPrefix(bl[0], "$")
		case i < len(bl) && bl[i] == "#":
			return i > 0 || i == len(al) || !strings.HasPrefix(al[0], "$")
		case i == len(al) || i == len(bl):
			return false
		}
		x, y := al[i], bl[i]
		switch {
		case x == "+" && y == "+":
		case x == "+":
			if i == 0 && strings.HasPrefix(y, "$") {
				return false
			}
		case y == "+":
			if i == 0 && strings.HasPrefix(x, "$") {
				return false
			}
		case x != y:
			return false
		}
	}
}

// Validate implements config.Validator for one subscription.
func (s *Subscription) Validate(r config.Report) {
	if err := validFilter(s.Topic); err != nil {
		r.Errorf("topic", "%v", err)
	}
	if s.QoS != nil && (*s.QoS < 0 || *s.QoS > 2) {
		r.Errorf("qos", "must be 0, 1 or 2, got %d", *s.QoS)
	}
	if s.StallTimeout != nil && *s.StallTimeout < 0 {
		r.Errorf("stall_timeout", "must not be negative")
	}
	if _, err := compileSubscription(s); err != nil {
		if ce, ok := err.(*compileError); ok {
			r.Errorf(ce.field, "%s", ce.msg)
		} else {
			r.Errorf("", "%v", err)
		}
	}
}

// compileError is a config problem found while compiling a subscription, with its field path.
type compileError struct{ field, msg string }

func (e *compileError) Error() string { return e.field + ": " + e.msg }

func cerr(field, format string, args ...any) error {
	return &compileError{field: field, msg: fmt.Sprintf(format, args...)}
}

// validFilter checks an MQTT topic filter (MQTT 3.1.1 section 4.7).
func validFilter(f string) error {
	if f == "" {
		return fmt.Errorf("required: an MQTT topic filter such as plant1/+/telemetry")
	}
	if strings.ContainsRune(f, 0) {
		return fmt.Errorf("topic filter contains a NUL character")
	}
	levels := strings.Split(stripShare(f), "/")
	for i, l := range levels {
		if strings.Contains(l, "#") && (l != "#" || i != len(levels)-1) {
			return fmt.Errorf("'#' must be a whole level and the last one in %q", f)
		}
		if strings.Contains(l, "+") && l != "+" {
			return fmt.Errorf("'+' must be a whole level in %q", f)
		}
	}
	return nil
}

// stripShare removes a "$share/<group>/" prefix so a shared subscription matches like its filter.
func stripShare(f string) string {
	if rest, ok := strings.CutPrefix(f, "$share/"); ok {
		if _, filter, ok := strings.Cut(rest, "/"); ok {
			return filter
		}
	}
	return f
}

// topicMatch reports whether topic matches filter (MQTT 3.1.1 section 4.7).
func topicMatch(filter, topic string) bool {
	filter = stripShare(filter)
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	for {
		fl, frest, fmore := strings.Cut(filter, "/")
		if fl == "#" {
			return true
		}
		tl, trest, tmore := strings.Cut(topic, "/")
		if fl != "+" && fl != tl {
			return false
		}
		if !fmore || !tmore {
			// "a/#" also matches "a"
			return fmore == tmore || (!tmore && frest == "#")
		}
		filter, topic = frest, trest
	}
}

// SignalPatterns lists the signal names the collector can produce as globs in which "*" stands
// for any text, dots included (each placeholder becomes "*"; runs like "*.*" fold into one "*",
// because an empty placeholder drops its dot). `gemba-agent validate` can check feature rules
// against them.
func (c *Config) SignalPatterns() []string {
	var out []string
	add := func(t string) {
		var b strings.Builder
		for {
			i := strings.IndexByte(t, '{')
			j := strings.IndexByte(t, '}')
			if i < 0 || j < i {
				b.WriteString(t)
				break
			}
			b.WriteString(t[:i])
			b.WriteByte('*')
			t = t[j+1:]
		}
		p := b.String()
		for strings.Contains(p, "*.*") {
			p = strings.ReplaceAll(p, "*.*", "*")
		}
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	for _, s := range c.Subscriptions {
		t := s.Signal
		if t == "" {
			t = defaultSignal(s.Format)
		}
		if len(s.Fields) == 0 {
			add(t)
			continue
		}
		// With a field list, {field} can only be one of the fields' names.
		for _, f := range s.Fields {
			ft := f.Signal
			if ft == "" {
				ft = t
			}
			name := f.Name
			if name == "" {
				name = f.Path
			}
			add(strings.ReplaceAll(ft, "{field}", name))
		}
	}
	return out
}
