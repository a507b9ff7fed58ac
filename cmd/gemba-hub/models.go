package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/gemba-io/gemba/hub"
	"github.com/gemba-io/gemba/hub/learn/demand"
	"github.com/gemba-io/gemba/hub/learn/registry"
)

func modelsCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "models",
		Short: "List, inspect, promote, roll back, shadow and refit demand model sets",
		Long: `A model set is every SKU × site's demand forecast fitted at one time: the data range, per series
the method chosen by backtest, its parameters, its backtest MASE and bias, and the forecast with its
intervals (docs/hub-learning.md). Each set is stored once, as an immutable version (the hash of its
content), in the learn.buckets.sets object store. Every replica follows the active set for days of
cover; a shadow set's cover is recorded beside it. promote, rollback and shadow change the pointers
(compare-and-set), recording who (--by), why (--why), when and from → to. A VERSION may be given by
at least 6 of its hex digits.`,
	}
	c.AddCommand(modelsListCmd(), modelsShowCmd(), modelsPromoteCmd(), modelsRollbackCmd(), modelsShadowCmd(),
		modelsHistoryCmd(), modelsRefitCmd())
	return c
}

// withModels loads the hub config, connects and binds the model registry's buckets as they are,
// never created nor changed, whether the command reads or changes the models: their settings (the
// refit lock's TTL) may be a newer release's, and only the hub (gemba-hub run) creates and
// configures them. Missing, they are the error.
func withModels(cmd *cobra.Command, file string, fn func(ctx context.Context, cfg *hub.Config, js jetstream.JetStream, reg *registry.Registry) error) error {
	return withHub(cmd, file, func(ctx context.Context, cfg *hub.Config, js jetstream.JetStream) error {
		reg, err := hub.BindModels(ctx, js, cfg)
		if err != nil {
			cmd.PrintErrln(err)
			return exitError{1}
		}
		return fn(ctx, cfg, js, reg)
	})
}

// failed prints err and exits 1 (an exitError passes through).
func failed(cmd *cobra.Command, err error) error {
	var ee exitError
	if errors.As(err, &ee) {
		return err
	}
	cmd.PrintErrln(err)
	return exitError{1}
}

func modelsListCmd() *cobra.Command {
	var file string
	c := &cobra.Command{
		Use:   "list -c hub.yaml",
		Short: "List the stored model sets, oldest first, with which is active and shadow",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withModels(cmd, file, func(ctx context.Context, _ *hub.Config, _ jetstream.JetStream, reg *registry.Registry) error {
				metas, err := reg.List(ctx)
				if err != nil {
					return failed(cmd, err)
				}
				cur, _, err := reg.State(ctx)
				if err != nil {
					return failed(cmd, err)
				}
				printModelList(cmd.OutOrStdout(), metas, cur)
				st, ok, err := reg.LastRefit(ctx)
				if err != nil {
					return failed(cmd, err)
				}
				if ok && st.Err != "" {
					stored := ""
					if st.Version != "" {
						stored = ", its set " + st.Version + " stored but not in force"
					}
					fmt.Fprintf(cmd.OutOrStdout(), "the last refit failed (%s by %s%s): %s\n", st.At.Format(time.RFC3339), st.By, stored, st.Err)
				}
				return nil
			})
		},
	}
	c.Flags().StringVarP(&file, "config", "c", "/etc/gemba/hub.yaml", "hub config")
	return c
}

func printModelList(w io.Writer, metas []registry.Meta, cur registry.Change) {
	if len(metas) == 0 {
		fmt.Fprintln(w, "no model set stored yet (gemba-hub models refit fits one)")
		return
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VERSION\tSTATE\tCREATED\tBY\tDATA\tSERIES\tFAILED\tMASE\tMA MASE")
	for _, m := range metas {
		state := ""
		switch {
		case m.Version == cur.Active:
			state = "active"
		case m.Version == cur.Shadow:
			state = "shadow"
		case slices.Contains(cur.Previous, m.Version):
			state = "previous"
		}
		// No series backtested: no score at all, not a perfect one.
		mase, base := "-", "-"
		if m.Backtested != 0 {
			mase, base = fmt.Sprintf("%.3f", m.MASE), fmt.Sprintf("%.3f", m.Baseline)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s..%s\t%d\t%d\t%s\t%s\n", m.Version, state, m.Created.UTC().Format(time.RFC3339), m.By,
			m.From.Format("2006-01-02"), m.To.AddDate(0, 0, -1).Format("2006-01-02"), m.Series, m.Failed, mase, base)
	}
	_ = tw.Flush()
}

func modelsShowCmd() *cobra.Command {
	var file, sku, site string
	var asJSON bool
	c := &cobra.Command{
		Use:   "show VERSION|active|shadow [--sku SKU [--site SITE]] [--json] -c hub.yaml",
		Short: "Show a model set: data, methods chosen, backtest, and one SKU's models and forecast",
		Long: `Without --sku: the set's data range, what the series were built from, how many series chose
each method, and the mean backtest MASE against the 28-day moving average's. With --sku (and
--site): each of its series' method, parameters, backtest and daily forecast with its 80 %/95 %
intervals, and each that failed to fit with its error and what it counts as (its moving average
beside fitted series; with none fitted the SKU × site has no forecast and the hub counts it at the
inventory's moving average). --json prints the stored set (or {"series", "failed", "no_forecast"}
of the SKU) as JSON. Exit 1 when the set holds no series of the SKU.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if site != "" && sku == "" {
				cmd.PrintErrln("--site goes with --sku: give the SKU whose series at that site to show")
				return exitError{2}
			}
			return withModels(cmd, file, func(ctx context.Context, _ *hub.Config, _ jetstream.JetStream, reg *registry.Registry) error {
				v, err := resolveModel(ctx, reg, args[0])
				if err != nil {
					return failed(cmd, err)
				}
				s, err := reg.Load(ctx, v)
				if err != nil {
					return failed(cmd, err)
				}
				w := cmd.OutOrStdout()
				if sku == "" {
					if asJSON {
						return writeJSON(w, s)
					}
					printSet(w, s)
					return nil
				}
				var ms []registry.Model
				for _, m := range s.Series {
					if m.Key.SKU == sku && (site == "" || m.Key.Site == site) {
						ms = append(ms, m)
					}
				}
				// A series whose fit failed is the SKU's too: with its error and what it counts as.
				var fs []registry.Failure
				for _, f := range s.Failed {
					if f.Key.SKU == sku && (site == "" || f.Key.Site == site) {
						fs = append(fs, f)
					}
				}
				if len(ms) == 0 && len(fs) == 0 {
					cmd.PrintErrf("model set %s has no series for SKU %q%s\n", v, sku, map[bool]string{true: " at site " + site, false: ""}[site != ""])
					return exitError{1}
				}
				ix := registry.NewIndex(s)
				var none []string // the SKU's sites the set has no forecast for: every series failed
				for _, f := range fs {
					if !ix.Has(f.Key.SKU, f.Key.Site) && !slices.Contains(none, f.Key.Site) {
						none = append(none, f.Key.Site)
					}
				}
				if asJSON {
					if ms == nil {
						ms = []registry.Model{}
					}
					return writeJSON(w, struct {
						Series     []registry.Model   `json:"series"`
						Failed     []registry.Failure `json:"failed,omitempty"`
						NoForecast []string           `json:"no_forecast,omitempty"`
					}{ms, fs, none})
				}
				for _, m := range ms {
					printModel(w, s, m)
				}
				for _, f := range fs {
					printFailure(w, ix, f)
				}
				for _, st := range none {
					printNoForecast(w, sku, st)
				}
				return nil
			})
		},
	}
	c.Flags().StringVarP(&file, "config", "c", "/etc/gemba/hub.yaml", "hub config")
	c.Flags().StringVar(&sku, "sku", "", "show this SKU's series")
	c.Flags().StringVar(&site, "site", "", "only at this site (with --sku)")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

// resolveModel turns "active", "shadow" or a version prefix into a stored version.
func resolveModel(ctx context.Context, reg *registry.Registry, ref string) (string, error) {
	if ref == "active" || ref == "shadow" {
		cur, _, err := reg.State(ctx)
		if err != nil {
			return "", err
		}
		v := cur.Active
		if ref == "shadow" {
			v = cur.Shadow
		}
		if v == "" {
			return "", fmt.Errorf("no %s model set", ref)
		}
		return v, nil
	}
	return reg.Resolve(ctx, ref)
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func printSet(w io.Writer, s *registry.Set) {
	sum := s.Summary()
	fmt.Fprintf(w, "model set %s\n", s.Version)
	fmt.Fprintf(w, "created %s by %s", s.Created.UTC().Format(time.RFC3339), s.By)
	if s.Why != "" {
		fmt.Fprintf(w, ": %q", s.Why)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "data: %d days, %s to %s (%s), per SKU × site%s; forecast %d days from %s\n", s.Days, s.From.Format("2006-01-02"),
		s.To.AddDate(0, 0, -1).Format("2006-01-02"), s.Location, map[bool]string{true: " × channel", false: ""}[s.ByChannel], s.Horizon,
		s.To.Format("2006-01-02"))
	d := s.Demand
	fmt.Fprintf(w, "sales: %d counted, %d duplicates ignored, %d returns (%g units) left out, %d out of range, %d undecodable\n",
		d.Sales, d.Duplicates, d.Returns, d.ReturnedUnits, d.OutOfRange, d.Undecodable)
	if d.Trimmed {
		fmt.Fprintf(w, "the stream's oldest sale is %s: the series start there, not at history_days\n", d.Oldest.UTC().Format(time.RFC3339))
	}
	if sum.Backtested == 0 {
		fmt.Fprintf(w, "series: %d fitted, %d failed; backtested 0 (every series too short to backtest: no MASE)\n", sum.Series, sum.Failed)
	} else {
		fmt.Fprintf(w, "series: %d fitted, %d failed; backtested %d: mean MASE %.3f (28-day moving average %.3f)\n", sum.Series, sum.Failed,
			sum.Backtested, sum.MeanMASE, sum.MeanBaseline)
	}
	methods := make([]string, 0, len(sum.Methods))
	for m, n := range sum.Methods {
		methods = append(methods, fmt.Sprintf("%s %d", m, n))
	}
	slices.Sort(methods)
	fmt.Fprintf(w, "methods: %s\n", strings.Join(methods, ", "))
	ix := registry.NewIndex(s)
	for i, f := range s.Failed {
		if i == 10 {
			fmt.Fprintf(w, "... and %d more failed\n", len(s.Failed)-10)
			break
		}
		printFailure(w, ix, f)
	}
	var none []demand.Key
	for _, f := range s.Failed {
		k := demand.Key{SKU: f.Key.SKU, Site: f.Key.Site}
		if !ix.Has(k.SKU, k.Site) && !slices.Contains(none, k) {
			none = append(none, k)
		}
	}
	for i, k := range none {
		if i == 10 {
			fmt.Fprintf(w, "... and %d more SKU × sites without a forecast\n", len(none)-10)
			break
		}
		printNoForecast(w, k.SKU, k.Site)
	}
}

// printFailure prints a series whose fit failed and what Cover counts for it instead: its moving
// average beside its SKU × site's fitted series; nothing when none of them was fitted (the SKU ×
// site has no forecast: printNoForecast).
func printFailure(w io.Writer, ix *registry.Index, f registry.Failure) {
	fb := "no moving average either: its SKU × site's cover is incomplete (not used)"
	switch {
	case !ix.Has(f.Key.SKU, f.Key.Site):
		fb = "no series of its SKU × site fitted"
		if f.Fallback != nil {
			fb += fmt.Sprintf(" (its moving average, %g/day over %d days, is not used)", f.Fallback.Mean, f.Fallback.Days)
		}
	case f.Fallback != nil:
		fb = fmt.Sprintf("counted at its moving average, %g/day over %d days", f.Fallback.Mean, f.Fallback.Days)
	}
	fmt.Fprintf(w, "failed: %s: %s; %s\n", f.Key, f.Err, fb)
}

// printNoForecast says what a SKU × site none of whose series was fitted counts as.
func printNoForecast(w io.Writer, sku, site string) {
	fmt.Fprintf(w, "no forecast for %s: the set gives it no days of cover; the hub counts it at the inventory's moving average of its sales\n",
		demand.Key{SKU: sku, Site: site})
}

func printModel(w io.Writer, s *registry.Set, m registry.Model) {
	p := m.Model
	fmt.Fprintf(w, "%s: %s (α %.4g", m.Key, p.Method, p.Alpha)
	if p.Beta != 0 {
		fmt.Fprintf(w, ", β %.4g", p.Beta)
	}
	if p.Phi != 0 {
		fmt.Fprintf(w, ", φ %.4g", p.Phi)
	}
	fmt.Fprintf(w, ", MSE %.4g, n %d)\n", p.MSE, p.N)
	if m.Origins > 0 {
		fmt.Fprintf(w, "  backtest over %d origins: MASE %.3f, bias %+.3f (28-day moving average MASE %.3f)\n", m.Origins, m.MASE, m.Bias, m.BaselineMASE)
	} else {
		fmt.Fprintf(w, "  no backtest: %s\n", m.Note)
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  DAY\tMEAN\tLO80\tHI80\tLO95\tHI95")
	for j, pt := range m.Forecast {
		day := s.To.AddDate(0, 0, j).Format("2006-01-02")
		if !pt.HasInterval {
			fmt.Fprintf(tw, "  %s\t%.2f\t-\t-\t-\t-\n", day, pt.Mean)
			continue
		}
		fmt.Fprintf(tw, "  %s\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\n", day, pt.Mean, pt.Lo80, pt.Hi80, pt.Lo95, pt.Hi95)
	}
	_ = tw.Flush()
}

// modelChange is a command that changes the model pointers.
func modelChange(use, short, long string, args cobra.PositionalArgs, extra func(*cobra.Command),
	run func(ctx context.Context, cmd *cobra.Command, reg *registry.Registry, args []string, f *changeFlags) (registry.Change, error)) *cobra.Command {
	var f changeFlags
	c := &cobra.Command{
		Use: use, Short: short, Long: long, Args: args,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := f.check(cmd); err != nil {
				return err
			}
			return withModels(cmd, f.file, func(ctx context.Context, _ *hub.Config, _ jetstream.JetStream, reg *registry.Registry) error {
				ch, err := run(ctx, cmd, reg, args, &f)
				if errors.Is(err, registry.ErrUnchanged) {
					// As the rules' activate of the active version: a no-op, not a failure.
					fmt.Fprintf(cmd.OutOrStdout(), "model set %s is already active (change #%d): nothing recorded\n", orNone(ch.Active), ch.Seq)
					return nil
				}
				if err != nil {
					return failed(cmd, err)
				}
				printModelChange(cmd.OutOrStdout(), ch)
				return nil
			})
		},
	}
	f.add(c)
	if extra != nil {
		extra(c)
	}
	return c
}

func printModelChange(w io.Writer, c registry.Change) {
	fmt.Fprintf(w, "change #%d: %s\n", c.Seq, formatModelChange(c))
	fmt.Fprintf(w, "models now: active %s", orNone(c.Active))
	if c.Shadow != "" {
		fmt.Fprintf(w, ", shadow %s", c.Shadow)
	}
	fmt.Fprintln(w)
}

func formatModelChange(c registry.Change) string {
	s := fmt.Sprintf("%s %s → %s by %s", c.Op, orNone(c.From), orNone(c.To), c.By)
	if c.Why != "" {
		s += fmt.Sprintf(": %q", c.Why)
	}
	return s
}

func modelsPromoteCmd() *cobra.Command {
	return modelChange("promote VERSION --why TEXT [--by NAME] -c hub.yaml", "Make a stored model set the active one",
		`Every replica's days of cover use it within a second. The set it replaces goes on the rollback
stack; if it was the shadow, the shadow ends. A version that is not stored, or whose stored content is
not that version (corrupt), is refused. Promoting the set already active records nothing (exit 0).`,
		cobra.ExactArgs(1), nil,
		func(ctx context.Context, _ *cobra.Command, reg *registry.Registry, args []string, f *changeFlags) (registry.Change, error) {
			v, err := reg.Resolve(ctx, args[0])
			if err != nil {
				return registry.Change{}, err
			}
			return reg.Promote(ctx, v, f.by, f.why)
		})
}

func modelsRollbackCmd() *cobra.Command {
	return modelChange("rollback --why TEXT [--by NAME] -c hub.yaml", "Return to the previously active model set",
		`Make the set active before the current one active again (the rollback stack keeps 16).`,
		cobra.NoArgs, nil,
		func(ctx context.Context, _ *cobra.Command, reg *registry.Registry, _ []string, f *changeFlags) (registry.Change, error) {
			return reg.Rollback(ctx, f.by, f.why)
		})
}

func modelsShadowCmd() *cobra.Command {
	var clear bool
	return modelChange("shadow VERSION|--clear --why TEXT [--by NAME] -c hub.yaml",
		"Forecast with a model set beside the active one without using it",
		`The shadow set's days of cover are computed for the same positions and recorded beside the active
set's (Cover.Shadow), so the two can be compared before a promotion. --clear ends the shadow; with
no shadow set it is refused (exit 1) and nothing is recorded.`,
		cobra.MaximumNArgs(1), func(c *cobra.Command) { c.Flags().BoolVar(&clear, "clear", false, "end the shadow") },
		func(ctx context.Context, cmd *cobra.Command, reg *registry.Registry, args []string, f *changeFlags) (registry.Change, error) {
			if clear == (len(args) == 1) {
				cmd.PrintErrln("give a VERSION, or --clear")
				return registry.Change{}, exitError{2}
			}
			v := ""
			if !clear {
				var err error
				if v, err = reg.Resolve(ctx, args[0]); err != nil {
					return registry.Change{}, err
				}
			}
			return reg.Shadow(ctx, v, f.by, f.why)
		})
}

func modelsHistoryCmd() *cobra.Command {
	var file string
	c := &cobra.Command{
		Use:   "history -c hub.yaml",
		Short: "List every change of the active and shadow model sets, oldest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withModels(cmd, file, func(ctx context.Context, _ *hub.Config, _ jetstream.JetStream, reg *registry.Registry) error {
				cs, err := reg.Changes(ctx)
				if err != nil {
					return failed(cmd, err)
				}
				w := cmd.OutOrStdout()
				if len(cs) == 0 {
					fmt.Fprintln(w, "no model change yet")
				}
				for _, c := range cs {
					fmt.Fprintf(w, "#%-6d %s  %s\n", c.Seq, c.At.UTC().Format(time.RFC3339), formatModelChange(c))
				}
				return nil
			})
		},
	}
	c.Flags().StringVarP(&file, "config", "c", "/etc/gemba/hub.yaml", "hub config")
	return c
}

func modelsRefitCmd() *cobra.Command {
	var f changeFlags
	var promote string
	var verbose bool
	c := &cobra.Command{
		Use:   "refit --why TEXT [--promote activate|shadow|none] [--by NAME] -c hub.yaml",
		Short: "Fit a new model set now from the COMMERCE stream's sales",
		Long: `This command fits the set itself, as a scheduled refit on a replica would: it takes the refit
lock (refused while another refit holds it), reads learn.history_days of daily sales from the
COMMERCE stream, chooses and fits a method per series, stores the set and promotes, shadows or only
stores it (--promote; default learn.promote). The first set ever is promoted unless --promote none.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.check(cmd); err != nil {
				return err
			}
			return withModels(cmd, f.file, func(ctx context.Context, cfg *hub.Config, js jetstream.JetStream, reg *registry.Registry) error {
				lg := slog.New(slog.DiscardHandler)
				if verbose {
					lg = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
				}
				start := time.Now()
				res, err := reg.Refit(ctx, js, hub.RefitOptions(cfg, f.by, f.why, promote, lg))
				if err != nil {
					return failed(cmd, err)
				}
				w := cmd.OutOrStdout()
				sum := res.Set.Summary()
				fmt.Fprintf(w, "stored model set %s in %s: %d series (%d failed), data %s to %s, mean MASE %.3f (moving average %.3f)\n",
					res.Version, time.Since(start).Round(time.Millisecond), sum.Series, sum.Failed, res.Set.From.Format("2006-01-02"),
					res.Set.To.AddDate(0, 0, -1).Format("2006-01-02"), sum.MeanMASE, sum.MeanBaseline)
				if res.Change != nil {
					printModelChange(w, *res.Change)
				}
				return nil
			})
		},
	}
	f.add(c)
	c.Flags().StringVar(&promote, "promote", "", "activate, shadow or none (default learn.promote)")
	c.Flags().BoolVarP(&verbose, "verbose", "v", false, "log what the refit reads")
	return c
}
