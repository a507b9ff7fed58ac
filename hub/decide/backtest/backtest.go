// Package backtest replays the agents' and the commerce streams through a rule version with the
// hub's own evaluation and guardrails, on private state, and reports what it would have decided.
package backtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub"
	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/decide"
	"github.com/gemba-io/gemba/hub/decide/guard"
	"github.com/gemba-io/gemba/hub/decide/rules"
	"github.com/gemba-io/gemba/hub/decide/versions"
	"github.com/gemba-io/gemba/hub/state/graph"
	"github.com/gemba-io/gemba/hub/state/inventory"
)

// DefaultReorder is how far (in event time) inputs may arrive out of order and still be applied
// in order: agents publish their windows within seconds, several agents interleave.
const DefaultReorder = time.Minute

// Options say what to replay through what.
type Options struct {
	// JS is the hub's NATS. It is only read (ordered consumers on the agents' and the COMMERCE
	// streams); nothing is published to it.
	JS jetstream.JetStream
	// Config is the hub config: streams and prefix, features, ingest.production, inventory,
	// decide (bucket, timer, lines) and guard. It must have a guard section.
	Config *hub.Config
	// Graph is the knowledge graph (nil: Config.Graph.File is loaded).
	Graph *graph.Graph
	// Rules is the rule version replayed (as the active version).
	Rules *rules.Set
	// From and To bound the replay in event time: decisions are taken for [From, To). Inputs
	// before From (back to Warmup) only build the state.
	From, To time.Time
	// Warmup is how far before From the COMMERCE stream is read to rebuild the inventory (its last
	// count and the demand rate's days): inventory.demand_days when 0. The agents' stream is read
	// from From less the longest feature max_age, and for its production (ingest.production) from
	// the earliest of the last inventory counts before From.
	Warmup time.Duration
	// Reorder is the reorder window: inputs this far out of event-time order are applied in order.
	// 0 is DefaultReorder unless NoReorder is set.
	Reorder time.Duration
	// NoReorder applies inputs with no reorder window (Reorder must be 0): each is applied once
	// every stream still being read has reached its time, and one read after later ones is applied
	// late, as the hub applies what arrives late.
	NoReorder bool
	// Out receives each decision once, in decision order (may be nil).
	Out func(Decision)
	// Log receives warnings (malformed messages); discarded when nil.
	Log *slog.Logger
	// TempDir holds the private JetStream's store, removed at the end (os.TempDir when empty).
	TempDir string
}

// Decision is one decision the rule version would have taken, with the guardrails' verdict.
type Decision struct {
	ID      string       `json:"decision_id"`
	Time    time.Time    `json:"time"` // replay time of the evaluation (the event time that triggered it)
	SKU     string       `json:"sku"`
	Site    string       `json:"site"`
	Channel string       `json:"channel"`
	Rule    string       `json:"rule"`
	Version string       `json:"rule_version"`
	Action  rules.Action `json:"action"`
	// Outcome is what the decision log would record (decide.Outcome of the guard's verdict):
	// audit.OutcomeFired (a promotion allowed), OutcomeHeld (a hold allowed), OutcomeSuppressed
	// (Guardrail says which), OutcomeAwaitingApproval or OutcomeHeldOut.
	Outcome   string `json:"outcome"`
	Guardrail string `json:"guardrail,omitempty"`
	Reason    string `json:"reason,omitempty"`
}

// Verdict is the decision's outcome as printed: the decision log's outcome, with the guardrail of
// a suppression (suppressed by cooldown).
func (d Decision) Verdict() string {
	if d.Outcome == audit.OutcomeSuppressed && d.Guardrail != "" {
		return d.Outcome + " by " + d.Guardrail
	}
	return d.Outcome
}

// InvalidProposal is a proposal the guard refused as malformed: what the engine logs of it.
type InvalidProposal struct {
	ID      string    `json:"decision_id"`
	Time    time.Time `json:"time"`
	SKU     string    `json:"sku"`
	Site    string    `json:"site"`
	Channel string    `json:"channel"`
	Rule    string    `json:"rule"`
	Error   string    `json:"error"`
}

// MaxInvalidListed bounds Summary.InvalidProposals (a rule refused in every time bucket of a long
// span would otherwise list each).
const MaxInvalidListed = 100

// Summary is what a replay did.
type Summary struct {
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
	// First and Last are the event times of the first and last input applied (the first is in
	// the warm-up before From).
	First     time.Time `json:"first_input"`
	Last      time.Time `json:"last_input"`
	Features  int       `json:"features"` // feature records read
	Sales     int       `json:"sales"`
	Snapshots int       `json:"inventory_counts"`
	Malformed int       `json:"malformed"` // messages that do not decode (the hub terminates them too)
	Refused   int       `json:"refused"`   // movements and counts the inventory refused
	// Future counts feature records refused for a window ending beyond ingest.max_future of when
	// they were stored (an agent's clock ahead), as the feature store refuses them.
	Future      int `json:"future"`
	Evaluations int `json:"evaluations"`
	Decisions   int `json:"decisions"`
	// Deferred counts decision ids that waited for inputs they could not use (the live engine's
	// deferred records); each is decided later in its bucket, or never.
	Deferred int `json:"deferred"`
	// Undeliverable counts decision ids for a channel the act section does not deliver on: the
	// engine does not decide them (it logs the rule and channel).
	Undeliverable int `json:"undeliverable"`
	// Invalid counts proposals the guard refused as malformed (guard.InputError: a rule asked for
	// what no guardrail can judge). The engine logs each (rule, SKU, channel, error) and decides
	// nothing: they are no decision, and no suppression, here either. InvalidProposals lists the
	// first MaxInvalidListed of them.
	Invalid          int               `json:"invalid_proposals"`
	InvalidProposals []InvalidProposal `json:"invalid,omitempty"`
	// ByOutcome counts the decisions by the decision log's outcome (Decision.Outcome), ByGuardrail
	// the suppressions by guardrail.
	ByOutcome   map[string]int `json:"by_outcome"`
	ByGuardrail map[string]int `json:"by_guardrail"`
	ByRule      map[string]int `json:"by_rule"`
	ByChannel   map[string]int `json:"by_channel"`
	// Reorder is the reorder window the inputs were applied in (Options.Reorder; nanoseconds in JSON).
	Reorder time.Duration `json:"reorder_ns"`
	// Warnings say what the replay lacked (a stream whose retention removed what it needs).
	Warnings []string `json:"warnings,omitempty"`
	// Wall is the wall time the replay took (nanoseconds in JSON).
	Wall time.Duration `json:"wall_ns"`
	// Speed is the replayed span (To − From) over the wall time.
	Speed float64 `json:"x_realtime"`
}

// Run replays [From, To) and returns what it decided. The guardrails and the inventory run on a
// private in-process JetStream server (no listener) removed at the end; the hub's NATS is read.
func Run(ctx context.Context, o Options) (Summary, error) {
	started := time.Now()
	if err := o.check(); err != nil {
		return Summary{}, err
	}
	cfg := o.Config
	g := o.Graph
	if g == nil && cfg.Graph.File != "" {
		var err error
		if g, err = graph.LoadFile(cfg.Graph.File); err != nil {
			return Summary{}, fmt.Errorf("graph: %w", err)
		}
	}
	if g == nil {
		return Summary{}, errors.New("backtest: no knowledge graph (graph.file in the hub config): no SKU to decide for")
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	priv, err := startPrivate(o.TempDir)
	if err != nil {
		return Summary{}, err
	}
	defer priv.close()

	clk := &clock{now: o.From.Add(-o.warmup())}
	icfg := cfg.Inventory
	icfg.Replicas, icfg.Now = 1, clk.Now
	inv, err := inventory.Open(ctx, priv.js, icfg, log)
	if err != nil {
		return Summary{}, fmt.Errorf("backtest inventory: %w", err)
	}
	defer inv.Close()
	gcfg := *cfg.Guard
	gcfg.Replicas, gcfg.Now = 1, clk.Now
	gd, err := guard.New(ctx, priv.js, gcfg, "backtest", log)
	if err != nil {
		return Summary{}, fmt.Errorf("backtest guard: %w", err)
	}
	defer gd.Close()

	st := newState(clk, cfg.Features, g, cfg.Ingest.Production, inv)
	r := &replay{
		o: o, clk: clk, st: st, ev: decide.NewEvaluator(cfg.Decide, g, st, cfg.Features),
		live:    &versions.Live{Change: audit.Change{Op: "backtest", Active: o.Rules.Version(), By: "backtest"}, Active: o.Rules},
		decided: idsUntil{}, deferred: idsUntil{},
		sum: Summary{From: o.From, To: o.To, ByOutcome: map[string]int{}, ByGuardrail: map[string]int{}, ByRule: map[string]int{},
			ByChannel: map[string]int{}, Reorder: o.reorder()},
	}
	r.evaluate = r.judge(gd)
	err = r.run(ctx, o.JS, log)
	if inspect != nil {
		inspect(r)
	}
	if err != nil {
		return r.sum, err
	}
	r.sum.Wall = time.Since(started)
	if r.sum.Wall > 0 {
		r.sum.Speed = float64(o.To.Sub(o.From)) / float64(r.sum.Wall)
	}
	return r.sum, nil
}

// inspect, when set (by tests), sees the replay's state once it has run.
var inspect func(*replay)

func (o *Options) check() error {
	var errs []error
	if o.JS == nil {
		errs = append(errs, errors.New("no connection to the hub's NATS"))
	}
	if o.Config == nil {
		errs = append(errs, errors.New("no hub config"))
	} else if o.Config.Guard == nil {
		errs = append(errs, errors.New("the hub config has no guard section: decisions are judged by the hub's guardrails (set at least guard.max_discount)"))
	}
	if o.Rules == nil {
		errs = append(errs, errors.New("no rule set"))
	}
	if o.From.IsZero() || o.To.IsZero() || !o.To.After(o.From) {
		errs = append(errs, fmt.Errorf("the span is empty: from %s to %s", o.From.Format(time.RFC3339), o.To.Format(time.RFC3339)))
	}
	if o.Warmup < 0 || o.Reorder < 0 {
		errs = append(errs, errors.New("warmup and reorder must not be negative"))
	}
	if o.NoReorder && o.Reorder != 0 {
		errs = append(errs, fmt.Errorf("a reorder window of %s and none (NoReorder)", o.Reorder))
	}
	if len(errs) > 0 {
		return fmt.Errorf("backtest: %w", errors.Join(errs...))
	}
	return nil
}

func (o *Options) warmup() time.Duration {
	if o.Warmup > 0 {
		return o.Warmup
	}
	return time.Duration(max(o.Config.Inventory.DemandDays, 1)) * 24 * time.Hour
}

func (o *Options) reorder() time.Duration {
	if o.Reorder > 0 || o.NoReorder {
		return o.Reorder
	}
	return DefaultReorder
}

// private is the in-process JetStream server the backtest keeps its guard and inventory on.
type private struct {
	ns  *server.Server
	nc  *nats.Conn
	js  jetstream.JetStream
	dir string
}

func startPrivate(parent string) (*private, error) {
	dir, err := os.MkdirTemp(parent, "gemba-backtest-")
	if err != nil {
		return nil, fmt.Errorf("backtest: private store: %w", err)
	}
	p := &private{dir: dir}
	// No listener at all: the backtest talks to it in process, nothing else can.
	ns, err := server.NewServer(&server.Options{ServerName: "gemba-backtest", DontListen: true, JetStream: true,
		StoreDir: dir, NoLog: true, NoSigs: true, MaxPayload: 8 << 20})
	if err != nil {
		p.close()
		return nil, fmt.Errorf("backtest: private server: %w", err)
	}
	p.ns = ns
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		p.close()
		return nil, errors.New("backtest: private server did not start")
	}
	if p.nc, err = nats.Connect("", nats.InProcessServer(ns), nats.Name("gemba-backtest")); err != nil {
		p.close()
		return nil, fmt.Errorf("backtest: private server: %w", err)
	}
	if p.js, err = jetstream.New(p.nc); err != nil {
		p.close()
		return nil, err
	}
	return p, nil
}

func (p *private) close() {
	if p.nc != nil {
		p.nc.Close()
	}
	if p.ns != nil {
		p.ns.Shutdown()
		p.ns.WaitForShutdown()
	}
	_ = os.RemoveAll(p.dir)
}

// SortDecisions orders decisions by time, SKU, site, channel and id (for printing and comparing).
func SortDecisions(ds []Decision) {
	slices.SortStableFunc(ds, func(a, b Decision) int {
		if c := a.Time.Compare(b.Time); c != 0 {
			return c
		}
		for _, p := range [][2]string{{a.SKU, b.SKU}, {a.Site, b.Site}, {a.Channel, b.Channel}, {a.ID, b.ID}} {
			if p[0] != p[1] {
				if p[0] < p[1] {
					return -1
				}
				return 1
			}
		}
		return 0
	})
}
