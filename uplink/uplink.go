// Package uplink forwards buffered records to NATS JetStream: in order per stream, with
// deterministic message ids, acknowledging the buffer only after JetStream has stored them.
//
// Delivery contract (what the hub can rely on), per (agent, stream); samples and features are
// independent streams with no order between them:
//   - one buffer record (a signal.Chunk) is one JetStream message with Nats-Msg-Id
//     <agent>:<stream>:<seq>; its envelope carries agent, stream, first_seq = last_seq = seq and
//     count, so JetStream drops re-sends within its duplicate window and the hub can dedupe on
//     (agent, stream, first_seq) beyond it;
//   - the buffer is acked only up to the floor: the highest sequence below which every record
//     read has a PubAck. Nothing acked in the buffer is missing from the stream. Sequence gaps in
//     the stream are records the buffer itself dropped (its max_bytes/max_age policy, counted in
//     the heartbeat), never records the uplink skipped (except undecodable ones, logged and counted);
//   - in steady state messages are stored in sequence order. Two things reorder them: a failed
//     publish (timeout, disconnect, stream full) makes the lane re-send from the floor, so the
//     failed message lands after later ones; and while a backlog is replayed next to live data,
//     live messages (sequence > T, the tail when catch-up began) are stored before the rest of
//     the backlog (sequence <= T). Within each of those two parts sequence order holds. A hub
//     that needs strict order sorts by first_seq; backlog messages carry historical=true and
//     delay_ms, so they are never mistaken for the present.
//
// Duplicate window rule: duplicate_window > restart_budget + publish_timeout (checked when the
// uplink creates the stream, warned about when it only verifies it). A message stored just before
// a crash or hub outage whose PubAck was lost is re-sent after the restart; if that takes longer
// than the window, JetStream stores it again and only the hub's (agent, stream, seq) dedupe helps.
package uplink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gemba-io/gemba/signal"
)

// Source is where the uplink reads records from: the agent's durable buffer.
type Source interface {
	// Read returns up to max records of stream with sequence > after, blocking until one exists or
	// ctx is done.
	Read(ctx context.Context, stream signal.Stream, after uint64, max int) ([]signal.Record, error)
	// Ack removes records of stream up to and including upTo.
	Ack(stream signal.Stream, upTo uint64) error
}

// Tail is optionally implemented by a Source (or given as Options.Tail): the last appended
// sequence of a stream. With it the uplink sends live records before a replayed backlog; without
// it everything goes strictly in sequence order, oldest first.
type Tail interface {
	LastSeq(stream signal.Stream) uint64
}

// Identity names the agent in subjects, message ids and envelopes.
type Identity struct {
	Agent, Site, ConfigVersion string
	// Incarnation is the buffer's (see buffer.Buffer.Incarnation); when empty it is taken from a
	// Source that has an Incarnation method.
	Incarnation string
}

// Options are the uplink's collaborators.
type Options struct {
	Logger  *slog.Logger
	Metrics prometheus.Registerer
	// Status returns the heartbeat content; nil sends a minimal heartbeat.
	Status func() signal.Status
	// Tail returns the last appended sequence of a stream (see Tail); optional.
	Tail func(signal.Stream) uint64
}

// buffered are the streams the uplink forwards from the buffer; status is sent directly.
var buffered = [...]signal.Stream{signal.StreamSamples, signal.StreamFeatures}

// Uplink publishes the buffer's streams to JetStream.
//
// Lifecycle: New checks the config and returns without connecting. Run connects (retrying
// forever), provisions or verifies the stream, forwards until ctx is done and then waits up to
// drain_timeout for in-flight PubAcks before closing the connection. Run may be called once.
// Health is safe at any time.
type Uplink struct {
	cfg     Config
	id      Identity
	src     Source
	tail    func(signal.Stream) uint64
	log     *slog.Logger
	status  func() signal.Status
	m       *metrics
	secrets []string

	win   window
	lanes []*lane

	// inflight maps a published message to its bookkeeping; JetStream's async callbacks hand back
	// the message pointer.
	infMu    sync.Mutex
	inflight map[*nats.Msg]*pending

	ran atomic.Bool

	mu          sync.Mutex
	nc          *nats.Conn
	js          jetstream.JetStream
	connected   bool
	connCh      chan struct{} // closed while connected
	server      string
	streamOK    bool
	streamWhy   string
	lastErr     string
	lastErrAt   time.Time
	publishWhy  [signal.NumStreams]string // per stream: set while its publishes fail, cleared by its next PubAck
	statusWhy   string                    // the stream does not capture the heartbeats (see checkStatusSubject)
	deniedWhy   string                    // the server's last publish permission violation (see onPermissionDenied)
	deniedAt    time.Time
	collideWhy  string // the last id collision (see lane.done), shown until collideAt+collisionShown
	collideAt   time.Time
	streamCheck chan struct{}
}

// New checks cfg and prepares an uplink; it does not connect.
func New(cfg Config, id Identity, src Source, opts Options) (*Uplink, error) {
	if src == nil {
		return nil, errors.New("uplink: nil source")
	}
	for _, f := range []struct{ name, v string }{{"agent id", id.Agent}, {"site", id.Site}} {
		if err := signal.CheckToken(f.v); err != nil {
			return nil, fmt.Errorf("uplink: %s: %w", f.name, err)
		}
	}
	if id.Incarnation == "" {
		if s, ok := src.(interface{ Incarnation() string }); ok {
			id.Incarnation = s.Incarnation()
		}
	}
	if err := signal.CheckToken(id.Incarnation); err != nil || strings.Contains(id.Incarnation, ":") {
		return nil, fmt.Errorf("uplink: buffer incarnation %q: cannot be part of a message id", id.Incarnation)
	}
	if err := validate(&cfg); err != nil {
		return nil, fmt.Errorf("uplink: %w", err)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	u := &Uplink{
		cfg: cfg, id: id, src: src, log: opts.Logger, status: opts.Status,
		inflight: map[*nats.Msg]*pending{}, connCh: make(chan struct{}),
		streamCheck: make(chan struct{}, 1),
		streamWhy:   "stream not checked yet",
	}
	u.tail = opts.Tail
	if u.tail == nil {
		if t, ok := src.(Tail); ok {
			u.tail = t.LastSeq
		}
	}
	for _, s := range []string{cfg.NATS.Password.Value(), cfg.NATS.Token.Value()} {
		if s != "" {
			u.secrets = append(u.secrets, s)
		}
	}
	u.win.init(cfg.MaxInflight, int(cfg.MaxInflightBytes))
	for _, s := range buffered {
		u.lanes = append(u.lanes, newLane(u, s))
	}
	var err error
	if u.m, err = newMetrics(u, opts.Metrics); err != nil {
		return nil, fmt.Errorf("uplink: metrics: %w", err)
	}
	return u, nil
}

// Run forwards until ctx is done. It returns nil after a clean stop.
func (u *Uplink) Run(ctx context.Context) error {
	if !u.ran.CompareAndSwap(false, true) {
		return errors.New("uplink: Run called twice")
	}
	nc, js, err := u.connect(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer nc.Close()

	if !u.provision(ctx, js) {
		return nil // ctx done while waiting for a usable stream
	}
	if u.statusMissing() != "" {
		u.checkStreamSoon() // watchStream checks until the stream captures the heartbeats
	}
	var wg sync.WaitGroup
	wg.Go(func() { u.watchStream(ctx, js) })
	if u.cfg.Heartbeat > 0 {
		wg.Go(func() { u.heartbeat(ctx, nc) })
	}
	for _, l := range u.lanes {
		wg.Go(func() { l.run(ctx) })
		wg.Go(func() { l.acker(ctx) })
	}
	wg.Wait()
	u.drain()
	return nil
}

// drain waits for in-flight PubAcks (bounded), then acks the buffer one last time.
func (u *Uplink) drain() {
	deadline := time.Now().Add(u.cfg.DrainTimeout)
	for u.win.count() > 0 && time.Now().Before(deadline) {
		u.win.waitChange(deadline)
	}
	for _, l := range u.lanes {
		l.flushAck()
	}
	if n := u.win.count(); n > 0 {
		u.log.Warn("uplink stopped with publishes in flight", "messages", n,
			"note", "they stay in the buffer and are re-sent with the same ids at the next start")
	}
}

// Health is a snapshot of the uplink's state for readiness checks and the status page.
type Health struct {
	Connected bool
	Server    string // connected server URL, credentials removed
	Stream    string
	StreamOK  bool
	// Reason says why the uplink is not ready (empty when it is). It never contains secrets.
	Reason      string
	LastError   string
	LastErrorAt time.Time
	// Message counters since start.
	Published, Acked, Errors, Duplicates uint64
	InFlight                             int
	Streams                              []StreamHealth
}

// StreamHealth is the forwarding position of one buffered stream.
type StreamHealth struct {
	Stream     string
	ReadSeq    uint64 // highest sequence read from the buffer
	AckedSeq   uint64 // highest sequence acked to the buffer
	CatchingUp bool   // a backlog is being replayed next to live data
}

// Ready reports whether data is flowing upstream, and why not.
func (h Health) Ready() (bool, string) { return h.Reason == "", h.Reason }

// Health returns the current state.
func (u *Uplink) Health() Health {
	u.mu.Lock()
	h := Health{
		Connected: u.connected, Server: u.server, Stream: u.cfg.NATS.Stream, StreamOK: u.streamOK,
		LastError: u.lastErr, LastErrorAt: u.lastErrAt,
	}
	switch {
	case !u.connected:
		h.Reason = "not connected to NATS (" + u.cfg.NATS.describe() + ")"
		if u.lastErr != "" {
			h.Reason += ": " + u.lastErr
		}
	case !u.streamOK:
		h.Reason = u.streamWhy
	case u.publishFailing() != "":
		h.Reason = u.publishFailing()
	case u.collideWhy != "" && time.Since(u.collideAt) < collisionShown:
		h.Reason = u.collideWhy
	case u.statusWhy != "":
		h.Reason = u.statusWhy
	}
	u.mu.Unlock()
	h.Published, h.Acked = u.m.published.Load(), u.m.acked.Load()
	h.Errors, h.Duplicates = u.m.errors.Load(), u.m.duplicates.Load()
	h.InFlight = u.win.count()
	for _, l := range u.lanes {
		h.Streams = append(h.Streams, l.health())
	}
	return h
}

// setErr records err (secrets removed) as the last error and returns the cleaned text.
func (u *Uplink) setErr(err error) string {
	msg := u.redact(err.Error())
	u.mu.Lock()
	u.lastErr, u.lastErrAt = msg, time.Now()
	u.mu.Unlock()
	return msg
}

func (u *Uplink) redact(s string) string {
	for _, sec := range u.secrets {
		s = replaceAll(s, sec, "[redacted]")
	}
	return s
}

// heartbeat publishes the status envelope. It is best effort (core NATS, not buffered): a missed
// heartbeat is replaced by the next one.
func (u *Uplink) heartbeat(ctx context.Context, nc *nats.Conn) {
	t := time.NewTicker(u.cfg.Heartbeat)
	defer t.Stop()
	subject := u.cfg.NATS.subjectFor(u.id, signal.StreamStatus)
	var seq uint64
	for {
		u.sendHeartbeat(nc, subject, &seq)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (u *Uplink) sendHeartbeat(nc *nats.Conn, subject string, seq *uint64) {
	var st signal.Status
	if u.status != nil {
		st = u.status()
	}
	now := time.Now().UTC()
	if st.Time.IsZero() {
		st.Time = now
	}
	if st.Agent == "" {
		st.Agent, st.Site, st.ConfigVersion = u.id.Agent, u.id.Site, u.id.ConfigVersion
	}
	cv := st.ConfigVersion // the config in force now: a reload changes it while the uplink runs
	if cv == "" {
		cv = u.id.ConfigVersion
	}
	*seq++
	h := signal.Header{
		Schema: signal.SchemaVersion, Agent: u.id.Agent, Site: u.id.Site, Stream: signal.StreamStatus,
		ConfigVersion: cv, Incarnation: u.id.Incarnation, FirstSeq: *seq, LastSeq: *seq, Count: 1,
		Oldest: st.Time, Newest: st.Time, Sent: now,
	}
	data := signal.AppendEnvelope(nil, &h, signal.AppendStatusJSON(nil, []signal.Status{st}))
	if err := nc.Publish(subject, data); err != nil {
		u.log.Debug("heartbeat not sent", "err", u.redact(err.Error()))
	}
}
