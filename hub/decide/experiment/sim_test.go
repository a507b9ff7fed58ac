package experiment

import (
	"strconv"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub/act"
	"github.com/gemba-io/gemba/hub/ingest/commerce"
	"github.com/gemba-io/gemba/sim"
	simcommerce "github.com/gemba-io/gemba/sim/commerce"
)

// The tests score the package against sim/commerce, whose true response to a discount (TrueLift)
// the package never sees: only the units sold reach it, as they would reach the hub.

// monday is a Monday midnight UTC: simulated weeks start there.
var monday = time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)

type unitKey struct{ sku, channel string }

// market is a simulated market stepped one day at a time (the market still draws hour by hour).
type market struct {
	t   testing.TB
	s   *simcommerce.Sim
	seq int
}

func newMarket(t testing.TB, seed uint64, lines int, scale float64) *market {
	t.Helper()
	p := sim.DefaultConfig()
	p.Seed, p.Lines, p.Speed = seed, lines, 86400 // one step is one simulated day
	s, err := simcommerce.New(simcommerce.Config{Plant: p, Start: monday, SlowMovers: -1, DemandScale: scale, NoQueue: true})
	if err != nil {
		t.Fatal(err)
	}
	return &market{t: t, s: s}
}

func (m *market) units() []unitKey {
	var out []unitKey
	for _, k := range m.s.SKUs() {
		for _, ch := range m.s.Channels() {
			out = append(out, unitKey{k.Name, ch})
		}
	}
	return out
}

// days steps n days and returns the units sold per SKU × channel.
func (m *market) days(n int) map[unitKey]float64 {
	sold := map[unitKey]float64{}
	for range n {
		for _, ev := range m.s.Step() {
			if s, ok := ev.(commerce.Sale); ok {
				sold[unitKey{s.SKU, s.Channel}] += s.Quantity
			}
		}
	}
	return sold
}

// promote runs a promotion of discount on u for the next span of simulated time.
func (m *market) promote(u unitKey, discount float64, span time.Duration) {
	m.t.Helper()
	m.seq++
	now := m.s.Now()
	id := "d" + strconv.Itoa(m.seq)
	err := m.s.Apply(act.Message{ID: id, Event: act.EventStart, Action: act.Action{DecisionID: id, Kind: act.Promote,
		SKU: u.sku, Channel: u.channel, Discount: discount, Start: now, End: now.Add(span)}})
	if err != nil {
		m.t.Fatal(err)
	}
}
