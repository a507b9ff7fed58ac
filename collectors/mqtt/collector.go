// Package mqtt is gemba's MQTT collector: it subscribes to brokers (persistent sessions, manual
// acks after the samples are durable), and maps JSON, plain values and Sparkplug B to samples.
package mqtt

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gemba-io/gemba/collectors"
	"github.com/gemba-io/gemba/config"
	"github.com/gemba-io/gemba/internal/ratelog"
	"github.com/gemba-io/gemba/signal"
)

func init() {
	collectors.Register(collectors.Factory{
		Type:      "mqtt",
		NewConfig: func() any { return NewConfig() },
		New: func(name string, cfg any, deps collectors.Deps) (collectors.Collector, error) {
			c, ok := cfg.(*Config)
			if !ok {
				return nil, fmt.Errorf("mqtt: config is %T, want *mqtt.Config", cfg)
			}
			return New(name, c, deps)
		},
	})
}

// Collector subscribes to one broker (or a failover list) and emits samples. See Run.
type Collector struct {
	name     string
	cfg      *Config
	deps     collectors.Deps
	log      *slog.Logger
	warn     *ratelog.Logger
	clientID string
	stateDir string // per client id under Deps.DataDir: the broker's session belongs to the id
	subs     []*sub
	// per subscription: the subscriptions whose filter covers its filter, and the QoS to
	// subscribe it with (overlap.go)
	coveredBy [][]int
	coverQoS  []byte
	sp        []*spHost // per subscription; nil unless sparkplugb
	m         *metrics
	tlsCfg    *tls.Config

	// used by the worker goroutine only
	subMessages []prometheus.Counter
	subSamples  []prometheus.Counter
	sources     map[string]string

	gen    atomic.Uint64 // client generation: messages of a reset client are dropped unacked
	client atomic.Pointer[clientRef]

	// per subscription: unix nanos of the last message, for the stall watchdog
	lastMsg     []atomic.Int64
	connectedAt atomic.Int64 // unix nanos; 0 while disconnected
	busy        atomic.Bool  // the worker is inside Emit (backpressure is not a stall)
	queued      atomic.Int64
	acked       *recentAcks    // redeliveries of messages already stored are not stored again
	stored      *storedJournal // their digests, journaled with the samples (stored.go)
	ret         *retainedStore // digests of the last stored message per topic (retained.go)

	mu    sync.Mutex
	state string
	info  map[string]string
}

type clientRef struct{ cl paho.Client }

// inMsg is a received message waiting for the worker.
type inMsg struct {
	msg   paho.Message
	gen   uint64
	recv  time.Time
	match []int // indexes of the subscriptions it matched
}

// New builds a collector from a validated config.
func New(name string, cfg *Config, deps collectors.Deps) (*Collector, error) {
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(deps.Metrics)
	if err != nil {
		return nil, fmt.Errorf("mqtt %s: metrics: %w", name, err)
	}
	c := &Collector{name: name, cfg: cfg, deps: deps, log: deps.Logger, m: m,
		state: "stopped", info: map[string]string{}}
	c.warn = ratelog.New(c.log, 10*time.Second)
	c.acked = newRecentAcks(1 << 13) // more than a broker keeps in flight to one client
	c.clientID = cfg.ClientID
	if c.clientID == "" {
		if deps.Agent == "" && cfg.Persistent() {
			return nil, collectors.Permanent(fmt.Errorf("mqtt: client_id is required for a persistent session when the agent has no id"))
		}
		c.clientID = "gemba-" + deps.Agent + "-" + name
		if deps.Agent == "" {
			c.clientID = "gemba-" + name
		}
	}
	if deps.DataDir != "" {
		c.stateDir = filepath.Join(deps.DataDir, "mqtt-"+fileSafe(c.clientID))
	}
	c.ret = newRetainedStore(c.stateDir)
	c.stored = newStoredJournal(c.clientID)
	for i := range cfg.Subscriptions {
		s, err := compileSubscription(&cfg.Subscriptions[i])
		if err != nil {
			return nil, collectors.Permanent(fmt.Errorf("mqtt: subscriptions[%d]: %w", i, err))
		}
		s.qos = cfg.subQoS(i)
		s.stall = cfg.StallTimeout
		if st := cfg.Subscriptions[i].StallTimeout; st != nil {
			s.stall = *st
		}
		c.subs = append(c.subs, s)
		c.subMessages = append(c.subMessages, c.m.messages.WithLabelValues(s.filter))
		c.subSamples = append(c.subSamples, c.m.samples.WithLabelValues(s.filter))
		var h *spHost
		if s.format == FormatSparkplugB {
			h = newSpHost()
			gaps := c.m.seqGaps.WithLabelValues(s.filter)
			h.seqGaps = func(topic string, got, want int) {
				gaps.Inc()
				c.warn.Warn("seq:"+topic, "sparkplug seq gap", "topic", topic, "seq", got, "expected", want)
			}
			if err := s.loadSparkplug(h, c.stateDir); err != nil {
				// Not fatal: nodes are asked for a rebirth when their data cannot be named.
				c.log.Warn("sparkplug state unreadable", "subscription", s.filter, "err", err)
			}
			if h.committed, err = h.snapshot(s.filter); err != nil {
				return nil, fmt.Errorf("mqtt %s: sparkplug state: %w", name, err)
			}
		}
		c.sp = append(c.sp, h)
	}
	if cfg.Persistent() && deps.DataDir == "" {
		c.log.Warn("no data dir: topics removed from the config cannot be unsubscribed after a restart")
	}
	c.findCovers()
	c.lastMsg = make([]atomic.Int64, len(c.subs))
	c.sources = map[string]string{}
	t, err := buildTLS(cfg)
	if err != nil {
		return nil, collectors.Permanent(fmt.Errorf("mqtt: %w", err))
	}
	c.tlsCfg = t
	return c, nil
}

func buildTLS(cfg *Config) (*tls.Config, error) {
	t := cfg.TLS
	needs := t != (TLSConfig{})
	for _, b := range cfg.BrokerList() {
		needs = needs || strings.HasPrefix(b, "ssl://") || strings.HasPrefix(b, "tls://") ||
			strings.HasPrefix(b, "mqtts://") || strings.HasPrefix(b, "wss://")
	}
	if !needs {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify} //nolint:gosec // operator's explicit choice
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.ca_file %s: no PEM certificates in it", t.CAFile)
		}
		tc.RootCAs = pool
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls.cert_file/key_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// State implements collectors.Stater.
func (c *Collector) State() (string, map[string]string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state, maps.Clone(c.info)
}

func (c *Collector) setState(state string, kv ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.setStateLocked(state, kv...)
}

// setStateIf sets the state while cl is connected: what a connection found out (its subscriptions,
// its loss) is not reported once another connection took over, or after it was lost. paho calls
// the connection-lost handler while it reconnects, and lets an OnConnect run on after its
// connection was lost; under mu, so a loss reported after the check is reported after the state.
func (c *Collector) setStateIf(cl paho.Client, connected bool, state string, kv ...string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cl.IsConnectionOpen() != connected {
		return false
	}
	c.setStateLocked(state, kv...)
	return true
}

func (c *Collector) setStateLocked(state string, kv ...string) {
	c.state = state
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			delete(c.info, kv[i])
		} else {
			c.info[kv[i]] = kv[i+1]
		}
	}
}

// Run connects, subscribes and emits until ctx is done. Connection losses are healed by paho's
// reconnect (re-subscribing each time); a stall or a refused Emit rebuilds the session so the
// broker redelivers what was not acknowledged. Refused credentials are a permanent error.
func (c *Collector) Run(ctx context.Context, emit collectors.Emitter) error {
	ctx, cancel := context.WithCancel(ctx)
	queue := make(chan inMsg, 2*c.cfg.MaxBatch)
	reset := make(chan string, 1)
	requestReset := func(why string) {
		select {
		case reset <- why:
		default:
		}
	}
	// The retained-message digests outlive a Run in memory (a supervisor restart reuses the
	// collector); the file is read once, reopened for appends by each Run and closed when it ends.
	if err := c.ret.open(); err != nil {
		c.log.Warn("retained state unusable: retained messages may be stored again after the next restart", "err", err)
	}
	// Digests of the messages stored before a crash: their redeliveries are acknowledged, not
	// stored again. Read once per collector, from the buffer the samples went to.
	if me, ok := emit.(metaEmitter); ok {
		ds, err := c.stored.load(me.GetMeta)
		c.acked.add(ds)
		if err != nil {
			c.log.Warn("stored-message journal damaged: redeliveries of messages stored before the restart may be stored again", "err", err)
		}
	}
	var wg, worker sync.WaitGroup
	var handlers gate
	worker.Go(func() { c.worker(ctx, emit, queue, requestReset) })
	wg.Go(func() { c.watchdog(ctx, requestReset) })
	defer func() {
		cancel()
		handlers.closeAndWait() // an OnConnect still subscribing gives up with ctx
		worker.Wait()
		wg.Wait()
		c.ret.close()
		c.setState("stopped")
	}()

	backoff := c.cfg.Reconnect.Initial
	for {
		gen := c.gen.Add(1)
		cl := paho.NewClient(c.clientOptions(ctx, queue, gen, &handlers))
		c.client.Store(&clientRef{cl: cl})
		c.setState(signal.CollectorStarting, "broker", strings.Join(c.brokers(), ","), "client_id", c.clientID)
		err := c.connect(ctx, cl)
		if err == nil {
			since := time.Now()
			select {
			case <-ctx.Done():
				// Stop the worker first: acks of samples already durable go out on this connection
				// instead of making the broker redeliver them.
				worker.Wait()
				cl.Disconnect(250)
				return nil
			case why := <-reset:
				c.log.Warn("session reset", "reason", why)
				c.setState("reconnecting", "last_error", why)
				cl.Disconnect(250)
				c.connectedAt.Store(0)
				c.m.connected.Set(0)
				// A session that lived long was healthy: start the backoff afresh. Resets in quick
				// succession (a buffer refusing everything) back off up to reconnect.max.
				if time.Since(since) > c.cfg.Reconnect.Max {
					backoff = c.cfg.Reconnect.Initial
				}
			}
		} else {
			if ctx.Err() != nil {
				return nil
			}
			if isAuthError(err) {
				c.setState("failed", "last_error", err.Error())
				return collectors.Permanent(fmt.Errorf("mqtt %s: %w", strings.Join(c.brokers(), ","), err)) // paho does not say which refused
			}
			c.log.Warn("connect failed", "broker", c.brokers(), "err", err, "retry_in", backoff)
			c.setState("reconnecting", "last_error", err.Error())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, c.cfg.Reconnect.Max)
	}
}

// brokers lists the broker URLs for logs, state and errors: credentials in a URL (paho takes
// them from tcp://user:password@host) are redacted.
func (c *Collector) brokers() []string {
	out := make([]string, 0, len(c.cfg.BrokerList()))
	for _, b := range c.cfg.BrokerList() {
		out = append(out, config.RedactURL(b))
	}
	return out
}

func isAuthError(err error) bool {
	return errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword) || errors.Is(err, packets.ErrorRefusedNotAuthorised) ||
		errors.Is(err, packets.ErrorRefusedIDRejected)
}

// connect makes one connection attempt (every broker of the list, in order).
func (c *Collector) connect(ctx context.Context, cl paho.Client) error {
	tok := cl.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		cl.Disconnect(0)
		return ctx.Err()
	}
	if err := tok.Error(); err != nil {
		cl.Disconnect(0)
		return err
	}
	return nil
}

func (c *Collector) clientOptions(ctx context.Context, queue chan<- inMsg, gen uint64, handlers *gate) *paho.ClientOptions {
	o := paho.NewClientOptions()
	for _, b := range c.cfg.BrokerList() {
		o.AddBroker(b)
	}
	o.SetClientID(c.clientID)
	o.SetUsername(c.cfg.Username)
	o.SetPassword(c.cfg.Password.Value())
	o.SetCleanSession(!c.cfg.Persistent())
	o.SetProtocolVersion(4)
	// Acks are ours: sent in order, only after the samples are durable.
	o.SetAutoAckDisabled(true)
	o.SetOrderMatters(true)
	o.SetResumeSubs(false)
	o.SetKeepAlive(c.cfg.KeepAlive)
	o.SetPingTimeout(max(c.cfg.KeepAlive/2, time.Second))
	o.SetConnectTimeout(c.cfg.ConnectTimeout)
	o.SetWriteTimeout(c.cfg.ConnectTimeout)
	o.SetAutoReconnect(true)
	o.SetConnectRetry(false)
	o.SetMaxReconnectInterval(c.cfg.Reconnect.Max)
	if c.tlsCfg != nil {
		o.SetTLSConfig(c.tlsCfg)
	}
	// buffered reads, coalesced acknowledgements, payloads beyond max_payload cut
	o.SetCustomOpenConnectionFn(func(uri *url.URL, o paho.ClientOptions) (net.Conn, error) {
		return dialBroker(uri, o, int64(c.cfg.MaxPayload))
	})
	o.SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { c.receive(ctx, queue, gen, m) })
	o.SetOnConnectHandler(func(cl paho.Client) {
		if handlers.enter() {
			defer handlers.leave()
			c.onConnect(ctx, cl)
		}
	})
	o.SetConnectionLostHandler(func(cl paho.Client, err error) {
		c.m.lost.Inc()
		c.log.Warn("connection lost", "err", err)
		// Unless paho's reconnect, which runs alongside this call, has already succeeded.
		if c.setStateIf(cl, false, "reconnecting", "last_error", err.Error()) {
			c.m.connected.Set(0)
			c.connectedAt.Store(0)
		}
	})
	return o
}

// receive runs on paho's router goroutine: it matches and queues, nothing slow. A QoS >= 1
// message waits for room (the broker's in-flight window bounds how many come); a QoS 0 message is
// dropped and counted when the worker is behind, so a flood cannot stall keepalives.
func (c *Collector) receive(ctx context.Context, queue chan<- inMsg, gen uint64, m paho.Message) {
	now := time.Now()
	in := inMsg{msg: m, gen: gen, recv: now}
	topic := m.Topic()
	for i, s := range c.subs {
		if topicMatch(s.filter, topic) {
			in.match = append(in.match, i)
			c.lastMsg[i].Store(now.UnixNano())
		}
	}
	c.queued.Add(1)
	if m.Qos() == 0 {
		select {
		case queue <- in:
		default:
			c.queued.Add(-1)
			c.m.droppedQoS0.Inc()
		}
		return
	}
	select {
	case queue <- in:
	case <-ctx.Done():
		c.queued.Add(-1)
	}
}

// onConnect re-subscribes on every connection and reconciles the broker's subscription set with
// the config: filters recorded in the state file but no longer configured (or now covered by
// another filter, overlap.go) are unsubscribed.
func (c *Collector) onConnect(ctx context.Context, cl paho.Client) {
	c.m.connects.Inc()
	c.m.connected.Set(1)
	c.connectedAt.Store(time.Now().UnixNano())
	c.setState(signal.CollectorStarting, "last_error", "") // subscribing
	c.log.Info("connected", "client_id", c.clientID, "persistent", c.cfg.Persistent())

	prev, err := loadState(c.stateDir)
	if err != nil {
		c.log.Warn("subscription state unreadable; removed topics cannot be unsubscribed", "err", err)
	}
	// Record every configured filter (a covered one is subscribed when the broker refuses its
	// cover) and the recorded ones first: if we crash before the unsubscribe is confirmed, the
	// next start still knows those filters may be live at the broker.
	union := maps.Clone(prev.Topics)
	if prev.ClientID != c.clientID || !c.cfg.Persistent() {
		union = map[string]byte{}
	}
	for i, s := range c.subs {
		union[s.filter] = max(union[s.filter], c.coverQoS[i])
	}
	if err := saveState(c.stateDir, subState{ClientID: c.clientID, Topics: union}); err != nil {
		c.log.Warn("save subscription state", "err", err)
	}
	want, failed := c.subscribe(ctx, cl)
	if ctx.Err() != nil {
		return
	}
	// Filters recorded but no longer subscribed: removed from the config, or covered by another.
	var remove []string
	if prev.ClientID == c.clientID && c.cfg.Persistent() {
		for f := range prev.Topics {
			if _, ok := want[f]; !ok {
				remove = append(remove, f)
			}
		}
		slices.Sort(remove)
	}
	unsubscribed := true
	if len(remove) > 0 {
		ut := cl.Unsubscribe(remove...)
		confirmed := waitToken(ctx, ut, c.cfg.ConnectTimeout)
		if ctx.Err() != nil {
			return
		}
		switch {
		case !confirmed:
			unsubscribed = false
			c.log.Warn("unsubscribe of removed topics not confirmed; retried on the next connection", "topics", remove, "timeout", c.cfg.ConnectTimeout)
		case ut.Error() != nil:
			unsubscribed = false
			c.log.Warn("unsubscribe of removed topics failed; retried on the next connection", "topics", remove, "err", ut.Error())
		default:
			c.log.Info("unsubscribed topics no longer configured (or covered by another filter)", "topics", remove)
		}
	}
	// Until the broker confirms the unsubscribe the state keeps the union, so the next connection
	// tries again; meanwhile their messages are counted as unmatched. The subscriptions made above
	// are live either way, and so reported.
	if unsubscribed {
		if err := saveState(c.stateDir, subState{ClientID: c.clientID, Topics: want}); err != nil {
			c.log.Warn("save subscription state", "err", err)
		}
	}
	// A connection lost while subscribing (paho then fails the subscribe) is reported by the
	// connection-lost handler.
	if len(failed) > 0 {
		c.setStateIf(cl, true, "degraded", "failed_subscriptions", strings.Join(failed, ","))
	} else {
		c.setStateIf(cl, true, signal.CollectorRunning, "failed_subscriptions", "")
	}
}

// gate admits paho's OnConnect callbacks (which run on goroutines of their own) while Run runs,
// and lets Run wait for them, so none writes state after Run returned.
type gate struct {
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

func (g *gate) enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.wg.Add(1)
	return true
}

func (g *gate) leave() { g.wg.Done() }

func (g *gate) closeAndWait() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	g.wg.Wait()
}

// waitToken waits for a paho token, giving up at the timeout or when the collector stops, so an
// OnConnect callback ends soon after Run is cancelled.
func waitToken(ctx context.Context, tok paho.Token, timeout time.Duration) bool {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-tok.Done():
		return true
	case <-ctx.Done():
	case <-t.C:
	}
	return false
}

// SUBACK return codes: 0, 1 and 2 grant a QoS; MQTT 3.1.1 knows one refusal, 0x80, but brokers
// also send MQTT 5 reason codes (all from 0x80 up). subackIDInUse is one of those: mochi answers it
// to a SUBSCRIBE whose packet id equals one of its own unacknowledged PUBLISHes to us (the ids of
// the two directions are independent, so this is the broker's bug), which says nothing about the
// filters: they are asked again, under a new id, once our PUBACKs had a moment to free it.
const (
	subackMaxQoS        = 2
	subackIDInUse       = 0x91
	subscribeRetryPause = 50 * time.Millisecond
)

// waitSubscribe waits for a SUBACK and returns the filters the broker refused and those it
// answered "packet identifier in use" (busy), or confirmed false when none came in time.
func (c *Collector) waitSubscribe(ctx context.Context, tok paho.Token) (refused, busy []string, confirmed bool) {
	if !waitToken(ctx, tok, c.cfg.ConnectTimeout) {
		if ctx.Err() == nil {
			c.log.Error("subscribe not confirmed", "timeout", c.cfg.ConnectTimeout)
		}
		return nil, nil, false
	}
	if err := tok.Error(); err != nil {
		c.log.Error("subscribe failed", "err", err)
	}
	st, ok := tok.(*paho.SubscribeToken)
	if !ok {
		return nil, nil, true
	}
	for f, code := range st.Result() {
		switch {
		case code == subackIDInUse:
			busy = append(busy, f)
		case code > subackMaxQoS:
			c.log.Error("broker refused subscription", "topic", f, "code", fmt.Sprintf("0x%02x", code))
			refused = append(refused, f)
		}
	}
	return refused, busy, true
}
