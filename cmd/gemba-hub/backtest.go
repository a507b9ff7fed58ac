package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/gemba-io/gemba/hub"
	"github.com/gemba-io/gemba/hub/decide/backtest"
	"github.com/gemba-io/gemba/hub/decide/rules"
)

func backtestCmd() *cobra.Command {
	var file, rulesFile, from, to string
	var warmup, reorder time.Duration
	var asJSON bool
	c := &cobra.Command{
		Use:   "backtest -c hub.yaml --rules FILE --from T1 [--to T2] [--json]",
		Short: "Replay the streams through a rule version and print what it would have decided, acting on nothing",
		Long: `Replay the agents' features and the COMMERCE stream (sales, inventory counts) of [T1, T2) through
the rule file, with the hub's own evaluation and guardrails (cooldown, caps, approval, inputs), and
print one line per decision: time, SKU, site, channel, rule, action and outcome, in the decision
log's words (fired, held, suppressed by a guardrail, awaiting_approval, held_out), then a summary.
Nothing is published to the hub's NATS and nothing is acted on: the guardrails and the inventory
run on a private in-process JetStream removed at the end, with the replay's clock (the latest event time seen) as their clock.

T1 and T2 are RFC 3339 times (2026-12-03T00:00:00Z) or durations from now (-24h); T2 defaults to
now and may not be later. Inputs before T1 only rebuild the state: the COMMERCE stream from
--warmup before it (the inventory's last count and its demand days), the agents' stream from the
longest feature max_age (and, for the units produced, from the last inventory count before T1).
A proposal the guard refuses as malformed is listed apart, not as a decision, as the hub logs it.
Inputs up to --reorder out of event-time order are applied in order; --reorder 0 applies each as
read, one read after later ones late, as the hub does.

Exit status: 0 after a replay, 1 when it could not run (config, rules, NATS), 2 on bad flags.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			now := time.Now().UTC()
			t1, err := parseWhen(from, now)
			if err != nil || from == "" {
				cmd.PrintErrf("--from: want an RFC 3339 time or a duration from now (-24h), got %q\n", from)
				return exitError{2}
			}
			t2 := now
			if to != "" {
				if t2, err = parseWhen(to, now); err != nil {
					cmd.PrintErrf("--to: want an RFC 3339 time or a duration from now (-1h), got %q\n", to)
					return exitError{2}
				}
			}
			if t2.After(now) {
				// Ticks past now would decide on state gone stale for want of inputs not received yet.
				cmd.PrintErrf("--to (%s) is in the future: a backtest replays what the hub has received (leave --to out for now)\n", t2.Format(time.RFC3339))
				return exitError{2}
			}
			if !t2.After(t1) {
				cmd.PrintErrf("--to (%s) must be after --from (%s)\n", t2.Format(time.RFC3339), t1.Format(time.RFC3339))
				return exitError{2}
			}
			if reorder < 0 || warmup < 0 {
				cmd.PrintErrf("--reorder (%s) and --warmup (%s) must not be negative\n", reorder, warmup)
				return exitError{2}
			}
			if rulesFile == "" {
				cmd.PrintErrln("--rules is required: the rule file to replay")
				return exitError{2}
			}
			cfg, err := load(cmd, file)
			if err != nil {
				return err
			}
			if !cfg.Decisions() {
				cmd.PrintErrf("%s: no guard section: a backtest judges each decision with the hub's guardrails (set at least guard.max_discount)\n", file)
				return exitError{1}
			}
			names := make([]string, 0, len(cfg.Features))
			for _, f := range cfg.Features {
				names = append(names, f.Name)
			}
			set, err := rules.LoadFile(rulesFile, rules.KnownFeatures(names...))
			if err != nil {
				cmd.PrintErrln(err)
				return exitError{1}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runBacktest(ctx, cmd.OutOrStdout(), cmd.ErrOrStderr(), cfg, set, t1, t2, warmup, reorder, asJSON)
		},
	}
	c.Flags().StringVarP(&file, "config", "c", "/etc/gemba/hub.yaml", "hub config (NATS, streams, features, inventory, decide, guard)")
	c.Flags().StringVar(&rulesFile, "rules", "", "rule file to replay")
	c.Flags().StringVar(&from, "from", "", "start of the replay: RFC 3339 time or a duration from now (-24h)")
	c.Flags().StringVar(&to, "to", "", "end of the replay, exclusive (default now)")
	c.Flags().DurationVar(&warmup, "warmup", 0, "how far before --from the COMMERCE stream is read to rebuild the inventory (default inventory.demand_days)")
	c.Flags().DurationVar(&reorder, "reorder", backtest.DefaultReorder, "inputs this far out of event-time order are applied in order (0: none, each applied as read)")
	c.Flags().BoolVar(&asJSON, "json", false, "print {\"decisions\": [...], \"summary\": {...}} as JSON")
	return c
}

// parseWhen reads an RFC 3339 time or a duration relative to now.
func parseWhen(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC(), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return time.Time{}, err
	}
	return now.Add(d), nil
}

// runBacktest connects to the hub's NATS, replays and prints.
func runBacktest(ctx context.Context, out, errw io.Writer, cfg *hub.Config, set *rules.Set, from, to time.Time,
	warmup, reorder time.Duration, asJSON bool) error {
	say := func(err error) error {
		fmt.Fprintln(errw, err)
		return exitError{1}
	}
	nc, js, err := hub.Dial(ctx, cfg)
	if err != nil {
		return say(err)
	}
	defer nc.Close()
	// Printed once the replay has run: a span it refuses (no input in it) prints no decision that
	// the warm-up's state alone made.
	var ds []backtest.Decision
	emit := func(d backtest.Decision) { ds = append(ds, d) }
	sum, err := backtest.Run(ctx, backtest.Options{JS: js, Config: cfg, Rules: set, From: from, To: to,
		Warmup: warmup, Reorder: reorder, NoReorder: reorder == 0, Out: emit, Log: slog.New(slog.NewTextHandler(errw, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		return say(err)
	}
	if !asJSON {
		fmt.Fprintf(out, "backtest of rule set %s (%s) from %s to %s\n", set.Name(), set.Version()[:12],
			from.Format(time.RFC3339), to.Format(time.RFC3339))
		for _, d := range ds {
			fmt.Fprintln(out, decisionLine(d))
		}
	}
	if asJSON {
		if ds == nil {
			ds = []backtest.Decision{}
		}
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		if err := enc.Encode(struct {
			Decisions []backtest.Decision `json:"decisions"`
			Summary   backtest.Summary    `json:"summary"`
		}{ds, sum}); err != nil {
			return say(err)
		}
		return nil
	}
	printSummary(out, sum)
	return nil
}

// decisionLine is one decision: event time, SKU, site, channel, rule, action, outcome.
func decisionLine(d backtest.Decision) string {
	action := string(d.Action.Kind)
	if d.Action.Discount > 0 {
		action += fmt.Sprintf(" %g%% %s", d.Action.Discount, d.Action.Duration)
	}
	return fmt.Sprintf("%s  %-16s %-12s %-10s %-24s %-18s %s", d.Time.Format(time.RFC3339), d.SKU, d.Site, d.Channel,
		d.Rule, action, d.Verdict())
}

func printSummary(out io.Writer, s backtest.Summary) {
	span := s.To.Sub(s.From)
	fmt.Fprintf(out, "\nreplayed %s (%s to %s) in %s: %.0f× real time\n", span, s.From.Format(time.RFC3339),
		s.To.Format(time.RFC3339), s.Wall.Round(time.Millisecond), s.Speed)
	fmt.Fprintf(out, "inputs: %d feature records, %d sales, %d inventory counts (%d malformed, %d refused by the inventory, %d feature records dated ahead of the hub's clock), reorder window %s\n",
		s.Features, s.Sales, s.Snapshots, s.Malformed, s.Refused, s.Future, s.Reorder)
	fmt.Fprintf(out, "evaluations: %d; decisions: %d; deferred for their inputs: %d\n", s.Evaluations, s.Decisions, s.Deferred)
	for _, w := range s.Warnings {
		fmt.Fprintf(out, "warning: %s\n", w)
	}
	if s.Invalid > 0 {
		// As the live engine: refused by the guard, logged, not decided (nor suppressed).
		fmt.Fprintf(out, "not decided: %d proposals the guard refused as malformed (the hub logs them and decides nothing)\n", s.Invalid)
		for _, p := range s.InvalidProposals {
			fmt.Fprintf(out, "  error: %s  %s  %s  %s  %s: %s\n", p.Time.Format(time.RFC3339), p.SKU, p.Site, p.Channel, p.Rule, p.Error)
		}
		if more := s.Invalid - len(s.InvalidProposals); more > 0 {
			fmt.Fprintf(out, "  … and %d more\n", more)
		}
	}
	if s.Undeliverable > 0 {
		fmt.Fprintf(out, "not decided: %d for channels act does not deliver on (add them to act.channels)\n", s.Undeliverable)
	}
	for _, g := range []struct {
		name string
		m    map[string]int
	}{{"outcome", s.ByOutcome}, {"guardrail", s.ByGuardrail}, {"rule", s.ByRule}, {"channel", s.ByChannel}} {
		if len(g.m) == 0 {
			continue
		}
		keys := make([]string, 0, len(g.m))
		for k := range g.m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		parts := make([]string, 0, len(keys))
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s %d", k, g.m[k]))
		}
		fmt.Fprintf(out, "  by %s: %s\n", g.name, strings.Join(parts, ", "))
	}
}
