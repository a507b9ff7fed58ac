package commerce

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/gemba-io/gemba/hub/act"
	"github.com/gemba-io/gemba/hub/ingest/commerce"
	"github.com/gemba-io/gemba/sim"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// monday is a Monday midnight UTC: weeks of the tests start there.
var monday = time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)

// hourly is a plant stepping one simulated hour per step.
func hourly(seed uint64) sim.Config {
	c := sim.DefaultConfig()
	c.Seed, c.Speed = seed, 3600
	return c
}

func newSim(t *testing.T, cfg Config) *Sim {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func run(s *Sim, steps int) []commerce.Event {
	var out []commerce.Event
	for range steps {
		out = append(out, s.Step()...)
	}
	return out
}

func encode(t *testing.T, evs []commerce.Event) []byte {
	t.Helper()
	var b bytes.Buffer
	for _, ev := range evs {
		var data []byte
		var err error
		switch e := ev.(type) {
		case commerce.Sale:
			data, err = commerce.EncodeSale(e)
		case commerce.Snapshot:
			data, err = commerce.EncodeSnapshot(e)
		}
		if err != nil {
			t.Fatal(err)
		}
		b.Write(data)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// Every SKU a line of the plant runs is one the simulator sells as that line's, and every SKU it
// sells is run by its line: the names are derived from the plant's naming, which this pins.
func TestSKUsMatchThePlant(t *testing.T) {
	cfg := sim.DefaultConfig()
	cfg.Lines, cfg.Speed = 3, 60
	p := sim.NewPlant(cfg)
	ran := map[string]map[string]bool{}
	for range 20000 {
		p.Step()
		for _, m := range p.Machines {
			if ran[m.Line] == nil {
				ran[m.Line] = map[string]bool{}
			}
			for _, pt := range m.Points {
				if pt.Field == "sku" {
					ran[m.Line][pt.S] = true
				}
			}
		}
	}
	lines, skus := SKUsOfPlant(cfg)
	if len(lines) != 3 {
		t.Fatalf("lines %v, want 3", lines)
	}
	for i, l := range lines {
		var got []string
		for k := range ran[l] {
			got = append(got, k)
		}
		slices.Sort(got)
		want := slices.Sorted(slices.Values(skus[i]))
		if !slices.Equal(got, want) {
			t.Errorf("%s: the plant ran %v, the simulator sells %v", l, got, want)
		}
	}
}

// Same seed, same demand, byte for byte; another seed, another demand.
func TestDeterministicPerSeed(t *testing.T) {
	gen := func(seed uint64) []byte {
		c := sim.DefaultConfig()
		c.Seed, c.Speed = seed, 600 // ten simulated minutes per step
		return encode(t, run(newSim(t, Config{Plant: c, Start: monday, DemandScale: 0.1, NoQueue: true}), 3*144))
	}
	a, b := gen(7), gen(7)
	if len(a) == 0 || !bytes.Equal(a, b) {
		t.Fatalf("seed 7 twice: %d and %d bytes, equal %v", len(a), len(b), bytes.Equal(a, b))
	}
	if bytes.Equal(a, gen(8)) {
		t.Fatal("seeds 7 and 8 gave the same events")
	}
}

type series struct {
	units         map[[2]string]float64 // (sku, channel) → units
	byHour, byDay map[string][]float64  // channel → units per hour of day / weekday (fast SKUs)
	daily         map[string][]float64  // sku → units per day, all channels
}

func collect(s *Sim, evs []commerce.Event, days int) series {
	out := series{units: map[[2]string]float64{}, byHour: map[string][]float64{}, byDay: map[string][]float64{}, daily: map[string][]float64{}}
	slow := map[string]bool{}
	for _, k := range s.SKUs() {
		slow[k.Name] = k.Slow
		out.daily[k.Name] = make([]float64, days)
	}
	for _, ch := range s.Channels() {
		out.byHour[ch], out.byDay[ch] = make([]float64, 24), make([]float64, 7)
	}
	for _, ev := range evs {
		e, ok := ev.(commerce.Sale)
		if !ok {
			continue
		}
		out.units[[2]string{e.SKU, e.Channel}] += e.Quantity
		out.daily[e.SKU][int(e.Time.Sub(monday)/(24*time.Hour))] += e.Quantity
		if !slow[e.SKU] {
			out.byHour[e.Channel][e.Time.Hour()] += e.Quantity
			out.byDay[e.Channel][e.Time.Weekday()] += e.Quantity
		}
	}
	return out
}

func mean(v []float64) float64 {
	var s float64
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

// The channels follow their daily and weekly profiles: web sells in the evening, shops are shut at
// night and on Sunday and busiest on Saturday, wholesale buys on weekdays in business hours.
func TestSeasonality(t *testing.T) {
	const days = 56
	s := newSim(t, Config{Plant: hourly(1), Start: monday, DemandScale: 0.2, NoQueue: true})
	se := collect(s, run(s, days*24), days)
	web, retail, whole := se.byHour[Web], se.byHour[Retail], se.byHour[Wholesale]
	if ev, night := mean(web[19:22]), mean(web[2:5]); ev < 3*night || night == 0 {
		t.Errorf("web: evening %.0f units per hour slot, night %.0f: want the evening over 3× the night (and some night sales)", ev, night)
	}
	if n := mean(retail[0:8]) + mean(retail[22:24]); n != 0 {
		t.Errorf("retail sold %.0f units at night", n)
	}
	wd := se.byDay[Retail]
	if wd[time.Sunday] != 0 {
		t.Errorf("retail sold %.0f units on Sundays", wd[time.Sunday])
	}
	if sat, week := wd[time.Saturday], mean(wd[time.Monday:time.Saturday]); sat < 1.3*week {
		t.Errorf("retail: Saturday %.0f, weekday mean %.0f: want Saturday over 1.3×", sat, week)
	}
	ww := se.byDay[Wholesale]
	if ww[time.Saturday]+ww[time.Sunday] != 0 || mean(ww[time.Monday:time.Saturday]) == 0 {
		t.Errorf("wholesale by weekday %v: want weekdays only", ww)
	}
	if mean(whole[0:7])+mean(whole[18:24]) != 0 || mean(whole[9:12]) == 0 {
		t.Errorf("wholesale by hour %v: want business hours only", whole)
	}
}

// Slow movers sell on few days, in lumps; fast SKUs sell every day.
func TestIntermittentSlowMovers(t *testing.T) {
	const days = 56
	s := newSim(t, Config{Plant: hourly(2), Start: monday, DemandScale: 0.2, NoQueue: true})
	se := collect(s, run(s, days*24), days)
	var slow int
	for _, k := range s.SKUs() {
		zero, total := 0, 0.0
		for _, q := range se.daily[k.Name] {
			total += q
			if q == 0 {
				zero++
			}
		}
		frac := float64(zero) / days
		if k.Slow {
			slow++
			if frac < 0.4 || total == 0 {
				t.Errorf("slow mover %s: %.0f units, no sale on %.0f%% of days: want sales on fewer than 60%% of days", k.Name, total, 100*frac)
			}
		} else if zero != 0 {
			t.Errorf("%s: no sale on %d of %d days, want sales every day", k.Name, zero, days)
		}
	}
	if _, lines := SKUsOfPlant(hourly(2)); slow != len(lines) {
		t.Errorf("%d slow movers, want one per line (%d)", slow, len(lines))
	}
}

func promotion(id, sku, channel string, discount float64, start, end time.Time) act.Message {
	return act.Message{ID: id, Event: act.EventStart, Action: act.Action{DecisionID: id, Kind: act.Promote, SKU: sku,
		Channel: channel, Discount: discount, Start: start, End: end, RuleSetVersion: "v1", Rule: "test"}}
}

// A promotion multiplies its SKU × channel's orders by TrueLift and leaves every other series exactly
// as it was; under a hold it does nothing.
func TestPromotionLiftIsTheTrueResponse(t *testing.T) {
	const days = 28
	cfg := Config{Plant: hourly(3), Start: monday, DemandScale: 0.2, NoQueue: true}
	base := newSim(t, cfg)
	var sku string
	for _, k := range base.SKUs() {
		if !k.Slow {
			sku = k.Name
			break
		}
	}
	end := monday.Add(days * 24 * time.Hour)
	promoted, held := newSim(t, cfg), newSim(t, cfg)
	for _, s := range []*Sim{promoted, held} {
		if err := s.Apply(promotion("d1", sku, Web, 20, monday, end)); err != nil {
			t.Fatal(err)
		}
	}
	hold := act.Message{ID: "h1", Event: act.EventStart, Action: act.Action{DecisionID: "h1", Kind: act.Hold, SKU: sku, Channel: Web, Start: monday}}
	if err := held.Apply(hold); err != nil {
		t.Fatal(err)
	}
	evBase, evPromo, evHeld := run(base, days*24), run(promoted, days*24), run(held, days*24)
	if !slices.Equal(evBase, evHeld) {
		t.Error("a promotion under a hold changed the sales")
	}
	orders := func(evs []commerce.Event, sku, ch string) (n float64, prices map[float64]bool) {
		prices = map[float64]bool{}
		for _, ev := range evs {
			if e, ok := ev.(commerce.Sale); ok && e.SKU == sku && e.Channel == ch {
				n++
				prices[e.UnitPrice] = true
			}
		}
		return n, prices
	}
	lift := promoted.TrueLift(sku, Web, 20)
	if lift < 1.1 || promoted.TrueLift(sku, Web, 0) != 1 || promoted.TrueLift(sku, Web, 40) <= lift {
		t.Fatalf("TrueLift(%s, web): 20%% %.3f, 0%% %.3f, 40%% %.3f: want 1 without discount, growing, and over 1.1 at 20%%",
			sku, lift, promoted.TrueLift(sku, Web, 0), promoted.TrueLift(sku, Web, 40))
	}
	nb, pb := orders(evBase, sku, Web)
	np, pp := orders(evPromo, sku, Web)
	t.Logf("%s web: %.0f orders promoted, %.0f not: ratio %.3f, true lift %.3f", sku, np, nb, np/nb, lift)
	if got := np / nb; got < lift*0.94 || got > lift*1.06 {
		t.Errorf("%s web: %0.f orders promoted, %.0f not: ratio %.3f, true lift %.3f (want within 6%%)", sku, np, nb, got, lift)
	}
	if len(pb) != 1 || len(pp) != 1 {
		t.Fatalf("prices: base %v, promoted %v: want one each", pb, pp)
	}
	for b := range pb {
		for p := range pp {
			if want := float64(int(b*0.8*100+0.5)) / 100; p != want {
				t.Errorf("promoted price %.2f, want %.2f (list %.2f less 20%%)", p, want, b)
			}
		}
	}
	// Every other SKU × channel drew exactly what it drew without the promotion.
	strip := func(evs []commerce.Event) []commerce.Event {
		var out []commerce.Event
		for _, ev := range evs {
			if e, ok := ev.(commerce.Sale); ok {
				if e.SKU == sku && e.Channel == Web {
					continue
				}
				e.OrderID = "" // order numbers run over every series
				ev = e
			} else {
				continue // the counts include the promoted sales
			}
			out = append(out, ev)
		}
		return out
	}
	a, b := strip(evBase), strip(evPromo)
	if len(a) != len(b) {
		t.Fatalf("other series: %d sales without the promotion, %d with", len(a), len(b))
	}
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("other series differ at sale %d: %+v vs %+v", i, a[i], b[i])
		}
	}
}

func TestPromotionEndsAndHoldsLapse(t *testing.T) {
	s := newSim(t, Config{Plant: hourly(1), Start: monday, NoQueue: true})
	t1 := monday.Add(time.Hour)
	must := func(m act.Message) {
		t.Helper()
		if err := s.Apply(m); err != nil {
			t.Fatal(err)
		}
	}
	must(promotion("p", "A-100", Retail, 15, monday, monday.Add(48*time.Hour)))
	if d := s.Discount("A-100", Retail, t1); d != 15 {
		t.Fatalf("discount %v during the promotion, want 15", d)
	}
	if d := s.Discount("A-100", Retail, monday.Add(48*time.Hour)); d != 0 {
		t.Fatalf("discount %v at the promotion's end, want 0", d)
	}
	must(act.Message{ID: "h:1", Event: act.EventStart, Action: act.Action{DecisionID: "h", Kind: act.Hold, SKU: "A-100", Channel: Retail,
		Start: t1, End: t1.Add(time.Hour)}})
	if d := s.Discount("A-100", Retail, t1); d != 0 {
		t.Fatalf("discount %v under a hold, want 0", d)
	}
	if d := s.Discount("A-100", Retail, t1.Add(time.Hour)); d != 15 {
		t.Fatalf("discount %v after the hold, want 15 again", d)
	}
	end := promotion("p:end", "A-100", Retail, 15, monday, monday.Add(48*time.Hour))
	end.Event, end.DecisionID = act.EventEnd, "p"
	must(end)
	if d := s.Discount("A-100", Retail, t1.Add(2*time.Hour)); d != 0 {
		t.Fatalf("discount %v after the promotion's end message, want 0", d)
	}
	// the start again (a redelivery) is taken once by its id: the promotion stays ended
	must(promotion("p", "A-100", Retail, 15, monday, monday.Add(48*time.Hour)))
	if d := s.Discount("A-100", Retail, t1.Add(2*time.Hour)); d != 0 {
		t.Fatalf("a redelivered start revived the promotion: discount %v", d)
	}
}

func TestApplyRefusesWhatItCannotSell(t *testing.T) {
	s := newSim(t, Config{Plant: hourly(1), Start: monday, Channels: []string{Web, Retail}, NoQueue: true})
	end := monday.Add(time.Hour)
	for _, c := range []struct {
		m    act.Message
		want string
	}{
		{promotion("d1", "Z-999", Web, 10, monday, end), `action "d1": sku "Z-999"`},
		{promotion("d2", "A-100", Wholesale, 10, monday, end), `action "d2": channel "wholesale"`},
		{promotion("d3", "A-100", Web, 120, monday, end), `action "d3": discount 120`},
		{promotion("d4", "A-100", Web, 10, monday, monday), `action "d4": a promotion needs an end`},
		{promotion("", "A-100", Web, 10, monday, end), `message id is empty`},
		{act.Message{ID: "d5", Event: "later", Action: act.Action{DecisionID: "d5", Kind: act.Hold, SKU: "A-100", Channel: Web, Start: monday}}, `action "d5": kind "hold" with event "later"`},
	} {
		err := s.Apply(c.m)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Apply(%s): %v, want an error containing %q", c.m.ID, err, c.want)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	_, err := New(Config{Channels: []string{Web, "shop", Web}, DemandScale: -1, RunID: "a:b"})
	for _, want := range []string{`channels[1]: "shop"`, `channels[2]: "web" given twice`, "demand_scale -1", `run id "a:b"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v: want it to contain %q", err, want)
		}
	}
}

// The counts are the true stock: initial + produced − sold, taken at Start and every SnapshotEvery.
func TestCountsAreTheStock(t *testing.T) {
	produced := map[string]float64{}
	s := newSim(t, Config{Plant: hourly(4), Start: monday, DemandScale: 0.1, NoQueue: true,
		Production: func() map[string]float64 { return produced }})
	sold := map[string]float64{}
	var initial map[string]float64
	var counts []time.Time
	for step := range 48 {
		evs := s.Step()
		for _, ev := range evs {
			switch e := ev.(type) {
			case commerce.Sale:
				sold[e.SKU] += e.Quantity
			case commerce.Snapshot:
				if e.SKU == "A-100" {
					counts = append(counts, e.Time)
				}
				if initial == nil || len(counts) == 1 {
					if initial == nil {
						initial = map[string]float64{}
					}
					initial[e.SKU] = e.OnHand
					continue
				}
				if want := initial[e.SKU] + produced[e.SKU] - sold[e.SKU]; e.OnHand != want {
					t.Fatalf("step %d: count of %s %v, want initial %v + produced %v − sold %v", step, e.SKU, e.OnHand, initial[e.SKU], produced[e.SKU], sold[e.SKU])
				}
			}
		}
		for _, k := range s.SKUs() {
			produced[k.Name] += 100
		}
	}
	var want []time.Time
	for h := 0; h <= 48; h += 6 {
		want = append(want, monday.Add(time.Duration(h)*time.Hour))
	}
	if !slices.EqualFunc(counts, want, time.Time.Equal) {
		t.Errorf("counts at %v, want %v", counts, want)
	}
	if initial["A-100"] <= 0 {
		t.Errorf("initial stock of A-100 %v, want some", initial["A-100"])
	}
}
