// Command gemba-hub is the central decision hub: it consumes the agents' streams and commerce
// events, keeps features, inventory and the knowledge graph on JetStream, and serves them.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	// The time zones the guard's days and the forecasts' calendar days are counted in
	// (guard.zone, learn.timezone), built in: replicas on hosts with and without a zone
	// database (a minimal container) count the same days.
	_ "time/tzdata"

	"github.com/spf13/cobra"

	"github.com/gemba-io/gemba/config"
	"github.com/gemba-io/gemba/hub"
	"github.com/gemba-io/gemba/hub/decide/rules"
	"github.com/gemba-io/gemba/hub/state/graph"
	"github.com/gemba-io/gemba/internal/memlimit"
)

// exitError carries an exit code without printing anything more.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

func main() {
	if err := newRoot().Execute(); err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		fmt.Fprintln(os.Stderr, "gemba-hub:", err)
		var ue usageError
		if errors.As(err, &ue) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// newRoot builds the command tree.
func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "gemba-hub",
		Short: "Decision hub: agents' features, commerce events, inventory and the knowledge graph on NATS JetStream",
		Long: `gemba-hub consumes the features and heartbeats gemba-agent publishes to JetStream, and sales and
inventory events, and keeps the state a decision needs (latest features with lineage, inventory
position per SKU and site, the knowledge graph) in JetStream KV, shared by every replica.

Without nats.servers it runs an embedded NATS server with JetStream in hub.data_dir.
Start with 'gemba-hub validate -c hub.yaml', then 'gemba-hub run -c hub.yaml'.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(runCmd(), validateCmd(), versionCmd(), importCmd(), rulesCmd(), whyCmd(), backtestCmd(), actionsCmd(), modelsCmd(), killCmd())
	usageErrors(root)
	return root
}

// usageError is a command line that names no command, or gives it flags or arguments it does not
// take: exit status 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }

// usageErrors makes every usage error of c and its subcommands a usageError. A group of commands
// (rules, models, ...) refuses a subcommand it does not have: cobra shows the group's help and
// exits 0 for one, so a mistyped command looked done.
func usageErrors(c *cobra.Command) {
	c.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	if c.HasSubCommands() && !c.Runnable() {
		c.Args = cobra.ArbitraryArgs
		c.RunE = func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmd.Help()
			}
			msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
			if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
				msg += "; did you mean " + strings.Join(s, ", ") + "?"
			}
			return usageError{errors.New(msg)}
		}
	} else if args := c.Args; args != nil {
		c.Args = func(cmd *cobra.Command, a []string) error {
			if err := args(cmd, a); err != nil {
				return usageError{err}
			}
			return nil
		}
	}
	for _, sub := range c.Commands() {
		usageErrors(sub)
	}
}

func load(cmd *cobra.Command, file string) (*hub.Config, error) {
	cfg, err := hub.Load(file, os.LookupEnv)
	if err != nil {
		for _, l := range config.Describe(file, err) {
			cmd.PrintErrln(l)
		}
		return nil, exitError{1}
	}
	return cfg, nil
}

func runCmd() *cobra.Command {
	var file, level, format string
	var recreate []string
	c := &cobra.Command{
		Use:   "run -c FILE [--recreate STORE,...]",
		Short: "Run the hub until SIGINT or SIGTERM",
		Long: `Run one hub replica. On SIGINT or SIGTERM it stops pulling, finishes and acknowledges what it
took (anything unfinished is redelivered to another replica), and exits 0 within hub.shutdown_timeout.

HTTP (http.listen, default 127.0.0.1:9400): /healthz, /readyz (JSON, says why not ready),
/metrics (Prometheus) and the read API under /api/v1/.

The decision room's stores (the decision log, the rule versions, the guard's and the outbox's
buckets, the actions stream) are created together on a first start. When some are missing while
the others hold data (deleted, a partial restore), the hub refuses to start, naming each missing
store and what its loss means: restore it, or name it in --recreate to create it again empty
(logged at WARN). The flag acts on missing stores only; remove it once the hub has started.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := load(cmd, file)
			if err != nil {
				return err
			}
			if level != "" {
				cfg.Hub.Log.Level = level
			}
			if format != "" {
				cfg.Hub.Log.Format = format
			}
			log := cfg.Hub.Log.NewLogger(os.Stderr)
			follow := memlimit.Apply(cfg.Hub.MemoryLimit, hub.MemoryPolicy, os.LookupEnv, log)
			h, err := hub.New(cfg, hub.Options{Logger: log, Recreate: recreate})
			if err != nil {
				log.Error("hub cannot start", "err", err)
				return exitError{1}
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if follow != nil {
				go follow(ctx)
			}
			if err := h.Run(ctx); err != nil {
				log.Error("hub failed", "err", err)
				return exitError{1}
			}
			return nil
		},
	}
	c.Flags().StringVarP(&file, "config", "c", "/etc/gemba/hub.yaml", "config file")
	c.Flags().StringVar(&level, "log-level", "", "override hub.log.level (debug, info, warn, error)")
	c.Flags().StringVar(&format, "log-format", "", "override hub.log.format (json, text)")
	c.Flags().StringSliceVar(&recreate, "recreate", nil, "create these missing decision stores again empty (bucket or stream names, comma-separated); "+
		"what they held is lost")
	return c
}

func validateCmd() *cobra.Command {
	var file string
	var print bool
	c := &cobra.Command{
		Use:   "validate -c FILE",
		Short: "Check a config file (and the graph it names) without connecting to anything",
		Long: `Check a hub config: YAML syntax, unknown keys, types, durations, sizes, required fields, unset
${ENV} variables, files that cannot be read, feature definitions, and the knowledge graph file it
names. Every problem is printed on its own line as FILE:LINE: PATH: MESSAGE. Exits 0 when valid.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := load(cmd, file)
			if err != nil {
				return err
			}
			// The graph and the rule file are both checked: every problem is reported in one run.
			valid := true
			graphNote := "no graph"
			if cfg.Graph.File != "" {
				g, err := graph.LoadFile(cfg.Graph.File)
				if err != nil {
					for _, l := range config.Describe(cfg.Graph.File, err) {
						cmd.PrintErrln(l)
					}
					valid = false
				} else {
					graphNote = fmt.Sprintf("graph %s (%s)", g.Version(), g.Hash()[:12])
				}
			}
			rulesNote := ""
			if cfg.Decide.Rules != "" {
				names := make([]string, 0, len(cfg.Features))
				for _, f := range cfg.Features {
					names = append(names, f.Name)
				}
				set, err := rules.LoadFile(cfg.Decide.Rules, rules.KnownFeatures(names...))
				if err != nil {
					var fe *rules.FileError
					if errors.As(err, &fe) {
						for _, l := range rules.Describe(cfg.Decide.Rules, fe.Err) {
							cmd.PrintErrln(l)
						}
					} else {
						cmd.PrintErrln(err)
					}
					valid = false
				} else {
					rulesNote = fmt.Sprintf(", rules %s (%s)", set.Name(), set.Version()[:12])
				}
			}
			if !valid {
				return exitError{1}
			}
			for _, w := range cfg.Warnings() {
				cmd.PrintErrln(file + ": warning: " + w)
			}
			if print {
				out, err := cfg.Effective()
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), string(out))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: valid (config version %s, %d features, %s%s)\n", file, cfg.Version(), len(cfg.Features), graphNote, rulesNote)
			return nil
		},
	}
	c.Flags().StringVarP(&file, "config", "c", "/etc/gemba/hub.yaml", "config file")
	c.Flags().BoolVar(&print, "print", false, "print the effective config (defaults applied, secrets redacted)")
	return c
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print version, commit and Go version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintf(cmd.OutOrStdout(), "gemba-hub %s (commit %s, %s)\n", hub.Version, hub.Commit, runtime.Version())
		},
	}
}

func importCmd() *cobra.Command {
	c := &cobra.Command{Use: "import", Short: "Import commerce data from files"}
	var file, snapshot string
	inv := &cobra.Command{
		Use:   "inventory -c FILE INVENTORY.csv",
		Short: "Publish an inventory count (CSV) to the COMMERCE stream",
		Long: `Read an inventory CSV (header sku,site,on_hand,time and optionally snapshot_id; see
docs/commerce-format.md) and publish its rows to the COMMERCE stream of the NATS the hub config names
(its servers, or the embedded server's listen address of a running hub). Bad rows are listed with
their line and skipped; good rows are published. Importing the same file again changes nothing (the
rows keep their identity). Exits 0 when every row was stored, 1 otherwise.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := load(cmd, file)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			rep, err := hub.ImportInventory(ctx, cfg, args[0], snapshot)
			for _, e := range rep.Errors {
				cmd.PrintErrf("%s:%v\n", args[0], e)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: snapshot %s: %d rows, %d published, %d already stored, %d refused, %d failed\n",
				args[0], rep.SnapshotID, rep.Rows, rep.Published, rep.Duplicates, len(rep.Errors), rep.Failed)
			if err != nil {
				cmd.PrintErrf("%s: %v\n", args[0], err)
				return exitError{1}
			}
			if len(rep.Errors) > 0 || rep.Failed > 0 {
				return exitError{1}
			}
			return nil
		},
	}
	inv.Flags().StringVarP(&file, "config", "c", "/etc/gemba/hub.yaml", "hub config file (for NATS and the commerce stream)")
	inv.Flags().StringVar(&snapshot, "snapshot-id", "", "snapshot id when the file has no snapshot_id column (default: from the file's hash)")
	c.AddCommand(inv)
	return c
}
