package experiment

import (
	"context"
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub/ingest/commerce"
	"github.com/gemba-io/gemba/internal/natstest"
)

// regretRun is the bandit benchmark of issue 15 in the commerce simulator, in accelerated time: 4
// lines (12 SKUs × 3 channels), 8 weeks without promotion from which each unit's baseline per
// weekday is taken (what the engine's forecast would give), then 60 days in which every unit with
// expected sales runs a one-day promotion each day at the discount the bandit chooses, its outcome
// recorded the next morning through the real KV store. Regret is expected revenue lost against the
// best configured arm of each unit, from the simulator's TrueLift (which the bandit never sees):
// baseline units × unit price × (v(best) − v(chosen)), v(d) = TrueLift(d) × (1 − d/100). The fixed
// policy runs the middle arm every time on the same unit-days.
type regretResult struct {
	bandit, fixed float64               // cumulative regret, EUR
	byChannel     map[string][2]float64 // bandit, fixed
	decisions     int
	share         map[float64]int // choices per arm
	floor         int
	byBlock       [6][2]float64 // bandit, fixed per 10 days
}

// warmWeeks of sales without promotion give each unit's baseline per weekday: what the engine's
// forecast would give from its history (with 4 weeks, the baseline's own error — about 2 % on a
// retail unit — was a tenth to a fifth of the regret).
const warmWeeks = 8

func regretRun(t testing.TB, store *Store, id string, bandit BanditConfig, seed uint64) regretResult {
	t.Helper()
	ctx := context.Background()
	arms := bandit.sortedArms()
	mid := arms[len(arms)/2]
	cfg := Config{ID: id, Bandit: &bandit} // a new id per run: a fresh posterior
	if err := cfg.Err(); err != nil {
		t.Fatal(err)
	}
	m := newMarket(t, seed, 4, 1)
	units := m.units()

	// Warm-up: units per weekday (the mean of warmWeeks) and the undiscounted unit price per unit.
	base := map[unitKey]*[7]float64{}
	price := map[unitKey]float64{}
	for _, u := range units {
		base[u] = &[7]float64{}
	}
	for range 7 * warmWeeks {
		wd := m.s.Now().Weekday()
		for _, ev := range m.s.Step() {
			if s, ok := ev.(commerce.Sale); ok {
				u := unitKey{s.SKU, s.Channel}
				base[u][wd] += s.Quantity / warmWeeks
				price[u] = s.UnitPrice
			}
		}
	}

	res := regretResult{byChannel: map[string][2]float64{}, share: map[float64]int{}}
	value := func(u unitKey, d float64) float64 { return m.s.TrueLift(u.sku, u.channel, d) * (1 - d/100) }
	for day := range 60 {
		wd := m.s.Now().Weekday()
		end := m.s.Now().Add(24 * time.Hour)
		chosen := map[unitKey]float64{}
		for _, u := range units {
			b := base[u][wd]
			if b < 1 { // no sales expected (retail on Sunday, wholesale at the weekend): no promotion
				continue
			}
			c, err := store.Choose(ctx, cfg, fmt.Sprintf("day%d-%s-%s", day, u.sku, u.channel),
				Unit{SKU: u.sku, Channel: u.channel, Baseline: b, Position: 1e12})
			if err != nil {
				t.Fatal(err)
			}
			chosen[u] = c.Discount
			res.decisions++
			res.share[c.Discount]++
			if c.Reason == ReasonFloor {
				res.floor++
			}
			m.promote(u, c.Discount, 24*time.Hour)
			best := math.Inf(-1)
			for _, d := range arms {
				best = max(best, value(u, d))
			}
			w := b * price[u]
			rb, rf := w*(best-value(u, c.Discount)), w*(best-value(u, mid))
			res.bandit += rb
			res.fixed += rf
			res.byBlock[day/10][0] += rb
			res.byBlock[day/10][1] += rf
			bc := res.byChannel[u.channel]
			res.byChannel[u.channel] = [2]float64{bc[0] + rb, bc[1] + rf}
		}
		sold := m.days(1)
		for _, u := range units { // in a fixed order: the run is the same every time
			d, ok := chosen[u]
			if !ok {
				continue
			}
			o := Outcome{ID: fmt.Sprintf("day%d-%s-%s", day, u.sku, u.channel), SKU: u.sku, Channel: u.channel,
				Discount: d, Units: sold[u], Baseline: base[u][wd], End: end}
			if _, err := store.Record(ctx, cfg, o); err != nil {
				t.Fatal(err)
			}
		}
	}
	return res
}

func (r regretResult) log(t testing.TB, pool string) {
	t.Logf("pool %s: %d decisions (%d by floor), regret bandit %.0f EUR vs fixed mid discount %.0f EUR: %.1f %%",
		pool, r.decisions, r.floor, r.bandit, r.fixed, 100*r.bandit/r.fixed)
	chs := make([]string, 0, len(r.byChannel))
	for ch := range r.byChannel {
		chs = append(chs, ch)
	}
	slices.Sort(chs)
	for _, ch := range chs {
		v := r.byChannel[ch]
		t.Logf("  %-9s bandit %8.0f  fixed %8.0f", ch, v[0], v[1])
	}
	for i, v := range r.byBlock {
		t.Logf("  days %2d-%2d: bandit %8.0f  fixed %8.0f", 10*i, 10*i+9, v[0], v[1])
	}
	ds := make([]float64, 0, len(r.share))
	for d := range r.share {
		ds = append(ds, d)
	}
	slices.Sort(ds)
	for _, d := range ds {
		t.Logf("  arm %2.0f %%: %d choices", d, r.share[d])
	}
}

// Target (issue 15): after 60 simulated days the bandit's cumulative regret is at most 30 % of a
// fixed mid-level discount's. Fixed seed: the simulator's demand and every Thompson draw (seeded by
// the experiment and decision ids) repeat exactly. Other experiment ids draw otherwise: over five of
// them the default bandit measures 24.4-27.4 %, mean 25.7 % (BenchmarkBanditRegret; docs/BENCHMARKS.md).
func TestBanditRegretAgainstFixedMidDiscount(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	store, err := Open(context.Background(), js, DefaultStoreConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	r := regretRun(t, store, "regret-test", BanditConfig{Arms: []float64{5, 10, 20, 30, 40}}, 7)
	r.log(t, PoolUnit)
	if r.fixed <= 0 {
		t.Fatalf("the fixed mid discount has no regret (%v): the benchmark measures nothing", r.fixed)
	}
	if r.bandit > 0.3*r.fixed {
		t.Fatalf("bandit regret %.0f is %.1f %% of the fixed mid discount's %.0f, want ≤ 30 %%", r.bandit, 100*r.bandit/r.fixed, r.fixed)
	}
}

// BenchmarkBanditRegret runs the 60 simulated days of the test for several bandits, each with five
// experiment ids (five sets of Thompson draws on the same market), and reports the mean regret as a
// share of the fixed mid discount's, and the range (go test -run '^$' -bench BanditRegret
// -benchtime 1x).
func BenchmarkBanditRegret(b *testing.B) {
	n := natstest.JetStream(b)
	_, js := natstest.Connect(b, n.URL())
	store, err := Open(context.Background(), js, DefaultStoreConfig(), nil)
	if err != nil {
		b.Fatal(err)
	}
	arms := []float64{5, 10, 20, 30, 40}
	zero := 0.0
	for _, c := range []struct {
		name string
		cfg  BanditConfig
	}{
		{"unit", BanditConfig{Arms: arms}},
		{"unit-floor0.02", BanditConfig{Arms: arms, Floor: 0.02}},
		{"unit-vague-prior", BanditConfig{Arms: arms, PriorLift: &zero, PriorLiftSD: 2}},
		{"channel", BanditConfig{Arms: arms, Pool: PoolChannel}},
	} {
		b.Run(c.name, func(b *testing.B) {
			for i := range b.N {
				var sum, lo, hi float64
				const ids = 5
				for j := range ids {
					r := regretRun(b, store, fmt.Sprintf("regret-%s-%d-%d", c.name, i, j), c.cfg, 7)
					share := 100 * r.bandit / r.fixed
					sum += share
					if j == 0 || share < lo {
						lo = share
					}
					if j == 0 || share > hi {
						hi = share
					}
				}
				b.ReportMetric(sum/ids, "regret%ofFixed")
				b.ReportMetric(lo, "min%")
				b.ReportMetric(hi, "max%")
			}
		})
	}
}
