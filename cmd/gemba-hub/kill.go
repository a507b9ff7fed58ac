package main

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/gemba-io/gemba/hub"
	"github.com/gemba-io/gemba/hub/decide/guard"
)

// killCmd reads, throws or resets the kill switch straight in the guard's bucket, as
// PUT /api/v1/kill does: for an incident where the API is out of reach (or its token is).
func killCmd() *cobra.Command {
	var file, by, reason string
	var endLive bool
	c := &cobra.Command{
		Use:   "kill [on|off] -c hub.yaml --by NAME --reason WHY [--end-live]",
		Short: "Show, throw (on) or reset (off) the kill switch of every replica",
		Long: `Without an argument, print the kill switch. "on" throws it: every replica suppresses every
decision from its next one and cancels starts not yet out; with --end-live every promotion running
now is ended too (its end message and end webhook, once), even if the switch is reset at once: the
throw leaves an end-live mark, shown here, that ends what started before it. "off" resets it: decisions act again, and
a decision the switch suppressed is decided again at its unit's next evaluation. --by and --reason
are kept with the switch (GET /api/v1/kill and the console show them).`,
		Args:      cobra.MaximumNArgs(1),
		ValidArgs: []string{"on", "off"},
		RunE: func(cmd *cobra.Command, args []string) error {
			var on *bool
			if len(args) == 1 {
				switch args[0] {
				case "on", "off":
					v := args[0] == "on"
					on = &v
				default:
					cmd.PrintErrf("kill %s: want on or off\n", args[0])
					return exitError{2}
				}
			}
			switch {
			case on == nil && (endLive || by != "" || reason != ""):
				cmd.PrintErrln("kill: --by, --reason and --end-live go with on or off")
				return exitError{2}
			case on != nil && (by == "" || reason == ""):
				cmd.PrintErrln("kill: --by and --reason are required: the switch records who moved it and why")
				return exitError{2}
			case on != nil && endLive && !*on:
				cmd.PrintErrln("kill: --end-live (end every promotion running) applies only with on")
				return exitError{2}
			}
			return withHub(cmd, file, func(ctx context.Context, cfg *hub.Config, js jetstream.JetStream) error {
				if cfg.Guard == nil {
					cmd.PrintErrln(file + ": decisions are off (no guard section): there is no kill switch")
					return exitError{1}
				}
				// Bound, never created nor changed, as the other commands.
				g, err := guard.Bind(ctx, js, *cfg.Guard, "cli")
				if err != nil {
					cmd.PrintErrln(err)
					return exitError{1}
				}
				defer func() { _ = g.Close() }()
				if on != nil {
					if err := g.SetKillSwitch(ctx, guard.KillSwitch{On: *on, EndLive: endLive, By: by, Reason: reason}); err != nil {
						cmd.PrintErrln(err)
						return exitError{1}
					}
				}
				k, err := g.Kill(ctx)
				if err != nil {
					cmd.PrintErrln(err)
					return exitError{1}
				}
				state, verb := "off", "reset"
				switch {
				case k.On && k.EndLive:
					state, verb = "ON, and the promotions running are ended", "thrown"
				case k.On:
					state, verb = "ON: nothing acts", "thrown"
				}
				if k.By == "" {
					fmt.Fprintf(cmd.OutOrStdout(), "kill switch %s (never moved)\n", state)
					return nil
				}
				fmt.Fprintf(cmd.OutOrStdout(), "kill switch %s (%s by %s at %s: %s)\n", state, verb, k.By, k.At.Format(time.RFC3339), k.Reason)
				if m := k.Mark; m != nil {
					fmt.Fprintf(cmd.OutOrStdout(), "end-live mark %d: promotions whose start went out by %s are ended, reset or not (thrown by %s: %s)\n",
						m.Gen, m.At.Format(time.RFC3339), m.By, m.Reason)
				}
				return nil
			})
		},
	}
	c.Flags().StringVarP(&file, "config", "c", "/etc/gemba/hub.yaml", "hub config (NATS, the guard section)")
	c.Flags().StringVar(&by, "by", "", "who moves the switch (recorded)")
	c.Flags().StringVar(&reason, "reason", "", "why (recorded)")
	c.Flags().BoolVar(&endLive, "end-live", false, "with on: also end every promotion running now")
	return c
}
