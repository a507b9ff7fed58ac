package uplink

import (
	"net/url"
	"strings"
	"time"

	"github.com/gemba-io/gemba/config"
	"github.com/gemba-io/gemba/signal"
)

// Config is the uplink section of the agent config.
type Config struct {
	NATS NATSConfig `yaml:"nats" json:"nats"`

	// MaxInflight bounds the messages published and not yet acknowledged by JetStream (all streams
	// together). Async publishing with this window is what makes the uplink fast; the buffer, not
	// the window, holds the data, so a crash loses nothing that is in flight.
	MaxInflight int `yaml:"max_inflight" json:"max_inflight"`
	// MaxInflightBytes bounds the bytes in flight (payload). A single larger message is still sent.
	MaxInflightBytes config.ByteSize `yaml:"max_inflight_bytes" json:"max_inflight_bytes"`
	// ReadBatch is how many buffer records (chunks, one message each) one Read returns at most.
	ReadBatch int `yaml:"read_batch" json:"read_batch"`
	// PublishTimeout is how long a PubAck may take before the message counts as failed and is
	// re-sent (with the same Nats-Msg-Id) from the buffer.
	PublishTimeout time.Duration `yaml:"publish_timeout" json:"publish_timeout"`
	// HistoricalAfter marks a message historical when it is sent more than this after the agent
	// captured (received) its records, with the delay in the envelope. How old the values' source
	// times are does not count.
	HistoricalAfter time.Duration `yaml:"historical_after" json:"historical_after"`
	// BackfillShare is the share of messages given to a replayed backlog while live data is also
	// pending (0 < share <= 1). When no live data is pending the backlog gets everything.
	BackfillShare float64 `yaml:"backfill_share" json:"backfill_share"`
	// Heartbeat is the status heartbeat interval; 0 disables it.
	Heartbeat time.Duration `yaml:"heartbeat" json:"heartbeat"`
	// RestartBudget is the longest agent restart (crash to running again) that must not create
	// duplicates in the stream; the stream's duplicate window must be larger (see Validate).
	RestartBudget time.Duration `yaml:"restart_budget" json:"restart_budget"`
	// DrainTimeout bounds how long Run waits for in-flight PubAcks on shutdown.
	DrainTimeout time.Duration `yaml:"drain_timeout" json:"drain_timeout"`
}

// NATSConfig is how to reach NATS and which stream to publish into.
type NATSConfig struct {
	Servers          []string      `yaml:"servers" json:"servers"`
	Name             string        `yaml:"name" json:"name"` // client connection name; default gemba-agent/<agent>
	User             string        `yaml:"user" json:"user"`
	Password         config.Secret `yaml:"password" json:"password"`
	Token            config.Secret `yaml:"token" json:"token"`
	NkeySeedFile     string        `yaml:"nkey_seed_file" json:"nkey_seed_file"`
	CredsFile        string        `yaml:"creds_file" json:"creds_file"`
	TLS              TLSConfig     `yaml:"tls" json:"tls"`
	ReconnectWait    time.Duration `yaml:"reconnect_wait" json:"reconnect_wait"`         // first retry delay
	ReconnectMaxWait time.Duration `yaml:"reconnect_max_wait" json:"reconnect_max_wait"` // backoff cap

	Stream        string `yaml:"stream" json:"stream"`
	Domain        string `yaml:"domain" json:"domain"` // JetStream domain (e.g. when connected to a leaf node)
	CreateStream  bool   `yaml:"create_stream" json:"create_stream"`
	SubjectPrefix string `yaml:"subject_prefix" json:"subject_prefix"`

	// Stream settings, applied only with create_stream.
	Replicas        int             `yaml:"replicas" json:"replicas"`
	Storage         string          `yaml:"storage" json:"storage"` // file | memory
	MaxAge          time.Duration   `yaml:"max_age" json:"max_age"`
	MaxBytes        config.ByteSize `yaml:"max_bytes" json:"max_bytes"` // 0: unlimited
	Discard         string          `yaml:"discard" json:"discard"`     // new | old
	DuplicateWindow time.Duration   `yaml:"duplicate_window" json:"duplicate_window"`
}

// TLSConfig enables TLS: a CA to verify the server, and a client certificate for mTLS.
type TLSConfig struct {
	CAFile     string `yaml:"ca_file" json:"ca_file"`
	CertFile   string `yaml:"cert_file" json:"cert_file"`
	KeyFile    string `yaml:"key_file" json:"key_file"`
	ServerName string `yaml:"server_name" json:"server_name"`
}

func (t TLSConfig) enabled() bool {
	return t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.ServerName != ""
}

// DefaultConfig returns the defaults. Window and batch sizes come from the benchmarks in
// bench_test.go (see docs/BENCHMARKS.md): 256 messages of ~10 KiB keep a LAN or WAN link busy
// without holding much memory.
func DefaultConfig() Config {
	return Config{
		NATS: NATSConfig{
			Servers:          []string{"nats://127.0.0.1:4222"},
			ReconnectWait:    250 * time.Millisecond,
			ReconnectMaxWait: 10 * time.Second,
			Stream:           "GEMBA",
			SubjectPrefix:    "gemba",
			Replicas:         1,
			Storage:          "file",
			MaxAge:           7 * 24 * time.Hour,
			Discard:          "new",
			DuplicateWindow:  20 * time.Minute,
		},
		MaxInflight:      256,
		MaxInflightBytes: 8 << 20,
		ReadBatch:        64,
		PublishTimeout:   5 * time.Second,
		HistoricalAfter:  30 * time.Second,
		BackfillShare:    0.25,
		Heartbeat:        10 * time.Second,
		RestartBudget:    10 * time.Minute,
		DrainTimeout:     5 * time.Second,
	}
}

// Validate implements config.Validator.
func (c *Config) Validate(r config.Report) {
	if c.MaxInflight < 1 || c.MaxInflight > 65536 {
		r.Errorf("max_inflight", "must be between 1 and 65536, got %d", c.MaxInflight)
	}
	if c.MaxInflightBytes < 1<<10 {
		r.Errorf("max_inflight_bytes", "must be at least 1KiB, got %s", c.MaxInflightBytes)
	}
	if c.ReadBatch < 1 || c.ReadBatch > 4096 {
		r.Errorf("read_batch", "must be between 1 and 4096, got %d", c.ReadBatch)
	}
	if c.PublishTimeout <= 0 {
		r.Errorf("publish_timeout", "must be positive, got %s", c.PublishTimeout)
	}
	if c.HistoricalAfter <= 0 {
		r.Errorf("historical_after", "must be positive, got %s", c.HistoricalAfter)
	}
	if !(c.BackfillShare > 0 && c.BackfillShare <= 1) {
		r.Errorf("backfill_share", "must be in (0, 1], got %g", c.BackfillShare)
	}
	if c.Heartbeat < 0 {
		r.Errorf("heartbeat", "must be 0 (off) or positive, got %s", c.Heartbeat)
	}
	if c.RestartBudget <= 0 {
		r.Errorf("restart_budget", "must be positive, got %s", c.RestartBudget)
	}
	if c.DrainTimeout <= 0 {
		r.Errorf("drain_timeout", "must be positive, got %s", c.DrainTimeout)
	}
	n := &c.NATS
	nr := r.Sub("nats")
	if n.CreateStream {
		// The dedup rule: a message published just before a crash (stored, PubAck lost) is
		// published again after the restart and after one more publish timeout at most.
		if need := c.RestartBudget + c.PublishTimeout; n.DuplicateWindow <= need {
			nr.Errorf("duplicate_window", "%s must exceed restart_budget + publish_timeout (%s), or a replay after a restart can store duplicates", n.DuplicateWindow, need)
		}
	}
	n.validate(nr)
}

func (n *NATSConfig) validate(r config.Report) {
	if len(n.Servers) == 0 {
		r.Errorf("servers", "at least one server is needed (e.g. nats://hub:4222)")
	}
	for i, s := range n.Servers {
		u, err := url.Parse(s)
		if err != nil || u.Host == "" {
			r.Errorf("servers"+config.Index(i), "%q is not a server URL (want nats://host:port)", redactURL(s))
			continue
		}
		switch u.Scheme {
		case "nats", "tls", "ws", "wss":
		default:
			r.Errorf("servers"+config.Index(i), "scheme %q unsupported (want nats, tls, ws or wss)", u.Scheme)
		}
	}
	auth := 0
	for _, set := range []bool{n.User != "", n.Token.IsSet(), n.NkeySeedFile != "", n.CredsFile != ""} {
		if set {
			auth++
		}
	}
	if auth > 1 {
		r.Errorf("", "set only one of user/password, token, nkey_seed_file and creds_file")
	}
	if n.User != "" && !n.Password.IsSet() {
		r.Errorf("password", "user %q needs a password", n.User)
	}
	if n.User == "" && n.Password.IsSet() {
		r.Errorf("user", "password is set but user is empty")
	}
	checkFile(r, "nkey_seed_file", n.NkeySeedFile)
	checkFile(r, "creds_file", n.CredsFile)
	tr := r.Sub("tls")
	checkFile(tr, "ca_file", n.TLS.CAFile)
	checkFile(tr, "cert_file", n.TLS.CertFile)
	checkFile(tr, "key_file", n.TLS.KeyFile)
	if (n.TLS.CertFile == "") != (n.TLS.KeyFile == "") {
		tr.Errorf("", "cert_file and key_file go together (client certificate for mTLS)")
	}
	if n.ReconnectWait <= 0 {
		r.Errorf("reconnect_wait", "must be positive, got %s", n.ReconnectWait)
	}
	if n.ReconnectMaxWait < n.ReconnectWait {
		r.Errorf("reconnect_max_wait", "%s is below reconnect_wait (%s)", n.ReconnectMaxWait, n.ReconnectWait)
	}
	if n.Stream == "" || strings.ContainsAny(n.Stream, ".*> \t\r\n/\\") {
		r.Errorf("stream", "%q is not a valid stream name (no spaces, '.', '*', '>', '/' or '\\')", n.Stream)
	}
	if n.Domain != "" {
		if err := signal.CheckToken(n.Domain); err != nil {
			r.Errorf("domain", "%v", err)
		}
	}
	if n.SubjectPrefix == "" {
		r.Errorf("subject_prefix", "must not be empty")
	}
	for tok := range strings.SplitSeq(n.SubjectPrefix, ".") {
		if n.SubjectPrefix == "" {
			break
		}
		if err := signal.CheckToken(tok); err != nil {
			r.Errorf("subject_prefix", "%v", err)
			break
		}
	}
	if n.Replicas < 1 || n.Replicas > 5 {
		r.Errorf("replicas", "must be between 1 and 5, got %d", n.Replicas)
	}
	if n.Storage != "file" && n.Storage != "memory" {
		r.Errorf("storage", "%q unknown (want file or memory)", n.Storage)
	}
	if n.Discard != "new" && n.Discard != "old" {
		r.Errorf("discard", "%q unknown (want new or old; new keeps the backlog in the agent when the stream is full)", n.Discard)
	}
	if n.MaxAge < 0 {
		r.Errorf("max_age", "must not be negative")
	}
	if n.MaxBytes < 0 {
		r.Errorf("max_bytes", "must not be negative")
	}
	if n.DuplicateWindow <= 0 {
		r.Errorf("duplicate_window", "must be positive, got %s", n.DuplicateWindow)
	}
	if n.MaxAge > 0 && n.DuplicateWindow > n.MaxAge {
		r.Errorf("duplicate_window", "%s exceeds max_age %s (JetStream refuses this)", n.DuplicateWindow, n.MaxAge)
	}
}

// checkFile reports a file the uplink will need but cannot read, at validate time rather than
// at the first connect.
func checkFile(r config.Report, field, path string) { r.CheckFile(field, path) }

// redactURL hides credentials embedded in a server URL (one function for logs and configs).
func redactURL(s string) string { return config.RedactURL(s) }

func (n *NATSConfig) subjectFor(id Identity, s signal.Stream) string {
	return signal.Subject(n.SubjectPrefix, id.Site, id.Agent, s)
}

func (n *NATSConfig) describe() string {
	srv := make([]string, len(n.Servers))
	for i, s := range n.Servers {
		srv[i] = redactURL(s)
	}
	return strings.Join(srv, ",")
}
