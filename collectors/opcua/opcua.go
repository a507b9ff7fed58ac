// Package opcua is gemba's OPC UA collector: secured sessions with persistent client certificates
// and explicit server trust, subscriptions or polling per group, and a reconnect loop it owns.
//
// Self-healing is the point. gopcua's own reconnect is switched off: on channel or session loss, on
// a data-silence watchdog, or when the library reports connected with no live subscription, the
// collector rebuilds client, session and subscriptions from scratch. Nodes the server rejects are
// quarantined and retried periodically while every other node keeps flowing (a node that vanished
// after its monitored item was created gets a new item); monitored items are created in batches
// that honour the server's OperationLimits. A new monitored item's first value is the node's
// current one: when it is the value stored last (same time, status and value) it is not stored twice.
package opcua

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/gopcua/opcua/ua"

	"github.com/gemba-io/gemba/collectors"
	"github.com/gemba-io/gemba/signal"
)

func init() {
	collectors.Register(collectors.Factory{
		Type:      "opcua",
		NewConfig: func() any { return NewConfig() },
		New: func(name string, cfg any, deps collectors.Deps) (collectors.Collector, error) {
			c, ok := cfg.(*Config)
			if !ok {
				return nil, fmt.Errorf("opcua: config is %T, want *opcua.Config", cfg)
			}
			return New(name, c, deps)
		},
	})
}

// item states.
const (
	statePending     = "pending"
	stateActive      = "active"
	stateQuarantined = "quarantined"
)

// item is one configured node and what the current session knows about it.
type item struct {
	spec   nodeSpec
	group  int
	handle uint32 // client handle: index in Collector.items + 1 (0 is the heartbeat)
	source string
	names  []string // cached array element names

	// client-side deadband state (touched only by the goroutine that handles the item's group)
	last       float64
	hasLast    bool
	dropLogged bool // array elements beyond max_array were logged once

	// subscriptions: the last value stored (kept across sessions), and whether the next value is
	// the first of a new monitored item (the node's current value, possibly stored already)
	fresh    bool
	stored   bool
	storedAt time.Time
	storedSt ua.StatusCode
	storedV  any

	// guarded by Collector.mu
	state     string
	reason    string
	id        *ua.NodeID // resolved for the current session
	noFilter  bool       // the server refused our DataChangeFilter; an absolute deadband is applied here
	monitorID uint32
	recreated bool // its monitored item was deleted while quarantined: stays so until a value comes
}

// Collector is one OPC UA collector. It is built by New and run by the agent.
type Collector struct {
	name    string
	cfg     *Config
	deps    collectors.Deps
	log     *slog.Logger
	groups  []groupSpec
	items   []*item
	byGroup [][]*item
	m       *metrics

	mu       sync.Mutex
	state    string
	lastErr  string
	security string
	trust    string
}

var _ collectors.Stater = (*Collector)(nil)

// New builds a collector from a validated config.
func New(name string, cfg *Config, deps collectors.Deps) (*Collector, error) {
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(deps.Metrics)
	if err != nil {
		return nil, fmt.Errorf("opcua %s: metrics: %w", name, err)
	}
	c := &Collector{name: name, cfg: cfg, deps: deps, log: deps.Logger, groups: cfg.groups(), m: m, state: "stopped"}
	for gi, g := range c.groups {
		var gitems []*item
		for _, n := range g.Nodes {
			it := &item{spec: n, group: gi, handle: uint32(len(c.items) + 1), source: name + ":" + n.Raw, state: statePending}
			c.items = append(c.items, it)
			gitems = append(gitems, it)
		}
		c.byGroup = append(c.byGroup, gitems)
	}
	return c, nil
}

// State implements collectors.Stater: the session state and, per node, anything not active.
func (c *Collector) State() (string, map[string]string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d := map[string]string{"endpoint": c.cfg.Endpoint}
	if c.security != "" {
		d["security"] = c.security
		d["trust"] = c.trust
	}
	if c.lastErr != "" {
		d["last_error"] = c.lastErr
	}
	counts := map[string]int{}
	shown := 0
	for _, it := range c.items {
		counts[it.state]++
		if it.state != stateActive && shown < 100 {
			d["node "+it.spec.Signal] = it.state + reasonSuffix(it.reason)
			shown++
		}
	}
	for _, s := range []string{statePending, stateActive, stateQuarantined} {
		d["nodes_"+s] = strconv.Itoa(counts[s])
	}
	return c.state, d
}

func reasonSuffix(r string) string {
	if r == "" {
		return ""
	}
	return ": " + r
}

func (c *Collector) setState(state string, err error) {
	c.mu.Lock()
	c.state = state
	if err != nil {
		c.lastErr = err.Error()
	}
	c.mu.Unlock()
	up := 0.0
	if state == "connected" {
		up = 1
	}
	c.m.sessionUp.Set(up)
}

// setItem changes one node's state and keeps the metrics in step.
func (c *Collector) setItem(it *item, state, reason string) {
	c.mu.Lock()
	old := it.state
	it.state, it.reason = state, reason
	c.mu.Unlock()
	if old == state {
		return
	}
	c.m.nodes.WithLabelValues(old).Dec()
	c.m.nodes.WithLabelValues(state).Inc()
	if state == stateQuarantined {
		c.m.quarantined.WithLabelValues(it.spec.Signal).Set(1)
		c.log.Warn("node quarantined", "signal", it.spec.Signal, "node", it.spec.Raw, "reason", reason)
	} else if old == stateQuarantined {
		c.m.quarantined.DeleteLabelValues(it.spec.Signal)
		if state == stateActive {
			c.log.Info("node recovered", "signal", it.spec.Signal, "node", it.spec.Raw)
		}
	}
}

// Run connects and collects until ctx ends. Connection problems are healed here with backoff;
// it returns only for what a retry cannot fix (rejected credentials, no matching endpoint: these
// are Permanent) and for an untrusted server certificate (so the agent reports it and retries).
func (c *Collector) Run(ctx context.Context, emit collectors.Emitter) error {
	c.m.nodes.WithLabelValues(statePending).Add(0)
	c.mu.Lock()
	for _, it := range c.items {
		c.m.nodes.WithLabelValues(it.state).Inc()
	}
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		for _, it := range c.items {
			c.m.nodes.WithLabelValues(it.state).Dec()
		}
		c.mu.Unlock()
		c.setState("stopped", nil)
	}()
	backoff := c.cfg.Reconnect.MinBackoff
	first := true
	for {
		if first {
			c.setState(signal.CollectorStarting, nil)
		} else {
			c.setState("reconnecting", nil)
		}
		started := time.Now()
		err := c.runSession(ctx, emit)
		if ctx.Err() != nil {
			return nil
		}
		var ae *authError
		switch {
		case errors.As(err, &ae):
			c.setState("failed", err)
			return collectors.Permanent(fmt.Errorf("opcua %s: %w", c.cfg.Endpoint, err))
		case errors.Is(err, ErrUntrustedServer):
			c.setState("failed", err)
			return fmt.Errorf("opcua %s: %w", c.cfg.Endpoint, err)
		case errors.Is(err, errEmit):
			c.setState("failed", err)
			return err
		}
		c.setState("reconnecting", err)
		c.m.reconnects.WithLabelValues(lossReason(err)).Inc()
		if time.Since(started) > 4*c.cfg.Reconnect.MaxBackoff {
			backoff = c.cfg.Reconnect.MinBackoff // it was healthy for a while: come back fast
		}
		if !first || time.Since(started) > c.cfg.Reconnect.MinBackoff {
			c.log.Warn("session lost, rebuilding", "err", err, "retry_in", backoff)
		}
		first = false
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(backoff*2, c.cfg.Reconnect.MaxBackoff)
	}
}

// errors that end a session and name why (the reconnects metric's reason label)
var (
	errSilence       = errors.New("no data and no server heartbeat within the watchdog interval")
	errNoSubscripton = errors.New("client reports connected but holds no live subscription")
	errChannelLost   = errors.New("secure channel lost")
	errEmit          = errors.New("emit")
)

func lossReason(err error) string {
	switch {
	case errors.Is(err, errSilence):
		return "watchdog"
	case errors.Is(err, errNoSubscripton):
		return "no_subscription"
	case errors.Is(err, errChannelLost):
		return "channel_lost"
	}
	return "error"
}

// runSession connects, sets up every group and collects until the session fails or ctx ends.
func (c *Collector) runSession(ctx context.Context, emit collectors.Emitter) error {
	s, err := connect(ctx, connectOptions{cfg: c.cfg, dataDir: c.deps.DataDir, agent: c.deps.Agent, logger: c.log})
	if err != nil {
		return err
	}
	defer s.close()
	c.mu.Lock()
	c.security = policyName(s.endpoint.SecurityPolicyURI) + "/" + modeName(s.endpoint.SecurityMode)
	c.trust = string(s.trust)
	c.mu.Unlock()
	c.log.Info("connected", "endpoint", c.cfg.Endpoint, "security", c.security, "trust", c.trust,
		"max_monitored_items_per_call", s.limits.MaxMonitoredItemsPerCall, "max_nodes_per_read", s.limits.MaxNodesPerRead)
	c.resolveAll(s)

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r := newRunner(c, s, emit)
	if err := r.start(sctx); err != nil {
		cancel()
		r.wait()
		return err
	}
	c.setState(signal.CollectorRunning, nil)
	err = r.run(sctx)
	cancel()
	r.wait()
	if !errors.Is(err, errChannelLost) {
		r.deleteSubscriptions() // free the server's resources now, not after the lifetime expires
	}
	return err
}

// resolveAll resolves every node for a new session; a namespace URI the server does not know
// quarantines the node (it is retried with a fresh NamespaceArray).
func (c *Collector) resolveAll(s *session) {
	for _, it := range c.items {
		id, err := it.spec.Ref.resolve(s.namespaces)
		c.mu.Lock()
		it.id, it.monitorID, it.recreated = id, 0, false
		c.mu.Unlock()
		switch {
		case err != nil:
			c.setItem(it, stateQuarantined, "BadNamespaceUnknown: "+it.spec.Ref.NSU)
		case it.state != stateQuarantined: // quarantined nodes are retried while groups are set up
			c.setItem(it, statePending, "")
		}
	}
}

// quarantineCodes are the per-node answers that mean "this node is wrong", not "the value is bad".
var quarantineCodes = map[ua.StatusCode]bool{
	ua.StatusBadNodeIDUnknown: true, ua.StatusBadNodeIDInvalid: true, ua.StatusBadAttributeIDInvalid: true,
	ua.StatusBadNotReadable: true, ua.StatusBadUserAccessDenied: true, ua.StatusBadSecurityModeInsufficient: true,
	ua.StatusBadIndexRangeInvalid: true, ua.StatusBadNotSupported: true, ua.StatusBadNodeClassInvalid: true,
	ua.StatusBadTooManyMonitoredItems: true, ua.StatusBadMonitoringModeInvalid: true, ua.StatusBadNodeIDRejected: true,
}

// filterCodes mean the server refused our DataChangeFilter: the node is fine without it.
var filterCodes = map[ua.StatusCode]bool{
	ua.StatusBadMonitoredItemFilterUnsupported: true, ua.StatusBadFilterNotAllowed: true,
	ua.StatusBadMonitoredItemFilterInvalid: true, ua.StatusBadDeadbandFilterInvalid: true,
}

func isQuarantineCode(code ua.StatusCode) bool {
	return quarantineCodes[ua.StatusCode(uint32(code)&0xFFFF0000)]
}

// NodeStates lists every node's state, sorted by signal (for probe and tests).
func (c *Collector) NodeStates() map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]string, len(c.items))
	for _, it := range c.items {
		out[it.spec.Signal] = it.state + reasonSuffix(it.reason)
	}
	return out
}
