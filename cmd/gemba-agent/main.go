// Command gemba-agent runs on a plant gateway: it reads OPC UA and MQTT telemetry, buffers it durably,
// computes edge features and forwards everything to NATS JetStream.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	_ "github.com/gemba-io/gemba/collectors/all" // register collector types
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
		fmt.Fprintln(os.Stderr, "gemba-agent:", err)
		os.Exit(1)
	}
}

// newRoot builds the command tree.
func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "gemba-agent",
		Short: "Edge agent: OPC UA and MQTT telemetry, durably buffered, forwarded to NATS JetStream",
		Long: `gemba-agent runs on a plant gateway. It reads OPC UA and MQTT telemetry, writes every sample
durably to a local buffer, computes edge features, and forwards samples and features to NATS JetStream
with effectively-once delivery.

Start with 'gemba-agent validate -c agent.yaml', then 'gemba-agent run -c agent.yaml'.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(runCmd(), validateCmd(), reloadCmd(), versionCmd(), browseCmd(), probeCmd())
	return root
}
