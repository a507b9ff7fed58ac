package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/gemba-io/gemba/hub"
	"github.com/gemba-io/gemba/hub/act"
	"github.com/gemba-io/gemba/hub/audit"
)

func whyCmd() *cobra.Command {
	var file string
	var asJSON bool
	c := &cobra.Command{
		Use:   "why DECISION_ID -c hub.yaml [--json]",
		Short: "Explain a decision: rule, version, inputs with lineage, guardrails, delivery",
		Long: `Print why a decision happened, from its records on the decision log: the rule set version and
the rule's condition, the inputs with their event times and lineage (agent, signal, window, agent
config version, stream sequence), the graph paths, every guardrail's assessment, the approval, a
shadow's disagreement or a canary, each event (decided, approved, ...) and the delivery state from
the action outbox. --json prints the records instead. Exits 1 when the decision has no record.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withHub(cmd, file, func(ctx context.Context, cfg *hub.Config, js jetstream.JetStream) error {
				return why(ctx, cmd.OutOrStdout(), cmd.ErrOrStderr(), js, cfg.Audit, cfg.Act, args[0], asJSON)
			})
		},
	}
	c.Flags().StringVarP(&file, "config", "c", "/etc/gemba/hub.yaml", "hub config (NATS, the decision log, the outbox)")
	c.Flags().BoolVar(&asJSON, "json", false, "print the decision's records as JSON")
	return c
}

// why explains one decision; actCfg nil: the delivery state is not looked up.
func why(ctx context.Context, out, errw io.Writer, js jetstream.JetStream, auditCfg audit.Config, actCfg *act.Config, id string, asJSON bool) error {
	say := func(err error) error {
		_, _ = io.WriteString(errw, err.Error()+"\n")
		return exitError{1}
	}
	log, err := audit.Bind(ctx, js, auditCfg, nil) // read only: never created nor changed here
	if err != nil {
		return say(err)
	}
	recs, err := log.History(ctx, id)
	if err != nil {
		return say(err)
	}
	if asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		if recs == nil {
			recs = []audit.Record{}
		}
		if err := enc.Encode(recs); err != nil {
			return say(err)
		}
	}
	if len(recs) == 0 {
		_, _ = io.WriteString(errw, "decision "+id+": no audit record (unknown id, or past the log's retention)\n")
		return exitError{1}
	}
	if asJSON {
		return nil
	}
	var delivery *act.Record
	if actCfg != nil {
		ob, err := act.Bind(ctx, js, *actCfg)
		if err != nil {
			return say(err)
		}
		rec, err := ob.Get(ctx, id)
		switch {
		case err == nil:
			delivery = &rec
		case !errors.Is(err, jetstream.ErrKeyNotFound):
			return say(err)
		}
	}
	audit.Explain(out, recs, delivery)
	return nil
}
