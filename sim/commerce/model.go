// Package commerce simulates the market of the simulated plant's SKUs: sales on web, retail and
// wholesale with seasonality, slow movers, ERP counts and promotions whose true response it keeps.
package commerce

import (
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gemba-io/gemba/hub/ingest/commerce"
	"github.com/gemba-io/gemba/sim"
)

// Channels the simulator models; each has its own daily and weekly profile and order sizes.
const (
	Web       = "web"
	Retail    = "retail"
	Wholesale = "wholesale"
)

// Config shapes the simulated market. The zero value of a field takes its default.
type Config struct {
	// Plant is the plant whose lines make the SKUs (three per line, as sim.NewPlant names them), whose
	// Site the goods ship from and whose Tick × Speed is one step: the simulator keeps the plant's clock.
	Plant sim.Config
	// Seed of the demand; 0 takes Plant.Seed (sim.DefaultConfig's seed when that is 0 too).
	Seed uint64
	// Channels sold on, among web, retail and wholesale; default all three.
	Channels []string
	// Start is the simulated time of step 0; zero is the wall time at New, to the second.
	Start time.Time
	// Location is where the hours and weekdays of the seasonality are read; default UTC.
	Location *time.Location
	// SnapshotEvery is the simulated time between two ERP counts (the first is taken at Start);
	// default 6h. Counts fall on Start + n × SnapshotEvery, at the end of the step that reaches it.
	SnapshotEvery time.Duration
	// SlowMovers is how many SKUs have intermittent demand (rare, large orders); default one per line,
	// chosen by the seed. Negative: none.
	SlowMovers int
	// DemandScale multiplies every order rate (1 when 0): the default market sells about what the
	// plant makes; tests and small demos scale it down.
	DemandScale float64
	// InitialDays is the initial stock in days of mean demand (10 when 0).
	InitialDays float64
	// InitialDaysOf overrides InitialDays for some SKUs, so a scenario can open with one SKU
	// over-stocked and another nearly out (the demo does). Every key must be a SKU of the plant.
	InitialDaysOf map[string]float64
	// Currency of the prices; default EUR.
	Currency string
	// RunID prefixes order and snapshot ids; default "sim<seed>-<Start as Unix seconds>", or with a zero
	// Start "sim<seed>-<wall time at New as Unix nanoseconds>", so a restarted
	// simulator never reuses an identity the hub has already seen (it would be dropped as a duplicate).
	RunID string
	// Production returns the units produced per SKU since the simulator started (the plant's finished
	// units); nil means nothing is produced. The ERP counts add it to the stock.
	Production func() map[string]float64
	// NoQueue makes Step only return its events, for models and backtests that do not publish
	// through Flush (a long run would otherwise keep every event queued).
	NoQueue bool
	Logger  *slog.Logger
}

// SKU is one stock-keeping unit of the plant and how it sells.
type SKU struct {
	Name      string
	Line      string  // the production line that makes it
	ListPrice float64 // per unit, before channel terms and discounts
	Slow      bool    // a slow mover: intermittent demand
}

// stream is one SKU × channel: its random stream, order rate and response to promotions.
type stream struct {
	sku, channel string
	rng          *rand.Rand
	ordersPerDay float64 // mean over the week, before seasonality and promotions
	meanSize     float64 // mean units per order
	price        float64 // unit price before discount
	liftMax      float64 // TrueLift at an infinite discount is 1 + liftMax
	liftScale    float64 // discount (percent) at which 63 % of liftMax is reached
	promos       map[string]promo
	holds        map[string]promo
}

type promo struct {
	discount   float64
	start, end time.Time // end zero: open-ended (a hold without an end)
}

// Sim is the commerce simulator. Step it alongside the plant, Apply the hub's actions, publish with
// Flush (or Run). Safe for concurrent use.
//
// The demand is deterministic: with the same seed, start, step and actions applied at the same steps,
// Step returns the same events. Each SKU × channel draws from its own random stream, so a promotion on
// one leaves every other series untouched. The response to a discount (TrueLift) is the simulator's
// secret: the hub only sees the sales it causes, so lift estimates and bandits can be scored against it.
type Sim struct {
	cfg      Config
	log      *slog.Logger
	step     time.Duration
	skus     []SKU
	bySKU    map[string]int
	channels []string

	mu       sync.Mutex
	streams  map[[2]string]*stream
	steps    uint64
	now      time.Time
	orders   uint64
	counts   uint64
	sold     map[string]float64 // units sold per SKU, every event generated so far
	initial  map[string]float64
	queue    []commerce.Event // generated, not yet acknowledged by the stream
	seenMsgs map[string]bool
	ledger   *Ledger
}

// SKUsOfPlant lists the SKUs of the plant of cfg, by line: the names sim.NewPlant gives each line
// (TestSKUsMatchThePlant checks them against what the plant's machines actually run).
func SKUsOfPlant(cfg sim.Config) (lines []string, skus [][]string) {
	p := sim.NewPlant(cfg) // it applies the defaults
	for l := range p.Config.Lines {
		lines = append(lines, fmt.Sprintf("line%d", l+1))
		skus = append(skus, []string{fmt.Sprintf("A-%d00", l+1), fmt.Sprintf("B-%d10", l+1), fmt.Sprintf("C-%d20", l+1)})
	}
	return lines, skus
}

// New builds the market of cfg; nothing happens before Step.
func New(cfg Config) (*Sim, error) {
	p := sim.NewPlant(cfg.Plant)
	cfg.Plant = p.Config
	if cfg.Seed == 0 {
		cfg.Seed = cfg.Plant.Seed
	}
	if cfg.Seed == 0 {
		cfg.Seed = sim.DefaultConfig().Seed
	}
	if len(cfg.Channels) == 0 {
		cfg.Channels = []string{Web, Retail, Wholesale}
	}
	runID := fmt.Sprintf("sim%d-%d", cfg.Seed, cfg.Start.Unix())
	if cfg.Start.IsZero() {
		wall := time.Now()
		cfg.Start = wall.UTC().Truncate(time.Second)
		// Nanoseconds of the wall clock, never twice the same in a process: a simulator restarted
		// within the second of the last start must not reuse its identities.
		runID = fmt.Sprintf("sim%d-%d", cfg.Seed, wallStamp(wall))
	}
	if cfg.Location == nil {
		cfg.Location = time.UTC
	}
	if cfg.SnapshotEvery == 0 {
		cfg.SnapshotEvery = 6 * time.Hour
	}
	if cfg.DemandScale == 0 {
		cfg.DemandScale = 1
	}
	if cfg.InitialDays == 0 {
		cfg.InitialDays = 10
	}
	if cfg.Currency == "" {
		cfg.Currency = "EUR"
	}
	if cfg.RunID == "" {
		cfg.RunID = runID
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	var errs []error
	seen := map[string]bool{}
	for i, ch := range cfg.Channels {
		switch {
		case ch != Web && ch != Retail && ch != Wholesale:
			errs = append(errs, fmt.Errorf("commerce simulator: channels[%d]: %q: the simulator models %s, %s and %s", i, ch, Web, Retail, Wholesale))
		case seen[ch]:
			errs = append(errs, fmt.Errorf("commerce simulator: channels[%d]: %q given twice", i, ch))
		}
		seen[ch] = true
	}
	if cfg.SnapshotEvery < 0 {
		errs = append(errs, fmt.Errorf("commerce simulator: snapshot_every %s: must be positive", cfg.SnapshotEvery))
	}
	if cfg.DemandScale < 0 || math.IsNaN(cfg.DemandScale) || math.IsInf(cfg.DemandScale, 0) {
		errs = append(errs, fmt.Errorf("commerce simulator: demand_scale %v: must be a positive number", cfg.DemandScale))
	}
	if cfg.InitialDays < 0 || math.IsNaN(cfg.InitialDays) || math.IsInf(cfg.InitialDays, 0) {
		errs = append(errs, fmt.Errorf("commerce simulator: initial_days %v: must be a positive number", cfg.InitialDays))
	}
	for sku, d := range cfg.InitialDaysOf {
		if d < 0 || math.IsNaN(d) || math.IsInf(d, 0) {
			errs = append(errs, fmt.Errorf("commerce simulator: initial_days_of[%s] %v: must be a positive number", sku, d))
		}
	}
	if err := commerce.CheckToken(cfg.RunID); err != nil {
		errs = append(errs, fmt.Errorf("commerce simulator: run id %q: %w", cfg.RunID, err))
	}
	if err := commerce.CheckToken(cfg.Plant.Site); err != nil {
		errs = append(errs, fmt.Errorf("commerce simulator: plant site %q: %w", cfg.Plant.Site, err))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	step := time.Duration(float64(cfg.Plant.Tick) * cfg.Plant.Speed)
	if step <= 0 {
		return nil, fmt.Errorf("commerce simulator: plant tick %s × speed %v is not a positive step", cfg.Plant.Tick, cfg.Plant.Speed)
	}
	s := &Sim{cfg: cfg, log: cfg.Logger, step: step, bySKU: map[string]int{}, channels: slices.Clone(cfg.Channels),
		streams: map[[2]string]*stream{}, now: cfg.Start, sold: map[string]float64{}, initial: map[string]float64{},
		seenMsgs: map[string]bool{}, ledger: newLedger()}
	lines, skus := SKUsOfPlant(cfg.Plant)
	setup := rand.New(rand.NewPCG(cfg.Seed, 0x5eed)) // prices and slow movers; the streams have their own
	for l, names := range skus {
		for _, n := range names {
			s.bySKU[n] = len(s.skus)
			s.skus = append(s.skus, SKU{Name: n, Line: lines[l], ListPrice: math.Round((5+setup.Float64()*45)*100) / 100})
		}
	}
	slow := cfg.SlowMovers
	if slow == 0 {
		slow = len(lines)
	}
	for _, i := range setup.Perm(len(s.skus))[:max(0, min(slow, len(s.skus)))] {
		s.skus[i].Slow = true
	}
	for sku := range cfg.InitialDaysOf {
		if _, ok := s.bySKU[sku]; !ok {
			return nil, fmt.Errorf("commerce simulator: initial_days_of: %q is not a SKU of the plant", sku)
		}
	}
	for _, k := range s.skus {
		days := cfg.InitialDays
		if d, ok := cfg.InitialDaysOf[k.Name]; ok {
			days = d
		}
		for _, ch := range s.channels {
			st := newStream(cfg.Seed, k, ch, cfg.DemandScale)
			s.streams[[2]string{k.Name, ch}] = st
			s.initial[k.Name] += st.ordersPerDay * st.meanSize * days
		}
		s.initial[k.Name] = math.Round(s.initial[k.Name])
	}
	return s, nil
}

var lastStamp atomic.Int64

// wallStamp is t in Unix nanoseconds, after every stamp taken before in this process.
func wallStamp(t time.Time) int64 {
	for {
		last, ns := lastStamp.Load(), t.UnixNano()
		ns = max(ns, last+1)
		if lastStamp.CompareAndSwap(last, ns) {
			return ns
		}
	}
}

// Channel terms: the share of a fast SKU's demand, the mean order size, the price factor and how much
// a discount can lift the channel (web shoppers respond most, wholesale buyers least).
var terms = map[string]struct{ share, size, price, lift float64 }{
	Web:       {0.3, 2, 1, 1.2},
	Retail:    {0.4, 3, 1, 0.7},
	Wholesale: {0.3, 200, 0.7, 0.3},
}

// fastUnitsPerDay is a fast SKU's mean demand over every channel: about what a line of the default
// plant packs per SKU (a pack cycle of 1.5-3.5 s, running about three quarters of the time).
const fastUnitsPerDay = 8000

func newStream(seed uint64, k SKU, channel string, scale float64) *stream {
	h := fnv.New64a()
	h.Write([]byte(k.Name + "\x00" + channel))
	rng := rand.New(rand.NewPCG(seed, h.Sum64()))
	t := terms[channel]
	st := &stream{sku: k.Name, channel: channel, rng: rng, meanSize: t.size, price: math.Round(k.ListPrice*t.price*100) / 100,
		promos: map[string]promo{}, holds: map[string]promo{}}
	units := fastUnitsPerDay * t.share * (0.6 + 0.8*rng.Float64())
	if k.Slow {
		// Rare, lumpy orders: a few a week, each a large one, so most days sell nothing.
		st.meanSize = 10 * max(1, t.size/4)
		st.ordersPerDay = 0.15 + 0.2*rng.Float64()
	} else {
		st.ordersPerDay = units / st.meanSize
	}
	st.ordersPerDay *= scale
	st.liftMax = t.lift * (0.5 + rng.Float64())
	st.liftScale = 10 + 20*rng.Float64()
	return st
}

// TrueLift is the factor by which a discount (percent, 0-100) multiplies the demand of a SKU on a
// channel: the simulator's ground truth, never published. It is 1 without a discount, and 0 for a
// SKU or channel the simulator does not sell.
func (s *Sim) TrueLift(sku, channel string, discount float64) float64 {
	st := s.streams[[2]string{sku, channel}] // the map and the parameters never change after New
	if st == nil {
		return 0
	}
	return st.lift(discount)
}

func (st *stream) lift(discount float64) float64 {
	if discount <= 0 || math.IsNaN(discount) {
		return 1
	}
	return 1 + st.liftMax*(1-math.Exp(-min(discount, 100)/st.liftScale))
}

// SKUs lists the SKUs with their line, price and whether they are slow movers.
func (s *Sim) SKUs() []SKU { return slices.Clone(s.skus) }

// Channels lists the channels sold on.
func (s *Sim) Channels() []string { return slices.Clone(s.channels) }

// Site is where the goods ship from (the plant's site).
func (s *Sim) Site() string { return s.cfg.Plant.Site }

// StepDuration is the simulated time of one step: the plant's Tick × Speed.
func (s *Sim) StepDuration() time.Duration { return s.step }

// Config is the configuration with its defaults applied.
func (s *Sim) Config() Config { return s.cfg }

// Now is the simulated time: Start plus the steps taken. Give it to the hub as its clock in
// accelerated runs (inventory.Config.Now), so event times are never in the hub's future.
func (s *Sim) Now() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.now
}

// Steps is the number of steps taken.
func (s *Sim) Steps() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.steps
}

// Ledger is the record of what the stream acknowledged.
func (s *Sim) Ledger() *Ledger { return s.ledger }

// OnHand is the true stock of a SKU now: initial stock + produced − sold (it may be negative: the
// simulator takes back orders rather than lose sales).
func (s *Sim) OnHand(sku string) float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.onHand(sku, s.produced())
}

func (s *Sim) produced() map[string]float64 {
	if s.cfg.Production == nil {
		return nil
	}
	return s.cfg.Production()
}

func (s *Sim) onHand(sku string, produced map[string]float64) float64 {
	return s.initial[sku] + produced[sku] - s.sold[sku]
}
