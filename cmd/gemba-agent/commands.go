package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/gemba-io/gemba/agent"
	"github.com/gemba-io/gemba/config"
)

func runCmd() *cobra.Command {
	var file, dir, level, format string
	c := &cobra.Command{
		Use:   "run -c FILE",
		Short: "Run the agent until SIGINT or SIGTERM",
		Long: `Run the agent with the given config. It keeps running through uplink outages and collector
failures (buffering locally and retrying with backoff). On SIGINT or SIGTERM it stops the collectors
first, drains what they handed over into the buffer, and exits 0 within agent.shutdown_timeout.
On SIGHUP (or 'gemba-agent reload') it reads the config again: an invalid file is logged and the
running config stays; a valid one restarts only the collectors that changed. Changes to agent,
http, buffer, uplink or features are reported as "restart required" and applied at the next start.

Health: GET /healthz, /readyz (JSON, says why not ready), /status and /metrics (Prometheus) on
http.listen (default 127.0.0.1:7467).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// First of all: SIGHUP's default action kills the process on the spot, with no log
			// and no drain (systemctl reload, kill -HUP, a closed terminal). From here on it
			// reloads the config, or is logged and ignored while the agent starts or stops.
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			// The flags override the file after it is validated: check them as the file's
			// values are checked, naming the flag.
			if level != "" {
				if _, err := agent.ParseLevel(level); err != nil {
					return fmt.Errorf("--log-level: %w", err)
				}
			}
			if format != "" && format != "json" && format != "text" {
				return fmt.Errorf("--log-format: must be json or text, got %q", format)
			}
			load := func() (*agent.Config, error) {
				cfg, err := agent.LoadDir(file, dir, os.LookupEnv)
				if err != nil {
					return nil, err
				}
				// The flags override the file at every load, so a reload does not see them
				// as a change of the agent section.
				if level != "" {
					cfg.Agent.Log.Level = level
				}
				if format != "" {
					cfg.Agent.Log.Format = format
				}
				return cfg, nil
			}
			cfg, err := load()
			if err != nil {
				printProblems(cmd, file, err)
				return exitError{1}
			}
			lvl, err := agent.ParseLevel(cfg.Agent.Log.Level)
			if err != nil {
				return err
			}
			log := agent.NewLogger(os.Stderr, cfg.Agent.Log.Format, lvl)
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			// Before the collectors start: the first subscriptions are a peak of their own.
			if follow := agent.ApplyMemoryLimit(cfg.Agent.MemoryLimit, os.LookupEnv, log); follow != nil {
				var memWG sync.WaitGroup
				defer memWG.Wait()
				memCtx, memStop := context.WithCancel(ctx)
				defer memStop()
				memWG.Go(func() { follow(memCtx) })
			}
			a := agent.New(cfg, agent.Options{Logger: log, Reload: load, ConfigFile: file})
			var hupWG sync.WaitGroup
			defer hupWG.Wait()
			hupCtx, hupStop := context.WithCancel(ctx)
			defer hupStop()
			hupWG.Go(func() {
				for {
					select {
					case <-hupCtx.Done():
						return
					case <-hup:
						log.Info("SIGHUP: reloading the config", "file", file, "dir", dir)
						// The agent logs the outcome; an error here is only the agent stopping.
						if _, err := a.Reload(hupCtx); err != nil && hupCtx.Err() == nil {
							log.Error("reload failed", "err", err)
						}
					}
				}
			})
			err = a.Run(ctx)
			hupStop()
			if err != nil {
				log.Error("agent failed to start", "err", err)
				return exitError{1}
			}
			return nil
		},
	}
	c.Flags().StringVarP(&file, "config", "c", "/etc/gemba/agent.yaml", "config file")
	c.Flags().StringVar(&dir, "config-dir", "", "conf.d directory: each *.yaml in it adds collectors (one PLC or broker per file)")
	c.Flags().StringVar(&level, "log-level", "", "override agent.log.level (debug, info, warn, error)")
	c.Flags().StringVar(&format, "log-format", "", "override agent.log.format (json, text)")
	return c
}

func validateCmd() *cobra.Command {
	var file, dir string
	var print bool
	c := &cobra.Command{
		Use:   "validate -c FILE",
		Short: "Check a config file without connecting to anything",
		Long: `Check a config file: YAML syntax, unknown keys, types, durations, sizes, required fields,
unset or empty ${ENV} variables, files that cannot be read (TLS, certificates), a signal two
collectors produce, feature rules on signals nothing produces, and each collector's own rules.
Every problem is printed on its own line as FILE:LINE: PATH: MESSAGE. Exits 0 when the file is
valid, 1 otherwise. --print shows the effective config with secrets and URL credentials redacted.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := agent.LoadDir(file, dir, os.LookupEnv)
			if err != nil {
				printProblems(cmd, file, err)
				return exitError{1}
			}
			if print {
				out, err := cfg.Effective()
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), string(out))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: valid (config version %s, %d collectors)\n", file, cfg.Version(), len(cfg.Collectors))
			return nil
		},
	}
	c.Flags().StringVarP(&file, "config", "c", "/etc/gemba/agent.yaml", "config file")
	c.Flags().StringVar(&dir, "config-dir", "", "conf.d directory merged with the config file (as run --config-dir)")
	c.Flags().BoolVar(&print, "print", false, "print the effective config (defaults applied, secrets redacted)")
	return c
}

// printProblems writes each config problem on its own line (see config.Describe).
func printProblems(cmd *cobra.Command, file string, err error) {
	for _, l := range config.Describe(file, err) {
		cmd.PrintErrln(l)
	}
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print version, commit and Go version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			commit := agent.Commit
			if commit == "" {
				commit = "unknown"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "gemba-agent %s (commit %s, %s, %s/%s)\n", agent.Version, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		},
	}
}
