package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub/learn/forecast"
	"github.com/gemba-io/gemba/hub/state/kvwatch"
)

// z80 is qnorm(0.9): the half-width of the central 80 % interval in standard deviations.
const z80 = 1.2815515655446004

// Index is a loaded set ready to answer Cover: per SKU × site, the forecast summed over its channels.
type Index struct {
	Set *Set
	loc *time.Location
	by  map[[2]string]*skuForecast
}

type skuForecast struct {
	methods     []forecast.Method
	mean, sd    []float64
	hasInterval bool
	fallbacks   []ChannelFallback
	incomplete  bool
}

// ChannelFallback is a channel whose fit failed, in a SKU × site's Cover: counted at its moving
// average (Mean a day over its last Days days), or Missing from the sum when even that could not be
// computed (the Cover is then Incomplete).
type ChannelFallback struct {
	Channel string  `json:"channel"`
	Err     string  `json:"error"`
	Mean    float64 `json:"mean"`
	Days    int     `json:"days,omitempty"`
	Missing bool    `json:"missing,omitempty"`
}

// NewIndex indexes s by SKU × site. Channels of a SKU × site add up: means add, and variances add
// (the channels' errors taken as independent); the sum has an interval only if every channel has one.
// A channel whose fit failed adds its moving average (no interval; FallbackMethod among the
// methods), or, without one, makes the SKU × site's forecast incomplete. A SKU × site none of whose
// series was fitted has no forecast (the inventory's live moving average is the better guess).
func NewIndex(s *Set) *Index {
	loc, err := time.LoadLocation(s.Location)
	if err != nil {
		loc = s.To.Location() // the offset the set was written with
	}
	ix := &Index{Set: s, loc: loc, by: map[[2]string]*skuForecast{}}
	for i := range s.Series {
		m := &s.Series[i]
		k := [2]string{m.Key.SKU, m.Key.Site}
		f := ix.by[k]
		if f == nil {
			f = &skuForecast{mean: make([]float64, len(m.Forecast)), sd: make([]float64, len(m.Forecast)), hasInterval: true}
			ix.by[k] = f
		}
		f.methods = append(f.methods, m.Model.Method)
		for j, p := range m.Forecast[:min(len(m.Forecast), len(f.mean))] {
			f.mean[j] += p.Mean
			if p.HasInterval {
				sd := (p.Hi80 - p.Mean) / z80
				f.sd[j] += sd * sd
			} else {
				f.hasInterval = false
			}
		}
	}
	for _, fl := range s.Failed {
		f := ix.by[[2]string{fl.Key.SKU, fl.Key.Site}]
		if f == nil {
			continue
		}
		cf := ChannelFallback{Channel: fl.Key.Channel, Err: fl.Err}
		if fb := fl.Fallback; fb != nil {
			cf.Mean, cf.Days = fb.Mean, fb.Days
			f.methods = append(f.methods, FallbackMethod)
			f.hasInterval = false
			for j := range f.mean {
				f.mean[j] += fb.Mean
			}
		} else {
			cf.Missing, f.incomplete = true, true
		}
		f.fallbacks = append(f.fallbacks, cf)
	}
	for _, f := range ix.by {
		for j := range f.sd {
			f.sd[j] = math.Sqrt(f.sd[j])
		}
	}
	return ix
}

// Has reports whether the set forecasts sku at site: whether a series of it was fitted (Cover
// answers for it). A SKU × site whose every series failed has none: the hub's cover falls back to
// the inventory's own moving average, and its failed series' fallbacks are not used.
func (ix *Index) Has(sku, site string) bool { return ix.by[[2]string{sku, site}] != nil }

// Cover is what a model set says about a SKU × site's stock.
type Cover struct {
	Version string            `json:"version"`
	Methods []forecast.Method `json:"methods"` // the chosen method of each channel's series (one without channels)
	// DailyMean is the forecast mean demand per day over what is left of the horizon from now.
	DailyMean float64 `json:"daily_mean"`
	// Days is the days of cover of the position from now (+Inf when no demand is forecast), StockOut
	// when it runs out (zero when never, or more than ~290 years away).
	Days     float64   `json:"days"`
	StockOut time.Time `json:"stock_out,omitzero"`
	// LowDays and HighDays are the days of cover if demand runs at the top (LowDays) or the bottom
	// (HighDays, floored at zero demand) of the 80 % interval; both equal Days without an interval.
	LowDays     float64 `json:"low_days"`
	HighDays    float64 `json:"high_days"`
	HasInterval bool    `json:"has_interval"`
	// DataTo is the end of the data the set was fitted on: the forecast starts there, so a Cover long
	// after it is an extrapolation (Stale says it is past the horizon).
	DataTo time.Time `json:"data_to"`
	Stale  bool      `json:"stale,omitempty"`
	// Fallbacks are the channels whose fit failed: counted at their moving average, or missing.
	// Incomplete says a channel is missing from the sum (its fit failed and it had no usable moving
	// average either): the demand is understated and the days overstated, so do not use it as a
	// forecast of the whole SKU × site.
	Fallbacks  []ChannelFallback `json:"fallbacks,omitempty"`
	Incomplete bool              `json:"incomplete,omitempty"`
	// Shadow is the shadow set's Cover of the same position, when a shadow set is followed.
	Shadow *Cover `json:"shadow,omitempty"`
}

// maxCoverDays is the most days of cover a StockOut date is given for: what a time.Duration holds.
const maxCoverDays = float64(math.MaxInt64) / float64(24*time.Hour)

// Cover computes the days of cover of position (units on hand) for sku at site at now.
func (ix *Index) Cover(sku, site string, position float64, now time.Time) (Cover, bool) {
	f := ix.by[[2]string{sku, site}]
	if f == nil {
		return Cover{}, false
	}
	// The forecast's step j is the calendar day To + j in the set's time zone (a day of 23 or 25
	// hours across a DST change is still one step). now falls on step d, of which frac has passed:
	// the position already reflects today's sales up to now, so only the rest of today's demand counts.
	lt := now.In(ix.loc)
	d := int(civilDay(lt) - civilDay(ix.Set.To.In(ix.loc)))
	frac := 0.0
	if d < 0 {
		d = 0 // before the forecast starts (a clock behind the data): count from its first day
	} else {
		midnight := time.Date(lt.Year(), lt.Month(), lt.Day(), 0, 0, 0, 0, ix.loc)
		frac = float64(lt.Sub(midnight)) / float64(midnight.AddDate(0, 0, 1).Sub(midnight))
	}
	c := Cover{Version: ix.Set.Version, Methods: f.methods, DataTo: ix.Set.To, HasInterval: f.hasInterval, Stale: d >= len(f.mean),
		Fallbacks: f.fallbacks, Incomplete: f.incomplete}
	start := min(d, len(f.mean)-1)
	mean := f.mean[start:]
	var sum float64
	for _, m := range mean {
		sum += math.Max(m, 0)
	}
	c.DailyMean = sum / float64(len(mean))
	c.Days = coverDays(position, mean, frac, func(j int) float64 { return mean[j] })
	c.LowDays, c.HighDays = c.Days, c.Days
	if f.hasInterval {
		sd := f.sd[start:]
		c.LowDays = coverDays(position, mean, frac, func(j int) float64 { return mean[j] + z80*sd[j] })
		c.HighDays = coverDays(position, mean, frac, func(j int) float64 { return mean[j] - z80*sd[j] })
	}
	// A time.Duration holds ~292 years: beyond that the stock never runs out for any purpose here
	// (and the conversion would wrap around into the past).
	if c.Days < maxCoverDays {
		c.StockOut = now.Add(time.Duration(c.Days * 24 * float64(time.Hour)))
	}
	return c, true
}

// civilDay numbers t's calendar day in t's location (a date, not 24 hours).
func civilDay(t time.Time) int64 {
	y, m, d := t.Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC).Unix() / 86400
}

// coverDays is forecast.DaysOfCover with a first day of which frac has already passed: the days until
// cumulative demand (rate(j) a day, negatives as zero) reaches stock; after the horizon the last day's
// rate goes on; +Inf when it is never positive, 0 without stock.
func coverDays(stock float64, mean []float64, frac float64, rate func(int) float64) float64 {
	if stock <= 0 {
		return 0
	}
	left, t, last := stock, 0.0, 0.0
	for j := range mean {
		length := 1.0
		if j == 0 {
			length = 1 - frac
		}
		r := math.Max(rate(j), 0)
		if r*length >= left {
			return t + left/r
		}
		left -= r * length
		t += length
		last = r
	}
	if last <= 0 {
		return math.Inf(1)
	}
	return t + left/last
}

// Live is the followed state: the change in force and its sets, indexed.
type Live struct {
	Change Change
	Active *Index // nil before any promotion
	Shadow *Index
}

// Cover is the active set's Cover with the shadow set's beside it; false without an active set or a
// forecast for the SKU × site.
func (l *Live) Cover(sku, site string, position float64, now time.Time) (Cover, bool) {
	if l == nil || l.Active == nil {
		return Cover{}, false
	}
	c, ok := l.Active.Cover(sku, site, position, now)
	if !ok {
		return Cover{}, false
	}
	if l.Shadow != nil {
		if sc, ok := l.Shadow.Cover(sku, site, position, now); ok {
			c.Shadow = &sc
		}
	}
	return c, true
}

// Follower keeps the live state of a registry: every replica runs one.
type Follower struct {
	live   atomic.Pointer[Live]
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Live returns the current state (nil before the first one is loaded).
func (f *Follower) Live() *Live {
	return f.live.Load()
}

// Cover answers from the current state (see Live.Cover).
func (f *Follower) Cover(sku, site string, position float64, now time.Time) (Cover, bool) {
	return f.Live().Cover(sku, site, position, now)
}

// Stop ends the follower and waits for it.
func (f *Follower) Stop() {
	f.cancel()
	f.wg.Wait()
}

// Follow watches the state key and loads the sets it names; fn (may be nil) is called after each new
// state is in force, on one goroutine. A set that does not load (corrupt, missing) is logged at
// ERROR with its version and the previous state stays, but for the shadow set: the state then applies
// without a shadow. A read that fails for a passing reason is retried until a newer state supersedes it.
func (r *Registry) Follow(fn func(*Live)) (*Follower, error) {
	cctx, cancel := context.WithCancel(context.Background())
	// The state key's changes, queued as a KV watch queues them: only the newest matters. kvwatch
	// follows through the loss of its consumer's node (a watch noticed it after 10 s).
	updates := make(chan jetstream.KeyValueEntry, 256)
	sctx, scancel := context.WithTimeout(cctx, time.Minute)
	stop, err := kvwatch.Follow(sctx, r.js, r.kv, func(e jetstream.KeyValueEntry) {
		select {
		case updates <- e:
		case <-cctx.Done():
		}
	}, kvwatch.Options{Key: stateKey, Log: r.lg})
	scancel()
	if err != nil {
		cancel()
		return nil, fmt.Errorf("watch model state (%s): %w", r.b.State, err)
	}
	f := &Follower{cancel: func() { cancel(); stop() }}
	cache := map[string]*Index{}
	f.wg.Go(func() {
		for {
			var e jetstream.KeyValueEntry
			select {
			case <-cctx.Done():
				return
			case v, ok := <-updates:
				if !ok {
					return
				}
				e = v
			}
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue // the end of the initial values, or a purge
			}
			// Only the newest state matters: skip to it when several are queued.
			for len(updates) > 0 {
				if n := <-updates; n != nil && n.Operation() == jetstream.KeyValuePut {
					e = n
				}
			}
			var c Change
			if err := json.Unmarshal(e.Value(), &c); err != nil {
				r.lg.Error("model state does not decode: the previous state stays", "revision", e.Revision(), "err", err)
				continue
			}
			live, ok := r.build(cctx, c, cache, func() bool { return len(updates) > 0 })
			if !ok {
				continue
			}
			f.live.Store(live)
			cache = map[string]*Index{}
			for _, ix := range []*Index{live.Active, live.Shadow} {
				if ix != nil {
					cache[ix.Set.Version] = ix
				}
			}
			if fn != nil {
				fn(live)
			}
		}
	})
	return f, nil
}

func (r *Registry) build(ctx context.Context, c Change, cache map[string]*Index, newer func() bool) (*Live, bool) {
	live := &Live{Change: c}
	for _, t := range []struct {
		version string
		ix      **Index
		shadow  bool
	}{{c.Active, &live.Active, false}, {c.Shadow, &live.Shadow, true}} {
		if t.version == "" {
			continue
		}
		if ix, ok := cache[t.version]; ok {
			*t.ix = ix
			continue
		}
		for wait := 50 * time.Millisecond; ; wait = min(wait*2, 2*time.Second) {
			lctx, cancel := context.WithTimeout(ctx, time.Minute)
			s, err := r.Load(lctx, t.version)
			cancel()
			if err == nil {
				*t.ix = NewIndex(s)
				break
			}
			if t.shadow && (errors.Is(err, ErrUnknownVersion) || errors.Is(err, errCorrupt)) {
				// The shadow only compares: the active set, which decisions use, applies without it.
				r.lg.Error("model state applied without its shadow: the shadow set does not load", "change", c.Seq, "op", c.Op,
					"version", t.version, "err", err)
				break
			}
			if errors.Is(err, ErrUnknownVersion) || errors.Is(err, errCorrupt) {
				r.lg.Error("model state not applied: a set does not load; the previous sets stay", "change", c.Seq, "op", c.Op,
					"version", t.version, "err", err)
				return nil, false
			}
			r.lg.Warn("model state: loading a set failed, retrying", "change", c.Seq, "version", t.version, "err", err)
			select {
			case <-ctx.Done():
				return nil, false
			case <-time.After(wait):
			}
			if newer() {
				return nil, false
			}
		}
	}
	return live, true
}
