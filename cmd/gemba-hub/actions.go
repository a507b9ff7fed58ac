package main

import (
	"context"
	"fmt"
	"io"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/gemba-io/gemba/hub"
	"github.com/gemba-io/gemba/hub/act"
	"github.com/gemba-io/gemba/hub/decide"
	"github.com/gemba-io/gemba/hub/decide/guard"
)

func actionsCmd() *cobra.Command {
	var file string
	c := &cobra.Command{Use: "actions", Short: "Inspect and replay action deliveries (the outbox)"}
	c.PersistentFlags().StringVarP(&file, "config", "c", "/etc/gemba/hub.yaml", "hub config (NATS, the act section)")
	withOutbox := func(cmd *cobra.Command, replay bool, fn func(ctx context.Context, o *act.Outbox) error) error {
		return withHub(cmd, file, func(ctx context.Context, cfg *hub.Config, js jetstream.JetStream) error {
			if cfg.Act == nil {
				cmd.PrintErrln(file + ": decisions are off (no guard section): there is no outbox")
				return exitError{1}
			}
			// Bound as it is, never created nor changed (its settings may be a newer release's); no
			// delivery loop here: a running hub delivers.
			o, err := act.Bind(ctx, js, *cfg.Act)
			if err != nil {
				cmd.PrintErrln(err)
				return exitError{1}
			}
			if replay {
				// The guard's kill switch (bound, like the outbox): a replay refuses while it is thrown.
				g, err := guard.Bind(ctx, js, *cfg.Guard, "cli")
				if err != nil {
					cmd.PrintErrln(err)
					return exitError{1}
				}
				defer func() { _ = g.Close() }()
				o.SetGuard(decide.DeliveryGuard{Guard: g})
			}
			return fn(ctx, o)
		})
	}
	dead := &cobra.Command{
		Use:   "dead -c hub.yaml",
		Short: "List the dead-lettered deliveries: decision id, phase, attempts, last error",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withOutbox(cmd, false, func(ctx context.Context, o *act.Outbox) error {
				return listDead(ctx, cmd.OutOrStdout(), cmd.ErrOrStderr(), o)
			})
		},
	}
	replay := &cobra.Command{
		Use:   "replay -c hub.yaml DECISION_ID...",
		Short: "Re-queue dead-lettered deliveries (their failed phase starts again; what was delivered is not sent again); refused while the kill switch is thrown, or when a promotion that gave back its caps and cooldown cannot reserve them again now",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withOutbox(cmd, true, func(ctx context.Context, o *act.Outbox) error {
				return replayDead(ctx, cmd.OutOrStdout(), cmd.ErrOrStderr(), o, args)
			})
		},
	}
	c.AddCommand(dead, replay)
	return c
}

// listDead prints the dead letters; exit 1 when a record could not be read (it may be one).
func listDead(ctx context.Context, out, errw io.Writer, o *act.Outbox) error {
	ids, unread := o.DeadLetters(ctx)
	for _, id := range ids {
		r, err := o.Get(ctx, id)
		if err != nil {
			fmt.Fprintf(out, "%s\t(unreadable: %v)\n", id, err)
			continue
		}
		fmt.Fprintf(out, "%s\t%s %s on %s\tphase %s\t%d attempts since %s\t%s\n", id, r.Action.Kind, r.Action.SKU,
			r.Action.Channel, r.Phase, r.Attempts, r.FirstAt.Format("2006-01-02 15:04:05Z07:00"), r.LastError)
	}
	if unread != nil {
		fmt.Fprintf(out, "%d dead-lettered found; records that could not be read may be dead-lettered too (stderr)\n", len(ids))
		fmt.Fprintln(errw, unread)
		return exitError{1}
	}
	fmt.Fprintf(out, "%d dead-lettered\n", len(ids))
	return nil
}

func replayDead(ctx context.Context, out, errw io.Writer, o *act.Outbox, ids []string) error {
	failed := 0
	for _, id := range ids {
		if err := o.Replay(ctx, id); err != nil {
			fmt.Fprintf(errw, "%s: %v\n", id, err)
			failed++
			continue
		}
		fmt.Fprintf(out, "%s: re-queued\n", id)
	}
	if failed > 0 {
		return exitError{1}
	}
	return nil
}
