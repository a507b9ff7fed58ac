package opcua

import (
	"cmp"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/gopcua/opcua/ua"
	"go.yaml.in/yaml/v3"

	"github.com/gemba-io/gemba/config"
)

// Config is the YAML of one OPC UA collector. Values left empty on a group or node inherit from
// the level above (collector → group → node).
type Config struct {
	Endpoint    string      `yaml:"endpoint"`
	Security    Security    `yaml:"security"`
	Certificate Certificate `yaml:"certificate"`
	Trust       Trust       `yaml:"trust"`
	Auth        Auth        `yaml:"auth"`

	// Defaults for groups and nodes.
	Mode               string        `yaml:"mode"` // subscribe | poll
	PublishingInterval time.Duration `yaml:"publishing_interval"`
	PollInterval       time.Duration `yaml:"poll_interval"`
	// Sampling unset means the publishing interval; 0 asks for the fastest the server can
	// (exception-based on many servers).
	Sampling      *time.Duration `yaml:"sampling"`
	QueueSize     uint32         `yaml:"queue_size"`
	DiscardOldest *bool          `yaml:"discard_oldest"`
	Trigger       string         `yaml:"trigger"`
	MaxArray      int            `yaml:"max_array"`

	// Nodes outside any group form the group "default".
	Nodes  []Node  `yaml:"nodes"`
	Groups []Group `yaml:"groups"`

	Timeouts  Timeouts  `yaml:"timeouts"`
	Reconnect Reconnect `yaml:"reconnect"`
	// BatchSize caps nodes per CreateMonitoredItems/Read call; 0 uses the server's OperationLimits
	// (or 1000 when the server does not say).
	BatchSize int `yaml:"batch_size"`
}

// Security selects the endpoint.
type Security struct {
	// Policy is None, Basic128Rsa15, Basic256, Basic256Sha256, Aes128_Sha256_RsaOaep,
	// Aes256_Sha256_RsaPss, or auto (the strongest the server offers).
	Policy string `yaml:"policy"`
	// Mode is None, Sign, SignAndEncrypt or auto.
	Mode string `yaml:"mode"`
}

// Certificate is the client's application instance certificate. Without files, one is generated
// on first start and kept in the collector's data directory, so the server trusts it once.
type Certificate struct {
	CertFile       string `yaml:"cert_file"`
	KeyFile        string `yaml:"key_file"`
	ApplicationURI string `yaml:"application_uri"`
}

// Trust decides which server certificates are accepted on secured endpoints.
type Trust struct {
	// Dir holds trusted server certificates (DER or PEM, any file name).
	Dir string `yaml:"dir"`
	// Thumbprints are SHA-1 thumbprints (hex, colons allowed) of trusted server certificates.
	Thumbprints []string `yaml:"thumbprints"`
	// TrustOnFirstUse accepts the first certificate seen and stores it in the data directory.
	TrustOnFirstUse bool `yaml:"trust_on_first_use"`
}

// Auth is the user identity: anonymous (nothing set), username/password, or an X.509 user cert.
type Auth struct {
	Username string        `yaml:"username"`
	Password config.Secret `yaml:"password"`
	CertFile string        `yaml:"cert_file"`
	KeyFile  string        `yaml:"key_file"`
}

// Timeouts bound network operations.
type Timeouts struct {
	Connect time.Duration `yaml:"connect"`
	Request time.Duration `yaml:"request"`
	Session time.Duration `yaml:"session"`
}

// Reconnect tunes self-healing.
type Reconnect struct {
	MinBackoff time.Duration `yaml:"min_backoff"`
	MaxBackoff time.Duration `yaml:"max_backoff"`
	// Watchdog: after this long without any notification the server is probed; a dead channel,
	// or a server that stopped publishing while its clock still ticks, rebuilds the session.
	Watchdog time.Duration `yaml:"watchdog"`
	// QuarantineRetry is how often nodes the server rejected are tried again.
	QuarantineRetry time.Duration `yaml:"quarantine_retry"`
}

// Group is a set of nodes sharing one subscription (or one poll loop).
type Group struct {
	Name               string         `yaml:"name"`
	Mode               string         `yaml:"mode"`
	PublishingInterval time.Duration  `yaml:"publishing_interval"`
	PollInterval       time.Duration  `yaml:"poll_interval"`
	Sampling           *time.Duration `yaml:"sampling"`
	QueueSize          uint32         `yaml:"queue_size"`
	DiscardOldest      *bool          `yaml:"discard_oldest"`
	Trigger            string         `yaml:"trigger"`
	MaxArray           int            `yaml:"max_array"`
	Nodes              []Node         `yaml:"nodes"`
}

// Node is one variable to collect.
type Node struct {
	// Node is the id: ns=<index>;{i,s,g,b}=<id> or nsu=<namespace uri>;{i,s,g,b}=<id>.
	Node   string `yaml:"node"`
	Signal string `yaml:"signal"`
	// Type is informational (browse writes it); the value's own type is used.
	Type          string         `yaml:"type"`
	Sampling      *time.Duration `yaml:"sampling"`
	QueueSize     uint32         `yaml:"queue_size"`
	DiscardOldest *bool          `yaml:"discard_oldest"`
	Deadband      Deadband       `yaml:"deadband"`
	Trigger       string         `yaml:"trigger"`
	MaxArray      int            `yaml:"max_array"`
}

// Deadband filters small changes. In YAML a plain number is an absolute deadband; the mapping
// form {type: absolute|percent, value: X} selects the kind. Percent needs the node's EURange on
// the server.
type Deadband struct {
	Type  string  `yaml:"type"`
	Value float64 `yaml:"value"`
}

// UnmarshalConfig accepts "0.2" as well as {type, value}.
func (d *Deadband) UnmarshalConfig(dec *config.Decoder, n *yaml.Node, path string) {
	if n.Kind == yaml.MappingNode {
		var m struct {
			Type  string  `yaml:"type"`
			Value float64 `yaml:"value"`
		}
		dec.DecodeMapping(n, path, &m)
		d.Type, d.Value = m.Type, m.Value
		if d.Type == "" {
			d.Type = "absolute"
		}
		if d.Type != "absolute" && d.Type != "percent" {
			dec.Errorf(n, config.Join(path, "type"), "unknown deadband type %q (want absolute or percent)", d.Type)
		}
		if d.Value < 0 || (d.Type == "percent" && d.Value > 100) {
			dec.Errorf(n, config.Join(path, "value"), "deadband %g out of range", d.Value)
		}
		return
	}
	s, ok := dec.Scalar(n, path)
	if !ok || s == "" {
		return
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 || math.IsNaN(f) || math.IsInf(f, 0) { // NaN filters nothing, Inf everything
		dec.Errorf(n, path, "expected a non-negative number or {type: absolute|percent, value: X}, got %q", s)
		return
	}
	d.Type, d.Value = "absolute", f
}

// MarshalYAML renders a deadband the short way when it is absolute (browse output).
func (d Deadband) MarshalYAML() (any, error) {
	if d.Type == "" || d.Type == "absolute" {
		return d.Value, nil
	}
	return map[string]any{"type": d.Type, "value": d.Value}, nil
}

// Modes.
const (
	ModeSubscribe = "subscribe"
	ModePoll      = "poll"
)

// NewConfig returns the defaults.
func NewConfig() *Config {
	t := true
	return &Config{
		Security:           Security{Policy: "auto", Mode: "auto"},
		Mode:               ModeSubscribe,
		PublishingInterval: time.Second,
		PollInterval:       time.Second,
		QueueSize:          10,
		DiscardOldest:      &t,
		Trigger:            "status_value",
		MaxArray:           64,
		Timeouts:           Timeouts{Connect: 10 * time.Second, Request: 10 * time.Second, Session: 2 * time.Minute},
		Reconnect: Reconnect{
			MinBackoff: 500 * time.Millisecond, MaxBackoff: 30 * time.Second,
			Watchdog: 30 * time.Second, QuarantineRetry: time.Minute,
		},
	}
}

var policies = map[string]string{
	"None":                  ua.SecurityPolicyURINone,
	"Basic128Rsa15":         ua.SecurityPolicyURIBasic128Rsa15,
	"Basic256":              ua.SecurityPolicyURIBasic256,
	"Basic256Sha256":        ua.SecurityPolicyURIBasic256Sha256,
	"Aes128_Sha256_RsaOaep": ua.SecurityPolicyURIAes128Sha256RsaOaep,
	"Aes256_Sha256_RsaPss":  ua.SecurityPolicyURIAes256Sha256RsaPss,
}

// policyStrength orders policies for "auto": higher is stronger. Deprecated ones rank lowest.
var policyStrength = map[string]int{
	ua.SecurityPolicyURINone:                0,
	ua.SecurityPolicyURIBasic128Rsa15:       1,
	ua.SecurityPolicyURIBasic256:            2,
	ua.SecurityPolicyURIAes128Sha256RsaOaep: 3,
	ua.SecurityPolicyURIBasic256Sha256:      4,
	ua.SecurityPolicyURIAes256Sha256RsaPss:  5,
}

var securityModes = map[string]ua.MessageSecurityMode{
	"None": ua.MessageSecurityModeNone, "Sign": ua.MessageSecurityModeSign,
	"SignAndEncrypt": ua.MessageSecurityModeSignAndEncrypt,
}

var triggers = map[string]ua.DataChangeTrigger{
	"status": ua.DataChangeTriggerStatus, "status_value": ua.DataChangeTriggerStatusValue,
	"status_value_timestamp": ua.DataChangeTriggerStatusValueTimestamp,
}

// Validate implements config.Validator.
func (c *Config) Validate(r config.Report) {
	switch {
	case c.Endpoint == "":
		r.Errorf("endpoint", "required, e.g. opc.tcp://10.0.0.5:4840")
	case !strings.HasPrefix(c.Endpoint, "opc.tcp://"):
		r.Errorf("endpoint", "must start with opc.tcp:// (got %q)", c.Endpoint)
	}
	if _, ok := policies[c.Security.Policy]; !ok && c.Security.Policy != "auto" {
		r.Errorf("security.policy", "unknown policy %q (one of auto, %s)", c.Security.Policy, strings.Join(policyNames(), ", "))
	}
	if _, ok := securityModes[c.Security.Mode]; !ok && c.Security.Mode != "auto" {
		r.Errorf("security.mode", "unknown mode %q (one of auto, None, Sign, SignAndEncrypt)", c.Security.Mode)
	}
	if c.Security.Policy == "None" && c.Security.Mode != "None" && c.Security.Mode != "auto" {
		r.Errorf("security.mode", "policy None only works with mode None")
	}
	if (c.Certificate.CertFile == "") != (c.Certificate.KeyFile == "") {
		r.Errorf("certificate", "cert_file and key_file go together")
	}
	for i, tp := range c.Trust.Thumbprints {
		if _, err := normThumbprint(tp); err != nil {
			r.Errorf("trust.thumbprints"+config.Index(i), "%v", err)
		}
	}
	if c.Auth.Password.IsSet() && c.Auth.Username == "" {
		r.Errorf("auth.username", "required when a password is set")
	}
	if (c.Auth.CertFile == "") != (c.Auth.KeyFile == "") {
		r.Errorf("auth", "cert_file and key_file go together")
	}
	if c.Auth.CertFile != "" && c.Auth.Username != "" {
		r.Errorf("auth", "use either username/password or a user certificate, not both")
	}
	c.validateSettings(r, "", c.Mode, c.PublishingInterval, c.PollInterval, c.Trigger, c.MaxArray)
	if c.Sampling != nil && *c.Sampling < 0 {
		r.Errorf("sampling", "must not be negative (leave it out to sample at the publishing interval)")
	}
	if c.MaxArray < 1 {
		r.Errorf("max_array", "must be at least 1")
	}
	if c.Timeouts.Connect <= 0 || c.Timeouts.Request <= 0 || c.Timeouts.Session <= 0 {
		r.Errorf("timeouts", "connect, request and session must be positive")
	}
	rc := c.Reconnect
	if rc.MinBackoff <= 0 || rc.MaxBackoff < rc.MinBackoff {
		r.Errorf("reconnect", "need 0 < min_backoff <= max_backoff")
	}
	if rc.Watchdog < 0 || rc.QuarantineRetry <= 0 {
		r.Errorf("reconnect", "watchdog must be >= 0 (0 disables) and quarantine_retry positive")
	}
	if c.BatchSize < 0 {
		r.Errorf("batch_size", "must be >= 0")
	}
	if len(c.Nodes) == 0 && len(c.Groups) == 0 {
		r.Errorf("nodes", "no nodes configured (add nodes: or groups:; `gemba-agent browse` prints them)")
	}
	signals := map[string]string{}
	nodeIDs := map[string]string{} // canonical node id → path of its first entry
	groupNames := map[string]bool{}
	checkNodes := func(prefix, mode string, nodes []Node) {
		for i, n := range nodes {
			p := prefix + "nodes" + config.Index(i)
			if mode == ModePoll && n.Deadband.Type == "percent" {
				r.Errorf(p+".deadband", "a percent deadband needs subscribe mode (the server computes it from the node's EURange); use an absolute one")
			}
			if n.Node == "" {
				r.Errorf(p+".node", "required")
			} else if ref, err := parseNodeRef(n.Node); err != nil {
				r.Errorf(p+".node", "%v", err)
			} else if prev, dup := nodeIDs[ref.key()]; dup {
				// One node twice would be subscribed twice and stored under two signals (or
				// the second silently wins): name both places so the operator can pick one.
				r.Errorf(p+".node", "node %s is listed twice: also at %s (%s)", n.Node, where(r, prev+".node"), r.Path(prev))
			} else {
				nodeIDs[ref.key()] = p
			}
			if n.Signal == "" {
				r.Errorf(p+".signal", "required")
			} else if prev, dup := signals[n.Signal]; dup {
				r.Errorf(p+".signal", "signal %q is already used by %s", n.Signal, prev)
			} else {
				signals[n.Signal] = p
			}
			if n.Trigger != "" {
				if _, ok := triggers[n.Trigger]; !ok {
					r.Errorf(p+".trigger", "unknown trigger %q (status, status_value, status_value_timestamp)", n.Trigger)
				}
			}
			if (n.Sampling != nil && *n.Sampling < 0) || n.MaxArray < 0 {
				r.Errorf(p, "sampling and max_array must not be negative")
			}
		}
	}
	checkNodes("", c.Mode, c.Nodes)
	for i, g := range c.Groups {
		p := "groups" + config.Index(i)
		if g.Name == "" {
			r.Errorf(p+".name", "required")
		} else if groupNames[g.Name] || g.Name == defaultGroup {
			r.Errorf(p+".name", "duplicate group name %q", g.Name)
		}
		groupNames[g.Name] = true
		c.validateSettings(r, p+".", g.Mode, g.PublishingInterval, g.PollInterval, g.Trigger, g.MaxArray)
		if g.Sampling != nil && *g.Sampling < 0 {
			r.Errorf(p+".sampling", "must not be negative")
		}
		if len(g.Nodes) == 0 {
			r.Errorf(p+".nodes", "a group needs nodes")
		}
		gmode := g.Mode
		if gmode == "" {
			gmode = c.Mode
		}
		checkNodes(p+".", gmode, g.Nodes)
	}
}

func (c *Config) validateSettings(r config.Report, p, mode string, pub, poll time.Duration, trigger string, maxArray int) {
	if mode != "" && mode != ModeSubscribe && mode != ModePoll {
		r.Errorf(p+"mode", "unknown mode %q (subscribe or poll)", mode)
	}
	if pub < 0 || poll < 0 || (p == "" && (pub == 0 || poll == 0)) {
		r.Errorf(p+"publishing_interval", "publishing_interval and poll_interval must be positive")
	}
	if trigger != "" {
		if _, ok := triggers[trigger]; !ok {
			r.Errorf(p+"trigger", "unknown trigger %q (status, status_value, status_value_timestamp)", trigger)
		}
	}
	if maxArray < 0 {
		r.Errorf(p+"max_array", "must not be negative")
	}
}

func policyNames() []string {
	return []string{"None", "Basic128Rsa15", "Basic256", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"}
}

const defaultGroup = "default"

// groupSpec is a group with every inherited setting resolved.
type groupSpec struct {
	Name               string
	Mode               string
	PublishingInterval time.Duration
	PollInterval       time.Duration
	Nodes              []nodeSpec
}

// nodeSpec is a node with its settings resolved.
type nodeSpec struct {
	Ref           nodeRef
	Raw           string
	Signal        string
	Sampling      time.Duration // < 0: the publishing interval; 0: as fast as the server can
	QueueSize     uint32
	DiscardOldest bool
	Deadband      Deadband
	Trigger       ua.DataChangeTrigger
	MaxArray      int
}

// groups resolves inheritance. The config must be valid.
func (c *Config) groups() []groupSpec {
	var out []groupSpec
	if len(c.Nodes) > 0 {
		out = append(out, c.resolve(Group{Name: defaultGroup, Nodes: c.Nodes}))
	}
	for _, g := range c.Groups {
		out = append(out, c.resolve(g))
	}
	return out
}

func (c *Config) resolve(g Group) groupSpec {
	gs := groupSpec{
		Name:               g.Name,
		Mode:               cmp.Or(g.Mode, c.Mode),
		PublishingInterval: cmp.Or(g.PublishingInterval, c.PublishingInterval),
		PollInterval:       cmp.Or(g.PollInterval, c.PollInterval),
	}
	for _, n := range g.Nodes {
		ref, _ := parseNodeRef(n.Node)
		ns := nodeSpec{
			Ref: ref, Raw: n.Node, Signal: n.Signal,
			Sampling:  -1,
			QueueSize: cmp.Or(n.QueueSize, g.QueueSize, c.QueueSize, 1), // 1 where every level says 0
			Deadband:  n.Deadband,
			Trigger:   triggers[cmp.Or(n.Trigger, g.Trigger, c.Trigger, "status_value")],
			MaxArray:  cmp.Or(n.MaxArray, g.MaxArray, c.MaxArray, 64),
		}
		for _, d := range []*time.Duration{n.Sampling, g.Sampling, c.Sampling} {
			if d != nil {
				ns.Sampling = *d
				break
			}
		}
		ns.DiscardOldest = true
		for _, b := range []*bool{n.DiscardOldest, g.DiscardOldest, c.DiscardOldest} {
			if b != nil {
				ns.DiscardOldest = *b
				break
			}
		}
		gs.Nodes = append(gs.Nodes, ns)
	}
	return gs
}

// policyURI maps a configured policy name to its URI ("" for auto).
func policyURI(name string) string { return policies[name] }

func policyName(uri string) string {
	return strings.TrimPrefix(uri, ua.SecurityPolicyURIPrefix)
}

func modeName(m ua.MessageSecurityMode) string {
	for k, v := range securityModes {
		if v == m {
			return k
		}
	}
	return fmt.Sprintf("mode(%d)", m)
}

// where names the line of an earlier entry, or its path when the line is unknown.
func where(r config.Report, path string) string {
	if w := r.Where(path); w != "" {
		return w
	}
	return r.Path(path)
}
