package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/gemba-io/gemba/agent"
	"github.com/gemba-io/gemba/collectors"
	"github.com/gemba-io/gemba/collectors/opcua"
	"github.com/gemba-io/gemba/config"
)

func browseCmd() *cobra.Command {
	var (
		o                  opcua.BrowseOptions
		password, passFile string
		level, security    string
	)
	c := &cobra.Command{
		Use:   "browse ENDPOINT",
		Short: "Walk an OPC UA server's address space and print YAML node entries",
		Long: `Connect to an OPC UA server, walk its address space from --root down to --depth levels, and print
ready-to-paste YAML 'nodes:' entries for every variable, each once: namespace-URI node ids (nsu=..., stable
when the server re-indexes namespaces), data types and suggested signal names. The Server object (the
server's own diagnostics) is skipped unless --include-server.

The password comes from --password-file or the environment variable GEMBA_OPCUA_PASSWORD, never from
the command line.`,
		Example: `  gemba-agent browse opc.tcp://10.0.0.5:4840 --depth 3
  gemba-agent browse opc.tcp://plc:4840 --policy Basic256Sha256 --mode SignAndEncrypt \
      --username gemba --password-file /etc/gemba/opcua.pw --prefix line1.press. > nodes.yaml`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Endpoint = args[0]
			if security != "" {
				policy, mode, _ := strings.Cut(security, "/")
				o.Security.Policy = policy
				if mode != "" {
					o.Security.Mode = mode
				}
			}
			switch {
			case passFile != "":
				b, err := os.ReadFile(passFile)
				if err != nil {
					return fmt.Errorf("password file: %w", err)
				}
				o.Auth.Password = config.NewSecret(strings.TrimRight(string(b), "\r\n"))
			case password != "":
				o.Auth.Password = config.NewSecret(password)
			}
			lvl, err := agent.ParseLevel(level)
			if err != nil {
				return err
			}
			o.Logger = agent.NewLogger(os.Stderr, "text", lvl)
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return opcua.Browse(ctx, o, cmd.OutOrStdout())
		},
	}
	password = os.Getenv("GEMBA_OPCUA_PASSWORD")
	f := c.Flags()
	f.StringVar(&o.Root, "root", "", "node to start from (default the Objects folder, i=85)")
	f.IntVar(&o.Depth, "depth", 5, "levels below --root")
	f.StringVar(&security, "security", "", "POLICY[/MODE], e.g. Basic256Sha256/SignAndEncrypt or None (overrides --policy and --mode)")
	f.StringVar(&o.Security.Policy, "policy", "auto", "security policy: None, Basic256Sha256, ..., or auto")
	f.StringVar(&o.Security.Mode, "mode", "auto", "security mode: None, Sign, SignAndEncrypt or auto")
	f.StringVar(&o.Auth.Username, "username", "", "user name (password from --password-file or GEMBA_OPCUA_PASSWORD)")
	f.StringVar(&passFile, "password-file", "", "file holding the password")
	f.StringVar(&o.Certificate.CertFile, "cert", "", "client certificate (default: generated and kept in --data-dir)")
	f.StringVar(&o.Certificate.KeyFile, "key", "", "client private key")
	f.StringVar(&o.Trust.Dir, "trust-dir", "", "directory of trusted server certificates")
	f.StringSliceVar(&o.Trust.Thumbprints, "trust-thumbprint", nil, "SHA-1 thumbprint of a trusted server certificate (repeatable)")
	f.BoolVar(&o.Trust.TrustOnFirstUse, "trust-on-first-use", false, "accept and remember the server certificate seen first")
	f.StringVar(&o.DataDir, "data-dir", filepath.Join(os.TempDir(), "gemba-browse"), "where a generated client certificate is kept")
	f.StringVar(&o.SignalPrefix, "prefix", "", "prefix for suggested signal names, e.g. line1.press.")
	f.BoolVar(&o.IncludeServer, "include-server", false, "also walk the Server object (i=2253): the server's own status and diagnostics")
	f.DurationVar(&o.Timeout, "timeout", 10*time.Second, "connect and request timeout")
	f.StringVar(&level, "log-level", "warn", "log level")
	o.Agent = "gemba-browse"
	return c
}

func probeCmd() *cobra.Command {
	var file, dir, level string
	c := &cobra.Command{
		Use:   "probe -c FILE",
		Short: "Connect every OPC UA collector of a config and check each configured node",
		Long: `For each OPC UA collector in the config: connect, show the endpoint and security chosen, the trust
state of the server certificate and the server's operation limits, and check that every configured
node exists and is readable. Exits 1 with the list of problems if there are any.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := agent.LoadDir(file, dir, os.LookupEnv)
			if err != nil {
				printProblems(cmd, file, err)
				return exitError{1}
			}
			lvl, err := agent.ParseLevel(level)
			if err != nil {
				return err
			}
			log := agent.NewLogger(os.Stderr, "text", lvl)
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			var problems []string
			n := 0
			for _, spec := range cfg.Collectors {
				oc, ok := spec.Settings.(*opcua.Config)
				if !ok || spec.Disabled {
					continue
				}
				n++
				ps, err := opcua.Probe(ctx, spec.Name, oc, collectors.Deps{
					Logger:  log.With("collector", spec.Name),
					DataDir: filepath.Join(cfg.Agent.DataDir, spec.Name),
					Agent:   cfg.Agent.ID,
				}, cmd.OutOrStdout())
				if err != nil {
					return err
				}
				problems = append(problems, ps...)
			}
			out := cmd.OutOrStdout()
			if n == 0 {
				fmt.Fprintf(out, "%s: no OPC UA collectors to probe\n", file)
				return nil
			}
			if len(problems) > 0 {
				fmt.Fprintf(out, "\n%d problem(s):\n", len(problems))
				for _, p := range problems {
					fmt.Fprintf(out, "  - %s\n", p)
				}
				return exitError{1}
			}
			fmt.Fprintf(out, "\nall %d OPC UA collector(s) OK\n", n)
			return nil
		},
	}
	c.Flags().StringVarP(&file, "config", "c", "/etc/gemba/agent.yaml", "config file")
	c.Flags().StringVar(&dir, "config-dir", "", "conf.d directory (as given to run): its OPC UA collectors are probed too")
	c.Flags().StringVar(&level, "log-level", "warn", "log level")
	return c
}
