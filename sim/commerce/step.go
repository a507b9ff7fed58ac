package commerce

import (
	"fmt"
	"math"
	"time"

	"github.com/gemba-io/gemba/hub/act"
	"github.com/gemba-io/gemba/hub/ingest/commerce"
)

// Seasonality: a relative order rate per hour of the day and per weekday (Sunday first), each scaled
// to a mean of 1 so that ordersPerDay stays the weekly mean.
var (
	daily = map[string][24]float64{
		// evenings online, little at night
		Web: {0.3, 0.2, 0.15, 0.1, 0.1, 0.15, 0.3, 0.5, 0.7, 0.8, 0.9, 1, 1.1, 1, 0.9, 0.9, 1, 1.2, 1.5, 1.8, 2, 1.8, 1.2, 0.6},
		// shops open 8-21, busiest after work
		Retail: {0, 0, 0, 0, 0, 0, 0, 0, 0.6, 0.8, 1, 1.2, 1.4, 1.2, 1, 1, 1.2, 1.6, 1.8, 1.4, 0.8, 0.4, 0, 0},
		// business hours
		Wholesale: {0, 0, 0, 0, 0, 0, 0, 0.5, 1.2, 1.5, 1.5, 1.3, 0.8, 1.2, 1.4, 1.2, 0.9, 0.5, 0, 0, 0, 0, 0, 0},
	}
	weekly = map[string][7]float64{
		Web:       {1.3, 0.9, 0.85, 0.85, 0.9, 1, 1.3},
		Retail:    {0, 1, 1, 1, 1.1, 1.3, 1.8}, // closed on Sunday
		Wholesale: {0, 1, 1, 1, 1, 1, 0},       // weekdays only
	}
)

func init() {
	for ch, d := range daily {
		var sum float64
		for _, v := range d {
			sum += v
		}
		for i := range d {
			d[i] *= 24 / sum
		}
		daily[ch] = d
	}
	for ch, w := range weekly {
		var sum float64
		for _, v := range w {
			sum += v
		}
		for i := range w {
			w[i] *= 7 / sum
		}
		weekly[ch] = w
	}
}

// Seasonality is the relative order rate of a channel at t (1 on average over a week).
func (s *Sim) Seasonality(channel string, t time.Time) float64 {
	lt := t.In(s.cfg.Location)
	return daily[channel][lt.Hour()] * weekly[channel][lt.Weekday()]
}

// Step advances the market by one plant step (Tick × Speed of simulated time) and returns the events
// it produced: the sales of the step, in time order per SKU × channel, then an inventory count when one
// falls due. They are also queued for Flush, unless Config.NoQueue.
func (s *Sim) Step() []commerce.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []commerce.Event
	from := s.now
	if s.steps == 0 {
		out = append(out, s.count(from)...) // the opening stock
	}
	to := from.Add(s.step)
	for _, k := range s.skus {
		for _, ch := range s.channels {
			out = s.sell(out, s.streams[[2]string{k.Name, ch}], from, to)
		}
	}
	// A count falls due at Start + n × SnapshotEvery; it is taken at the end of the step that reaches
	// it, so every sale before it is in it and every later sale is after it.
	if (to.Sub(s.cfg.Start) / s.cfg.SnapshotEvery) > (from.Sub(s.cfg.Start) / s.cfg.SnapshotEvery) {
		out = append(out, s.count(to)...)
	}
	s.now = to
	s.steps++
	if !s.cfg.NoQueue {
		s.queue = append(s.queue, out...)
	}
	return out
}

// sell draws the orders of one SKU × channel over (from, to], cut at hour boundaries so that a long
// step (accelerated time) still follows the hourly profile.
func (s *Sim) sell(out []commerce.Event, st *stream, from, to time.Time) []commerce.Event {
	for a := from; a.Before(to); {
		lt := a.In(s.cfg.Location)
		b := earliest(time.Date(lt.Year(), lt.Month(), lt.Day(), lt.Hour()+1, 0, 0, 0, s.cfg.Location), to)
		if !b.After(a) { // a daylight-saving turn
			b = earliest(a.Add(time.Hour), to)
		}
		disc := st.discount(a)
		rate := st.ordersPerDay * s.Seasonality(st.channel, a) * st.lift(disc) // orders per day
		n := poisson(st.rng, rate*b.Sub(a).Hours()/24)
		for range n {
			// (a, b]: a sale at the very start of the step belongs to the previous one's count
			at := b.Add(-time.Duration(st.rng.Float64() * float64(b.Sub(a))))
			qty := st.size()
			price := st.price
			if disc > 0 {
				price = math.Round(price*(1-disc/100)*100) / 100
			}
			s.orders++
			out = append(out, commerce.Sale{OrderID: fmt.Sprintf("%s-%s-%d", s.cfg.RunID, st.channel, s.orders), Line: 1,
				SKU: st.sku, Site: s.cfg.Plant.Site, Channel: st.channel, Quantity: qty, UnitPrice: price,
				Currency: s.cfg.Currency, Time: at.UTC()})
			s.sold[st.sku] += qty
		}
		a = b
	}
	return out
}

func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// size draws the units of one order: at least one, geometric around the mean (orders are mostly
// small, some large).
func (st *stream) size() float64 {
	if st.meanSize <= 1 {
		return 1
	}
	p := 1 / st.meanSize
	return 1 + math.Floor(math.Log(1-st.rng.Float64())/math.Log(1-p))
}

// discount is the promotion discount in force at t: the largest active one, none under a hold.
func (st *stream) discount(t time.Time) float64 {
	for _, h := range st.holds {
		if active(h, t) {
			return 0
		}
	}
	d := 0.0
	for _, p := range st.promos {
		if active(p, t) {
			d = max(d, p.discount)
		}
	}
	return d
}

func active(p promo, t time.Time) bool {
	return !t.Before(p.start) && (p.end.IsZero() || t.Before(p.end))
}

// count takes an ERP count of every SKU at t.
func (s *Sim) count(t time.Time) []commerce.Event {
	s.counts++
	id := fmt.Sprintf("%s-inv-%d", s.cfg.RunID, s.counts)
	produced := s.produced()
	out := make([]commerce.Event, 0, len(s.skus))
	for _, k := range s.skus {
		out = append(out, commerce.Snapshot{SnapshotID: id, SKU: k.Name, Site: s.cfg.Plant.Site, OnHand: s.onHand(k.Name, produced), Time: t.UTC()})
	}
	return out
}

// poisson draws a Poisson variate of mean m: Knuth's product of uniforms, in chunks of at most 30 so
// that exp(-m) stays far from underflow (a sum of Poissons is Poisson).
func poisson(rng interface{ Float64() float64 }, m float64) int {
	n := 0
	for m > 0 {
		c := min(m, 30)
		m -= c
		l, p := math.Exp(-c), 1.0
		for {
			p *= rng.Float64()
			if p <= l {
				break
			}
			n++
		}
	}
	return n
}

// Apply takes one action message of the hub (the body published on <prefix>.actions.promotions.<channel>
// or <prefix>.actions.holds.<channel>). A promotion applies its discount from Start to End of the
// simulated clock unless a hold on the same SKU × channel is in force; its "end" message ends it
// early. A hold lasts from Start to End (for good without an End). A message is taken once by its id.
func (s *Sim) Apply(m act.Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m.ID == "" {
		return fmt.Errorf("action %q: message id is empty", m.DecisionID)
	}
	if s.seenMsgs[m.ID] {
		return nil
	}
	st := s.streams[[2]string{m.SKU, m.Channel}]
	switch {
	case m.DecisionID == "":
		return fmt.Errorf("action message %q: decision_id is empty", m.ID)
	case s.bySKUHas(m.SKU) && st == nil:
		return fmt.Errorf("action %q: channel %q is not one the simulator sells on (%v)", m.DecisionID, m.Channel, s.channels)
	case st == nil:
		return fmt.Errorf("action %q: sku %q is not one of the plant's", m.DecisionID, m.SKU)
	case m.Site != "" && m.Site != s.cfg.Plant.Site:
		return fmt.Errorf("action %q: site %q is not the plant's (%s)", m.DecisionID, m.Site, s.cfg.Plant.Site)
	case m.Start.IsZero():
		return fmt.Errorf("action %q: start is empty", m.DecisionID)
	}
	switch {
	case m.Kind == act.Promote && m.Event == act.EventStart:
		if m.End.IsZero() || !m.End.After(m.Start) {
			return fmt.Errorf("action %q: a promotion needs an end after its start", m.DecisionID)
		}
		if math.IsNaN(m.Discount) || m.Discount < 0 || m.Discount > 100 {
			return fmt.Errorf("action %q: discount %v is not within 0..100", m.DecisionID, m.Discount)
		}
		st.promos[m.DecisionID] = promo{discount: m.Discount, start: m.Start, end: m.End}
	case m.Kind == act.Promote && m.Event == act.EventEnd:
		delete(st.promos, m.DecisionID)
	case m.Kind == act.Hold && m.Event == act.EventStart:
		st.holds[m.DecisionID] = promo{start: m.Start, end: m.End}
	case m.Kind == act.Hold && m.Event == act.EventEnd:
		delete(st.holds, m.DecisionID)
	default:
		return fmt.Errorf("action %q: kind %q with event %q is not a promotion or hold start or end", m.DecisionID, m.Kind, m.Event)
	}
	s.seenMsgs[m.ID] = true
	return nil
}

func (s *Sim) bySKUHas(sku string) bool { _, ok := s.bySKU[sku]; return ok }

// Discount is the discount in force for a SKU × channel at the simulated time t.
func (s *Sim) Discount(sku, channel string, t time.Time) float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.streams[[2]string{sku, channel}]
	if st == nil {
		return 0
	}
	return st.discount(t)
}
