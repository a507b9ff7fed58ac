package main

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	gembahub "github.com/gemba-io/gemba/hub"
	"github.com/gemba-io/gemba/hub/ingest/commerce"
	"github.com/gemba-io/gemba/sim"
	simcommerce "github.com/gemba-io/gemba/sim/commerce"
)

// demoCover is each SKU's opening stock in days of its demand. The seed-1 plant packs B-110 and
// C-220 first (over-stocked: a 10 % promotion while they are packed), then A-100 and B-210 (deeply
// over-stocked: the rules' 15 % clearance, above the guard's approval limit, waits for a person);
// C-120 and A-200 are nearly out, so a stop of their line puts them on hold.
var demoCover = map[string]float64{"B-110": 45, "A-100": 90, "C-120": 3, "C-220": 45, "B-210": 90, "A-200": 3}

// historyDays of sales are published before the plant starts: the hub's demand rate is the mean of
// the last seven complete days, and without it every SKU would have infinite cover.
const historyDays = 7

// market is the commerce simulator of the demo: the plant's SKUs sold on the hub's channels, on the
// plant's clock, publishing to the hub's COMMERCE stream and applying its promotions and holds.
type market struct {
	cs    *simcommerce.Sim
	pub   *commerce.Publisher
	nc    *nats.Conn
	unsub func() error
	site  string
	log   *slog.Logger

	cancel context.CancelFunc
	done   chan struct{}
}

// openMarket connects to the hub's NATS and builds the market of the plant s (whose goods ship from
// site, the agent's site: the hub keeps production and sales on the same position).
func openMarket(url string, hcfg *gembahub.Config, plant sim.Config, site string, s *sim.Sim, log *slog.Logger) (*market, error) {
	plant.Site = site
	ends := s.LineEnds()
	cs, err := simcommerce.New(simcommerce.Config{Plant: plant, Channels: hcfg.Commerce.Channels, SlowMovers: -1,
		InitialDaysOf: demoCover, Logger: log, Production: func() map[string]float64 {
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
		return nil, fmt.Errorf("commerce simulator: %w", err)
	}
	nc, err := nats.Connect(url, nats.Name("gemba-demo-commerce"), nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))
	if err != nil {
		return nil, fmt.Errorf("commerce simulator: %s: %w", url, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	pub, err := commerce.NewPublisher(js, hcfg.Commerce)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("commerce simulator: the hub's commerce section: %w", err)
	}
	return &market{cs: cs, pub: pub, nc: nc, site: site, log: log, done: make(chan struct{})}, nil
}

// backfill publishes the market's opening count and the last historyDays complete days of sales
// (one line per SKU × channel × day, from a second simulator with the same seed stepping an hour at
// a time), then starts listening to the hub's actions. It returns the units sold per day per SKU.
func (m *market) backfill(ctx context.Context, prefix string) (map[string]float64, error) {
	// The opening count first: the history is before it, so it adds to the demand rate and not to
	// the position (sales first would show every SKU out of stock for a moment, and the rules
	// would hold them).
	m.cs.Step()
	if err := m.cs.Flush(ctx, m.pub); err != nil {
		return nil, err
	}
	today := m.cs.Config().Start.UTC().Truncate(24 * time.Hour)
	plant := m.cs.Config().Plant
	plant.Tick, plant.Speed = time.Hour, 1
	hist, err := simcommerce.New(simcommerce.Config{Plant: plant, Channels: m.cs.Channels(), SlowMovers: -1, NoQueue: true,
		Start: today.AddDate(0, 0, -historyDays), RunID: m.cs.Config().RunID + "-history"})
	if err != nil {
		return nil, fmt.Errorf("commerce history: %w", err)
	}
	type key struct {
		sku, channel string
		day          time.Time
	}
	sums := map[key]*commerce.Sale{}
	for range historyDays * 24 {
		for _, ev := range hist.Step() {
			sale, ok := ev.(commerce.Sale)
			if !ok {
				continue // its counts are not the live market's stock
			}
			k := key{sale.SKU, sale.Channel, sale.Time.UTC().Truncate(24 * time.Hour)}
			s := sums[k]
			if s == nil {
				s = &commerce.Sale{OrderID: fmt.Sprintf("%s-%s-%s-%s", hist.Config().RunID, k.day.Format("20060102"), k.sku, k.channel),
					Line: 1, SKU: k.sku, Site: m.site, Channel: k.channel, Currency: sale.Currency, Time: k.day.Add(12 * time.Hour)}
				sums[k] = s
			}
			// The day's revenue over its units: the mean price paid.
			s.UnitPrice = (s.UnitPrice*s.Quantity + sale.UnitPrice*sale.Quantity) / (s.Quantity + sale.Quantity)
			s.Quantity += sale.Quantity
		}
	}
	keys := make([]key, 0, len(sums))
	for k := range sums {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].day.Before(keys[j].day) })
	evs := make([]commerce.Event, 0, len(keys))
	perDay := map[string]float64{}
	for _, k := range keys {
		s := sums[k]
		s.UnitPrice = math.Round(s.UnitPrice*100) / 100
		evs = append(evs, *s)
		perDay[k.sku] += s.Quantity / historyDays
	}
	for i, r := range m.pub.Publish(ctx, evs) {
		if r.Err != nil {
			return nil, fmt.Errorf("commerce history: sale %s: %w", evs[i].MsgID(), r.Err)
		}
	}
	if m.unsub, err = m.cs.Listen(m.nc, prefix); err != nil {
		return nil, err
	}
	return perDay, nil
}

// run steps the market on the plant's tick until stop.
func (m *market) run(ctx context.Context) {
	ctx, m.cancel = context.WithCancel(ctx)
	go func() {
		defer close(m.done)
		_ = m.cs.Run(ctx, m.pub)
	}()
}

// close stops the market, sends what it generated and was not yet acknowledged, and disconnects.
func (m *market) close() {
	if m.cancel != nil {
		m.cancel()
		<-m.done
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := m.cs.Flush(ctx, m.pub); err != nil {
			m.log.Warn("commerce simulator: final flush", "err", err)
		}
		cancel()
	}
	if m.unsub != nil {
		_ = m.unsub()
	}
	m.nc.Close()
}

// describeCover renders the opening stock for the header.
func describeCover(perDay map[string]float64) string {
	skus := make([]string, 0, len(demoCover))
	for s := range demoCover {
		skus = append(skus, s)
	}
	sort.Strings(skus)
	var parts []string
	for _, s := range skus {
		parts = append(parts, fmt.Sprintf("%s %g days (%.0f/day)", s, demoCover[s], perDay[s]))
	}
	return strings.Join(parts, ", ")
}
