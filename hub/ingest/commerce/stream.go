package commerce

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/config"
	"github.com/gemba-io/gemba/internal/kvretry"
	"github.com/gemba-io/gemba/signal"
)

// Config is the commerce section of the hub config: the stream, the consumer every hub replica shares,
// the HTTP endpoint and the CSV importer.
type Config struct {
	// Prefix is the first subject token(s): events are on <prefix>.commerce.sales.<channel> and <prefix>.commerce.inventory.
	Prefix string `yaml:"prefix" json:"prefix"`
	// Channels lists the sales channels. The stream then captures exactly their subjects and the
	// inventory subject: the agents' stream captures <prefix>.*.*.samples|features|status, which
	// overlaps <prefix>.commerce.> (JetStream refuses overlapping streams) whenever both share the
	// prefix. Empty: the stream captures <prefix>.commerce.> (a prefix no other stream uses).
	Channels []string `yaml:"channels" json:"channels"`
	// Stream is the JetStream stream holding the commerce subjects.
	Stream   string `yaml:"stream" json:"stream"`
	Replicas int    `yaml:"replicas" json:"replicas"`
	// DuplicateWindow is JetStream's Nats-Msg-Id window; copies arriving later are caught by the dedup markers.
	DuplicateWindow time.Duration `yaml:"duplicate_window" json:"duplicate_window"`
	// MaxAge is how long events stay in the stream (a new hub replica or a rebuilt state can replay them).
	MaxAge time.Duration `yaml:"max_age" json:"max_age"`
	// MaxBytes bounds the stream (-1: no bound); the oldest events go first.
	MaxBytes int64 `yaml:"max_bytes" json:"max_bytes"`

	// Consumer is the durable pull consumer's name, shared by every hub replica.
	Consumer string `yaml:"consumer" json:"consumer"`
	// AckWait is how long a fetched event may take before the server redelivers it.
	AckWait time.Duration `yaml:"ack_wait" json:"ack_wait"`
	// RetryDelay is how long an event whose Sink failed waits before its redelivery.
	RetryDelay time.Duration `yaml:"retry_delay" json:"retry_delay"`
	// Batch is how many events one fetch takes (and one dedup round trip claims).
	Batch int `yaml:"batch" json:"batch"`
	// MaxAckPending bounds the events handed out and not yet acknowledged, over all replicas.
	MaxAckPending int `yaml:"max_ack_pending" json:"max_ack_pending"`
	// PublishTimeout bounds the wait for a PubAck (HTTP and CSV publishing).
	PublishTimeout time.Duration `yaml:"publish_timeout" json:"publish_timeout"`

	HTTP HTTPConfig `yaml:"http" json:"http"`
	// MaxImportBytes bounds a CSV file (it is read whole: without a snapshot_id column its hash names the snapshot).
	MaxImportBytes int64 `yaml:"max_import_bytes" json:"max_import_bytes"`
}

// HTTPConfig configures the endpoint for systems that cannot publish to NATS.
type HTTPConfig struct {
	// Token is the bearer token clients send (Authorization: Bearer <token>). Required.
	Token config.Secret `yaml:"token" json:"token"`
	// MaxBodyBytes bounds a request body (413 beyond).
	MaxBodyBytes int64 `yaml:"max_body_bytes" json:"max_body_bytes"`
	// MaxEvents bounds the events of one request (400 beyond).
	MaxEvents int `yaml:"max_events" json:"max_events"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Prefix:          "gemba",
		Stream:          "COMMERCE",
		Replicas:        1,
		DuplicateWindow: 2 * time.Hour,
		MaxAge:          30 * 24 * time.Hour,
		MaxBytes:        -1,
		Consumer:        "gemba-hub-commerce",
		AckWait:         30 * time.Second,
		RetryDelay:      5 * time.Second,
		Batch:           100,
		MaxAckPending:   1000,
		PublishTimeout:  10 * time.Second,
		HTTP:            HTTPConfig{MaxBodyBytes: 1 << 20, MaxEvents: 1000},
		MaxImportBytes:  256 << 20,
	}
}

var nameRe = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

func (c *Config) problems(requireToken bool) [][2]string {
	var ps [][2]string
	add := func(field, format string, args ...any) {
		ps = append(ps, [2]string{field, fmt.Sprintf(format, args...)})
	}
	if c.Prefix == "" {
		add("prefix", "must not be empty")
	}
	for i, tok := range splitSubject(c.Prefix) {
		if err := signal.CheckToken(tok); err != nil {
			add("prefix", "token %d: %v", i+1, err)
			break
		}
	}
	seen := map[string]bool{}
	for i, ch := range c.Channels {
		field := fmt.Sprintf("channels[%d]", i)
		switch {
		case CheckToken(ch) != nil:
			add(field, "%v", CheckToken(ch))
		case ch == "samples" || ch == "features" || ch == "status":
			add(field, "%q would overlap the agents' subjects <prefix>.*.*.%s", ch, ch)
		case seen[ch]:
			add(field, "%q listed twice", ch)
		}
		seen[ch] = true
	}
	if !nameRe.MatchString(c.Stream) {
		add("stream", "must be letters, digits, '-' or '_', got %q", c.Stream)
	}
	if !nameRe.MatchString(c.Consumer) {
		add("consumer", "must be letters, digits, '-' or '_', got %q", c.Consumer)
	}
	if c.Replicas != 0 && c.Replicas != 1 && c.Replicas != 3 && c.Replicas != 5 {
		add("replicas", "must be 1, 3 or 5, got %d (0: nats.replicas)", c.Replicas)
	}
	if c.DuplicateWindow < time.Second {
		add("duplicate_window", "must be at least 1s, got %s", c.DuplicateWindow)
	}
	if c.MaxAge != 0 && c.MaxAge < c.DuplicateWindow {
		add("max_age", "must be 0 (no limit) or at least duplicate_window (%s), got %s", c.DuplicateWindow, c.MaxAge)
	}
	if c.MaxBytes == 0 || c.MaxBytes < -1 {
		add("max_bytes", "must be -1 (no limit) or positive, got %d", c.MaxBytes)
	}
	if c.AckWait < time.Second {
		add("ack_wait", "must be at least 1s, got %s", c.AckWait)
	}
	if c.RetryDelay <= 0 {
		add("retry_delay", "must be positive, got %s", c.RetryDelay)
	}
	if c.Batch < 1 || c.Batch > 1000 {
		add("batch", "must be between 1 and 1000, got %d", c.Batch)
	}
	if c.MaxAckPending < c.Batch {
		add("max_ack_pending", "must be at least batch (%d), got %d", c.Batch, c.MaxAckPending)
	}
	if c.PublishTimeout <= 0 {
		add("publish_timeout", "must be positive, got %s", c.PublishTimeout)
	}
	if requireToken && !c.HTTP.Token.IsSet() {
		add("http.token", "must be set (the endpoint refuses every request without it)")
	}
	if c.HTTP.MaxBodyBytes < 1024 {
		add("http.max_body_bytes", "must be at least 1024, got %d", c.HTTP.MaxBodyBytes)
	}
	if c.HTTP.MaxEvents < 1 {
		add("http.max_events", "must be positive, got %d", c.HTTP.MaxEvents)
	}
	if c.MaxImportBytes < 1024 {
		add("max_import_bytes", "must be at least 1024, got %d", c.MaxImportBytes)
	}
	return ps
}

// Validate implements config.Validator. The HTTP token is not required here: a hub without the
// endpoint needs none; Handler refuses to start without it.
func (c *Config) Validate(r config.Report) {
	for _, p := range c.problems(false) {
		r.Errorf(p[0], "%s", p[1])
	}
}

func (c *Config) check(requireToken bool) error {
	ps := c.problems(requireToken)
	if len(ps) == 0 {
		return nil
	}
	var errs []error
	for _, p := range ps {
		errs = append(errs, fmt.Errorf("commerce config: %s: %s", p[0], p[1]))
	}
	return errors.Join(errs...)
}

func splitSubject(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == '.' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return out
}

// SalesSubject is where sales of a channel are published.
func SalesSubject(prefix, channel string) string { return prefix + ".commerce.sales." + channel }

// InventorySubject is where inventory snapshot rows are published.
func InventorySubject(prefix string) string { return prefix + ".commerce.inventory" }

// EnsureStream creates the COMMERCE stream or updates it to cfg: the hub's, when it starts.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg Config) (jetstream.Stream, error) {
	if err := cfg.check(false); err != nil {
		return nil, err
	}
	st, err := kvretry.Stream(ctx, js, jetstream.StreamConfig{
		Name:        cfg.Stream,
		Description: "gemba-hub: commerce inputs (sales events, inventory snapshot rows)",
		Subjects:    cfg.subjects(),
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		Duplicates:  cfg.DuplicateWindow,
		MaxAge:      cfg.MaxAge,
		MaxBytes:    cfg.MaxBytes,
		Discard:     jetstream.DiscardOld,
	})
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeSubjectOverlap && len(cfg.Channels) == 0 {
		return nil, fmt.Errorf("commerce stream %s: %s.commerce.> overlaps another stream's subjects (the agents' "+
			"stream captures %s.*.*.samples|features|status): list the sales channels in commerce.channels: %w",
			cfg.Stream, cfg.Prefix, cfg.Prefix, err)
	}
	if err != nil {
		return nil, fmt.Errorf("commerce stream %s: %w", cfg.Stream, err)
	}
	return st, nil
}

// BindStream opens the COMMERCE stream as it is, for a publisher outside the hub (gemba-hub import
// inventory): it never creates the stream nor changes its settings, which are the hub's (and may be
// a newer release's). A stream that is not there, or that does not take one of the subjects the
// caller publishes to (another release's subjects, a prefix that is not the hub's), is an error
// naming it.
func BindStream(ctx context.Context, js jetstream.JetStream, cfg Config, publishTo ...string) (jetstream.Stream, error) {
	if err := cfg.check(false); err != nil {
		return nil, err
	}
	var st jetstream.Stream
	err := kvretry.Attempts(ctx, kvretry.SetupAttempt, func(ctx context.Context) (err error) {
		st, err = js.Stream(ctx, cfg.Stream)
		return err
	})
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("commerce stream %s: not found on these servers: the hub has not run against them yet "+
			"(it creates the stream), or commerce.stream names another stream: %w", cfg.Stream, err)
	}
	if err != nil {
		return nil, fmt.Errorf("commerce stream %s: %w", cfg.Stream, err)
	}
	subs := st.CachedInfo().Config.Subjects
	for _, subj := range publishTo {
		if !slices.ContainsFunc(subs, func(p string) bool { return subjectMatch(p, subj) }) {
			return nil, fmt.Errorf("commerce stream %s does not take %s (its subjects: %s): commerce.prefix is not the "+
				"hub's, or the hub's release publishes there no more", cfg.Stream, subj, strings.Join(subs, " "))
		}
	}
	return st, nil
}

// subjectMatch reports whether subject subj matches pattern (tokens, '*' one, '>' the rest).
func subjectMatch(pattern, subj string) bool {
	ps, ss := splitSubject(pattern), splitSubject(subj)
	for i, p := range ps {
		if p == ">" {
			return len(ss) > i
		}
		if i >= len(ss) || p != "*" && p != ss[i] {
			return false
		}
	}
	return len(ps) == len(ss)
}

// errCodeSubjectOverlap is nats-server's "subjects overlap with an existing stream" (nats.go names no constant).
const errCodeSubjectOverlap jetstream.ErrorCode = 10065

// subjects are the stream's subjects (see Config.Channels).
func (c *Config) subjects() []string {
	if len(c.Channels) == 0 {
		return []string{c.Prefix + ".commerce.>"}
	}
	out := []string{InventorySubject(c.Prefix)}
	for _, ch := range c.Channels {
		out = append(out, SalesSubject(c.Prefix, ch))
	}
	return out
}

// channelAllowed reports whether a sale on ch has a subject the stream captures.
func (c *Config) channelAllowed(ch string) bool {
	return len(c.Channels) == 0 || slices.Contains(c.Channels, ch)
}

// Event is a Sale or a Snapshot.
type Event interface {
	MsgID() string
	subject(prefix string) string
	encode() ([]byte, error)
	kind() string
	when() time.Time
}

func (s Sale) when() time.Time     { return s.Time }
func (s Snapshot) when() time.Time { return s.Time }

func (s Sale) subject(prefix string) string     { return SalesSubject(prefix, s.Channel) }
func (s Snapshot) subject(prefix string) string { return InventorySubject(prefix) }
func (s Sale) encode() ([]byte, error)          { return EncodeSale(s) }
func (s Snapshot) encode() ([]byte, error)      { return EncodeSnapshot(s) }
func (Sale) kind() string                       { return kindSale }
func (Snapshot) kind() string                   { return kindInventory }

const (
	kindSale      = "sale"
	kindInventory = "inventory"
)

// Result is the fate of one published event.
type Result struct {
	ID        string
	Seq       uint64 // stream sequence of the stored message (of the first copy, for a duplicate)
	Duplicate bool   // JetStream already held this Nats-Msg-Id (within the duplicate window)
	Err       error
}

// EventPublisher stores events durably; *Publisher is the real one.
type EventPublisher interface {
	// Publish returns one Result per event, in order, once each is stored (PubAck) or failed.
	Publish(ctx context.Context, events []Event) []Result
}

// Publisher publishes events to the COMMERCE stream with their MsgID as Nats-Msg-Id and waits for
// the PubAck, the point from which an event is durable. Safe for concurrent use.
type Publisher struct {
	js      jetstream.JetStream
	cfg     Config
	prefix  string
	timeout time.Duration
}

// NewPublisher returns a publisher for cfg's subjects.
func NewPublisher(js jetstream.JetStream, cfg Config) (*Publisher, error) {
	if err := cfg.check(false); err != nil {
		return nil, err
	}
	return &Publisher{js: js, cfg: cfg, prefix: cfg.Prefix, timeout: cfg.PublishTimeout}, nil
}

// publishWindow bounds the asynchronous publishes in flight, below nats.go's default of 4000.
const publishWindow = 512

// Publish implements EventPublisher: events are sent asynchronously, a window at a time, so a large
// import costs a round trip per window rather than per event.
func (p *Publisher) Publish(ctx context.Context, events []Event) []Result {
	out := make([]Result, len(events))
	for start := 0; start < len(events); start += publishWindow {
		end := min(start+publishWindow, len(events))
		p.window(ctx, events[start:end], out[start:end])
	}
	return out
}

// window publishes up to publishWindow events and waits for their acknowledgements, each window with
// its own timeout so a large import is bounded per window, not as a whole.
func (p *Publisher) window(ctx context.Context, events []Event, out []Result) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	futs := make([]jetstream.PubAckFuture, len(events))
	for i, ev := range events {
		out[i].ID = ev.MsgID()
		data, err := ev.encode()
		if err != nil {
			out[i].Err = err
			continue
		}
		if s, ok := ev.(Sale); ok && !p.cfg.channelAllowed(s.Channel) {
			out[i].Err = fieldErr("channel", "%q is not one of the configured channels %s", s.Channel, strings.Join(p.cfg.Channels, ", "))
			continue
		}
		msg := nats.NewMsg(ev.subject(p.prefix))
		msg.Data = data
		msg.Header.Set(jetstream.MsgIDHeader, out[i].ID)
		if futs[i], err = p.js.PublishMsgAsync(msg); err != nil {
			out[i].Err = fmt.Errorf("publish %s: %w", out[i].ID, err)
		}
	}
	for i, f := range futs {
		if f == nil {
			continue
		}
		r := &out[i]
		select {
		case ack := <-f.Ok():
			r.Seq, r.Duplicate = ack.Sequence, ack.Duplicate
		case err := <-f.Err():
			r.Err = fmt.Errorf("publish %s: %w", r.ID, err)
		case <-ctx.Done():
			// The message may still be stored later: re-sending it is safe, it keeps its Nats-Msg-Id.
			r.Err = fmt.Errorf("publish %s: no acknowledgement: %w", r.ID, ctx.Err())
		}
	}
}
