package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/gemba-io/gemba/agent"
)

func reloadCmd() *cobra.Command {
	var file, dir, addr string
	var timeout time.Duration
	c := &cobra.Command{
		Use:   "reload -c FILE",
		Short: "Ask the running agent to reload its config (as SIGHUP does) and print what changed",
		Long: `Validate the config file (and --config-dir) here first: when it is invalid, print every
problem and exit 1 without asking the agent (which would refuse it and keep its config). Otherwise
POST /admin/reload to the agent's health listener (http.listen of the file, or --addr), with
http.admin_token as the bearer token when set, and print the result: collectors started,
restarted, stopped and unchanged, and sections that need a restart. The endpoint answers clients on
this host only. Exits 0 when the agent applied the config, 1 when it refused it, 2 when the agent
could not be reached.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := agent.LoadDir(file, dir, os.LookupEnv)
			if err != nil {
				printProblems(cmd, file, err)
				cmd.PrintErrln("not sent: the running agent keeps its config")
				return exitError{1}
			}
			if addr == "" {
				if !cfg.HTTP.Enabled {
					cmd.PrintErrln("http.enabled is false: no endpoint to ask; send SIGHUP instead (systemctl reload gemba-agent)")
					return exitError{2}
				}
				addr = loopback(cfg.HTTP.Listen)
			}
			req, err := http.NewRequestWithContext(cmd.Context(), http.MethodPost, "http://"+addr+"/admin/reload", nil)
			if err != nil {
				return err
			}
			if tok := cfg.HTTP.AdminToken.Value(); tok != "" {
				req.Header.Set("Authorization", "Bearer "+tok)
			}
			resp, err := (&http.Client{Timeout: timeout}).Do(req)
			if err != nil {
				cmd.PrintErrln("agent not reachable:", err)
				cmd.PrintErrln("is it running with this config's http.listen? SIGHUP reloads too: systemctl reload gemba-agent")
				return exitError{2}
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			var res agent.ReloadResult
			if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusUnprocessableEntity || json.Unmarshal(body, &res) != nil {
				cmd.PrintErrf("agent answered %s: %s\n", resp.Status, strings.TrimSpace(string(body)))
				return exitError{2}
			}
			printReload(cmd.OutOrStdout(), res)
			if !res.Applied {
				return exitError{1}
			}
			return nil
		},
	}
	c.Flags().StringVarP(&file, "config", "c", "/etc/gemba/agent.yaml", "config file")
	c.Flags().StringVar(&dir, "config-dir", "", "conf.d directory (as given to run)")
	c.Flags().StringVar(&addr, "addr", "", "health listener host:port (default: http.listen of the file)")
	c.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "how long to wait for the agent")
	return c
}

// loopback turns a listen address on every interface into one this host can dial.
func loopback(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
		if ip != nil && ip.To4() == nil {
			host = "::1"
		}
	}
	return net.JoinHostPort(host, port)
}

func printReload(w io.Writer, r agent.ReloadResult) {
	if !r.Applied {
		fmt.Fprintln(w, "reload refused: the running config stays (version "+r.ConfigVersion+")")
		for _, p := range r.Problems {
			fmt.Fprintln(w, "  "+p)
		}
		return
	}
	fmt.Fprintf(w, "reloaded: config version %s\n", r.ConfigVersion)
	for _, l := range []struct {
		what  string
		names []string
	}{{"started", r.Started}, {"restarted", r.Restarted}, {"stopped", r.Stopped}, {"unchanged", r.Unchanged}} {
		if len(l.names) > 0 {
			fmt.Fprintf(w, "  %-10s %s\n", l.what, strings.Join(l.names, ", "))
		}
	}
	if len(r.RestartRequired) > 0 {
		fmt.Fprintf(w, "  restart required for changes to: %s (not applied)\n", strings.Join(r.RestartRequired, ", "))
	}
}
