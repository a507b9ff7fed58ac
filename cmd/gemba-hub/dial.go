package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/gemba-io/gemba/hub"
)

// withHub loads the hub config, connects to its NATS and runs fn, which ends on SIGINT or SIGTERM:
// what every command that reads or changes the hub's state starts with.
func withHub(cmd *cobra.Command, file string, fn func(ctx context.Context, cfg *hub.Config, js jetstream.JetStream) error) error {
	cfg, err := load(cmd, file)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	nc, js, err := hub.Dial(ctx, cfg)
	if err != nil {
		cmd.PrintErrln(err)
		return exitError{1}
	}
	defer nc.Close()
	return fn(ctx, cfg, js)
}
