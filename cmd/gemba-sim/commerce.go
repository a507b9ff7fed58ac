package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub/ingest/commerce"
	"github.com/gemba-io/gemba/sim"
	simcommerce "github.com/gemba-io/gemba/sim/commerce"
)

// commerceFlags are the flags of the commerce simulator (off unless -commerce-nats is given).
type commerceFlags struct {
	url, prefix, channels *string
	every                 *time.Duration
	scale                 *float64
	slow                  *int
}

func addCommerceFlags(fs *flag.FlagSet) *commerceFlags {
	return &commerceFlags{
		url:      fs.String("commerce-nats", "", "NATS URL of the hub: publish the plant's sales and inventory counts to its COMMERCE stream and apply its promotions and holds (empty: no commerce simulator)"),
		prefix:   fs.String("commerce-prefix", "gemba", "subject prefix of the hub's commerce and actions subjects"),
		channels: fs.String("commerce-channels", "web,retail,wholesale", "sales channels (comma-separated, among web, retail, wholesale); the hub's commerce.channels must list them"),
		every:    fs.Duration("commerce-snapshot-every", 6*time.Hour, "simulated time between two inventory counts"),
		scale:    fs.Float64("commerce-scale", 1, "demand multiplier (1: about what the plant makes)"),
		slow:     fs.Int("commerce-slow-movers", 0, "SKUs with intermittent demand (0: one per line, negative: none)"),
	}
}

// start runs the commerce simulator beside the plant s until ctx ends or stop is called. It keeps
// the plant's step (Tick × Speed of simulated time every Tick) and counts the units the last machine
// of each line packs as produced. Its event times start at the wall time and advance with the
// simulated time, so with -speed above 1 they run ahead of the wall clock: the hub must then keep
// the same clock (a backtest), or its inventory refuses events too far in its future.
func (f *commerceFlags) start(ctx context.Context, plant sim.Config, s *sim.Sim, log *slog.Logger, stdout io.Writer, flushTimeout time.Duration) (stop func(), err error) {
	if *f.url == "" {
		return func() {}, nil
	}
	var channels []string
	for _, c := range strings.Split(*f.channels, ",") {
		if c = strings.TrimSpace(c); c != "" {
			channels = append(channels, c)
		}
	}
	if *f.every <= 0 {
		return nil, fmt.Errorf("-commerce-snapshot-every %s: must be positive", *f.every)
	}
	if *f.scale <= 0 {
		return nil, fmt.Errorf("-commerce-scale %v: must be positive", *f.scale)
	}
	ends := s.LineEnds()
	cs, err := simcommerce.New(simcommerce.Config{Plant: plant, Channels: channels, SnapshotEvery: *f.every, DemandScale: *f.scale,
		SlowMovers: *f.slow, Logger: log, Production: func() map[string]float64 {
			prod, _ := s.Production()
			out := map[string]float64{}
			for _, id := range ends {
				for sku, n := range prod[id].Parts {
					out[sku] += float64(n)
				}
			}
			return out
		}})
	if err != nil {
		return nil, fmt.Errorf("-commerce-*: %w", err)
	}
	ccfg := commerce.DefaultConfig()
	ccfg.Prefix, ccfg.Channels = *f.prefix, channels
	nc, err := nats.Connect(*f.url, nats.Name("gemba-sim-commerce"), nats.MaxReconnects(-1))
	if err != nil {
		return nil, fmt.Errorf("-commerce-nats %s: %w", *f.url, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	pub, err := commerce.NewPublisher(js, ccfg)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("-commerce-prefix/-commerce-channels: %w", err)
	}
	unsub, err := cs.Listen(nc, ccfg.Prefix)
	if err != nil {
		nc.Close()
		return nil, err
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = cs.Run(rctx, pub)
	}()
	fmt.Fprintf(stdout, "  commerce %s  (sales on %s, counts on %s every %s; actions from %s.actions.>; seed %d, step %s)\n",
		*f.url, commerce.SalesSubject(ccfg.Prefix, "<channel>"), commerce.InventorySubject(ccfg.Prefix), *f.every, ccfg.Prefix,
		cs.Config().Seed, cs.StepDuration())
	return func() {
		cancel()
		<-done
		// What was generated before the stop and not yet acknowledged is sent now: stopping must
		// not lose the ledger's tail (the events keep their identity, so a repeat is absorbed).
		fctx, fcancel := context.WithTimeout(context.Background(), flushTimeout)
		_ = cs.Flush(fctx, pub)
		fcancel()
		_ = unsub()
		nc.Close()
		sales, rows := cs.Ledger().Events()
		fmt.Fprintf(stdout, "commerce: %d sales and %d count rows acknowledged, %d not (simulated time %s)\n",
			sales, rows, cs.Pending(), cs.Now().Format(time.RFC3339))
	}, nil
}
