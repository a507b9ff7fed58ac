package inventory

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 6, 15, 12, 0, 0, 0, time.UTC)

// book applies operations to one key's state the way the store does, with the value encoded and decoded
// between operations as if it went through the bucket.
type book struct {
	t   testing.TB
	cfg Config
	now time.Time
	v   []byte // nil: key absent
}

func newBook(t testing.TB) *book { return &book{t: t, cfg: DefaultConfig(), now: t0} }

func (b *book) load() *state {
	b.t.Helper()
	if b.v == nil {
		return &state{}
	}
	st, err := decodeState(b.v)
	if err != nil {
		b.t.Fatalf("decode: %v", err)
	}
	return st
}

func (b *book) move(m Movement) Outcome {
	b.t.Helper()
	if err := m.check(b.now, b.cfg.MaxFuture); err != nil {
		b.t.Fatalf("move: %v", err)
	}
	st := b.load()
	out, write := st.applyMove(&m, newClock(&b.cfg, b.now))
	if write {
		b.v = st.encode(nil)
	}
	return out
}

func (b *book) snap(sn Snapshot) Outcome {
	b.t.Helper()
	st := b.load()
	out, write := st.applySnapshot(&sn, newClock(&b.cfg, b.now))
	if write {
		b.v = st.encode(nil)
	}
	return out
}

func (b *book) pos() Position {
	b.t.Helper()
	return b.load().summary().position("S1", "SKU")
}

func mv(id string, k Kind, q float64, ago time.Duration) Movement {
	return Movement{ID: id, SKU: "SKU", Site: "S1", Kind: k, Qty: q, Time: t0.Add(-ago)}
}

func sn(id string, onHand float64, ago time.Duration) Snapshot {
	return Snapshot{ID: id, SKU: "SKU", Site: "S1", OnHand: onHand, Time: t0.Add(-ago)}
}

func expectOutcome(t *testing.T, what string, got, want Outcome) {
	t.Helper()
	if got != want {
		t.Errorf("%s: outcome %s, want %s", what, got, want)
	}
}

func expectPos(t *testing.T, p Position, onHand, produced, sold float64) {
	t.Helper()
	if p.OnHand != onHand || p.Produced != produced || p.Sold != sold || p.Position != onHand+produced-sold {
		t.Errorf("position %+v, want on_hand %g produced %g sold %g position %g", p, onHand, produced, sold, onHand+produced-sold)
	}
}

func TestArithmeticLateAndOldSnapshots(t *testing.T) {
	b := newBook(t)
	h := time.Hour
	expectOutcome(t, "first snapshot", b.snap(sn("erp-1", 100, 10*h)), Applied)
	expectOutcome(t, "produced after", b.move(mv("p1", Produced, 10, 9*h)), Applied)
	expectOutcome(t, "sold after", b.move(mv("s1", Sold, 3, 8*h)), Applied)
	expectOutcome(t, "sold before", b.move(mv("s0", Sold, 2, 11*h)), BeforeSnapshot)
	expectOutcome(t, "produced at the snapshot's instant", b.move(mv("p0", Produced, 5, 10*h)), BeforeSnapshot)
	expectPos(t, b.pos(), 100, 10, 3)

	// A count taken at −8h30 arrives after the movements around it: only s1 (−8h) is after it.
	expectOutcome(t, "late snapshot", b.snap(sn("erp-2", 108, 8*h+30*time.Minute)), Applied)
	expectPos(t, b.pos(), 108, 0, 3)
	if got := b.pos().SnapshotTime; !got.Equal(t0.Add(-8*h - 30*time.Minute)) {
		t.Errorf("snapshot time %s", got)
	}
	expectOutcome(t, "older snapshot", b.snap(sn("erp-0", 1, 20*h)), Stale)
	expectOutcome(t, "same snapshot again", b.snap(sn("erp-2", 108, 8*h+30*time.Minute)), Duplicate)
	expectPos(t, b.pos(), 108, 0, 3)
	// Two counts of the same instant: the larger id wins whatever the order.
	expectOutcome(t, "same instant, smaller id", b.snap(sn("erp-1z", 50, 8*h+30*time.Minute)), Stale)
	expectOutcome(t, "same instant, larger id", b.snap(sn("erp-3", 50, 8*h+30*time.Minute)), Applied)
	expectPos(t, b.pos(), 50, 0, 3)
	// Movements covered by the count keep their ids until the horizon (a return, kept like production,
	// must not reduce the demand twice).
	st := b.load()
	if !st.has("s0") || !st.has("s1") || !st.has("p1") {
		t.Error("covered movements must keep their ids until the horizon")
	}
	expectOutcome(t, "duplicate covered production", b.move(mv("p1", Produced, 10, 9*h)), Duplicate)
	expectOutcome(t, "duplicate covered sale", b.move(mv("s0", Sold, 2, 11*h)), Duplicate)
	expectOutcome(t, "duplicate sale", b.move(mv("s1", Sold, 3, 8*h)), Duplicate)
	expectPos(t, b.pos(), 50, 0, 3)
}

func TestArithmeticWithoutSnapshot(t *testing.T) {
	b := newBook(t)
	b.move(mv("p1", Produced, 4, time.Hour))
	b.move(mv("p2", Produced, 0.5, 2*time.Hour))
	b.move(mv("s1", Sold, 1.25, 3*time.Hour))
	expectPos(t, b.pos(), 0, 4.5, 1.25)
	if !b.pos().SnapshotTime.IsZero() {
		t.Error("snapshot time without a snapshot")
	}
}

func TestHorizonFolding(t *testing.T) {
	b := newBook(t)
	h := time.Hour
	expectOutcome(t, "older than the horizon", b.move(mv("old", Produced, 5, 50*h)), AppliedUnverified)
	expectOutcome(t, "recent", b.move(mv("p1", Produced, 7, 10*h)), Applied)
	expectPos(t, b.pos(), 0, 12, 0)
	expectOutcome(t, "duplicate in the list", b.move(mv("p1", Produced, 7, 10*h)), Duplicate)
	expectOutcome(t, "duplicate of a recent base id", b.move(mv("old", Produced, 5, 50*h)), Duplicate)

	// 45 hours later p1 (now −55h) is folded into the base at the next write, and its id dropped.
	b.now = t0.Add(45 * h)
	expectOutcome(t, "new", b.move(Movement{ID: "p2", SKU: "SKU", Site: "S1", Kind: Produced, Qty: 1, Time: b.now}), Applied)
	st := b.load()
	if len(st.moves) != 1 || st.moves[0].id != "p2" {
		t.Fatalf("list after folding: %+v", st.moves)
	}
	if !st.hasBase || st.baseProd != 12 || !time.Unix(0, st.baseMin).Equal(t0.Add(-50*h)) || !time.Unix(0, st.baseMax).Equal(t0.Add(-10*h)) {
		t.Fatalf("base %v %g [%s, %s]", st.hasBase, st.baseProd, time.Unix(0, st.baseMin).UTC(), time.Unix(0, st.baseMax).UTC())
	}
	expectPos(t, b.pos(), 0, 13, 0)
	// The id of a movement applied straight to the base is kept for the horizon after that, however
	// many follow; once the horizon has passed it a duplicate is applied again: the ingest layer's dedup
	// markers are what catch it.
	for i := range 3 * recentCap {
		b.move(mv(fmt.Sprintf("old-%d", i), Sold, 1, 60*h))
	}
	expectOutcome(t, "duplicate after many others", b.move(mv("old", Produced, 5, 50*h)), Duplicate)
	b.now = t0.Add(48*h + time.Second)
	expectOutcome(t, "duplicate once the horizon passed its id", b.move(mv("old", Produced, 5, 50*h)), AppliedUnverified)

	// A count inside the folded span cannot be split: refused. One before it keeps the base, one after
	// it replaces the base.
	b = newBook(t)
	b.move(mv("a", Produced, 5, 50*h))
	b.move(mv("b", Produced, 7, 49*h))
	expectOutcome(t, "snapshot inside the folded span", b.snap(sn("c1", 100, 49*h+30*time.Minute)), BeyondHorizon)
	expectOutcome(t, "snapshot before the folded span", b.snap(sn("c2", 100, 51*h)), Applied)
	expectPos(t, b.pos(), 100, 12, 0)
	b.move(mv("c", Produced, 1, time.Hour))
	expectOutcome(t, "snapshot after the folded span", b.snap(sn("c3", 200, 2*h)), Applied)
	expectPos(t, b.pos(), 200, 1, 0)
	if b.load().hasBase {
		t.Error("base kept after a count that covers it")
	}
	expectOutcome(t, "movement older than the horizon and covered", b.move(mv("d", Produced, 9, 60*h)), BeforeSnapshot)
	expectPos(t, b.pos(), 200, 1, 0)
}

func TestMaxMovementsFoldsOldest(t *testing.T) {
	b := newBook(t)
	b.cfg.MaxMovements = 16
	for i := range 40 {
		b.move(mv(fmt.Sprintf("p%d", i), Produced, 1, time.Duration(40-i)*time.Minute))
	}
	st := b.load()
	if len(st.moves) != 16 || st.moves[0].id != "p24" || st.baseProd != 24 {
		t.Fatalf("kept %d moves from %q, base %g", len(st.moves), st.moves[0].id, st.baseProd)
	}
	expectPos(t, b.pos(), 0, 40, 0)
}

func TestDemandRateAndCover(t *testing.T) {
	b := newBook(t)
	day := 24 * time.Hour
	b.snap(sn("erp", 140, 10*day))
	if p := b.pos(); !p.NoDemand() || !p.StockOut.IsZero() || p.DailyRate != 0 {
		t.Errorf("no sales: %+v", p)
	}
	for d := 1; d <= 7; d++ {
		b.move(mv(fmt.Sprintf("s%d", d), Sold, 2, time.Duration(d)*day))
	}
	b.move(mv("today", Sold, 50, time.Hour))  // today is incomplete: not in the rate
	b.move(mv("day8", Sold, 70, 8*day))       // outside the 7-day window, inside the 14 kept
	b.move(mv("day20", Sold, 70, 20*day))     // before the count, and beyond the kept days
	b.move(mv("dup", Sold, 2, 3*day))         // a second sale on day −3
	b.move(mv("dup", Sold, 2, 3*day))         // duplicate: not counted twice
	b.move(mv("prod", Produced, 1000, 2*day)) // production is not demand
	p := b.pos()
	if want := 16.0 / 7; math.Abs(p.DailyRate-want) > 1e-12 {
		t.Errorf("daily rate %g, want %g", p.DailyRate, want)
	}
	wantPos := 140.0 + 1000 - (2*7 + 50 + 70 + 2)
	if p.Position != wantPos {
		t.Errorf("position %g, want %g", p.Position, wantPos)
	}
	if want := wantPos / p.DailyRate; math.Abs(p.DaysOfCover-want) > 1e-9 {
		t.Errorf("days of cover %g, want %g", p.DaysOfCover, want)
	}
	if want := p.Updated.Add(time.Duration(p.DaysOfCover * float64(day))); p.StockOut.Sub(want).Abs() > time.Millisecond {
		t.Errorf("stock-out %s, want %s", p.StockOut, want)
	}
	if got := len(b.load().days); got != 9 {
		t.Errorf("%d demand days kept, want 9 (today, −1…−8)", got)
	}
	b.move(mv("big", Sold, 10_000, 30*time.Minute))
	if p := b.pos(); p.Position >= 0 || p.DaysOfCover != 0 || !p.StockOut.Equal(p.Updated) {
		t.Errorf("out of stock: %+v", p)
	}
}

func TestPositionJSON(t *testing.T) {
	p := (&state{hasSnap: true, snapT: t0.UnixNano(), onHand: 5, updated: t0.UnixNano()}).summary().position("S1", "SKU")
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	if !strings.Contains(s, `"days_of_cover":null`) || !strings.Contains(s, `"no_demand":true`) || strings.Contains(s, "stock_out") {
		t.Errorf("no demand: %s", s)
	}
	p.DailyRate, p.DaysOfCover, p.StockOut = 1, 5, t0.Add(5*24*time.Hour)
	b, _ = json.Marshal(p)
	if s := string(b); !strings.Contains(s, `"days_of_cover":5`) || strings.Contains(s, "no_demand") || !strings.Contains(s, `"stock_out":"2026-06-20T12:00:00Z"`) {
		t.Errorf("with demand: %s", s)
	}
}

// ledgerCase is a random history: movements (some repeated), snapshots, and the position it must give.
type ledgerCase struct {
	ops                    []op
	onHand, produced, sold float64
	rate                   float64
}

// op is one movement or one snapshot.
type op struct {
	m *Movement
	s *Snapshot
}

func (o op) apply(b *book) {
	if o.m != nil {
		b.move(*o.m)
	} else {
		b.snap(*o.s)
	}
}

// The clock runs from t0 to t0+drift while a ledger case is applied, so movements fold into the base on the
// way (the cutoff passes t0−48h+drift).
const drift = 30 * time.Hour

func randomLedger(r *rand.Rand) ledgerCase {
	var c ledgerCase
	type ev struct {
		id   string
		kind Kind
		q    float64
		ago  time.Duration
	}
	var evs []ev
	for i := range 20 + r.IntN(60) {
		// Whole minutes, so that some movements fall exactly on a snapshot's instant.
		e := ev{id: fmt.Sprintf("m%d", i), kind: Produced, q: float64(1 + r.IntN(20)), ago: time.Duration(r.IntN(47*60)) * time.Minute}
		if r.IntN(2) == 0 {
			e.kind = Sold
		}
		if r.IntN(8) == 0 {
			e.ago += 50 * time.Hour // older than the horizon from the start: straight into the base
		}
		evs = append(evs, e)
	}
	type snp struct {
		id  string
		on  float64
		ago time.Duration
	}
	// Snapshots after anything that can be folded (t0−48h+drift), in whole hours so that some tie.
	var snaps []snp
	for i := range r.IntN(5) {
		snaps = append(snaps, snp{fmt.Sprintf("erp-%d", i), float64(r.IntN(500)), time.Duration(r.IntN(4)) * time.Hour})
	}
	var best *snp
	for i := range snaps {
		s := &snaps[i]
		if best == nil || s.ago < best.ago || s.ago == best.ago && s.id > best.id {
			best = s
		}
	}
	day := int64(24 * time.Hour)
	today := t0.Add(drift).UnixNano() / day
	var sold7 float64
	for _, e := range evs {
		t := t0.Add(-e.ago)
		if d := t.UnixNano() / day; e.kind == Sold && d >= today-7 && d < today {
			sold7 += e.q
		}
		if best != nil && !t.After(t0.Add(-best.ago)) {
			continue
		}
		if e.kind == Produced {
			c.produced += e.q
		} else {
			c.sold += e.q
		}
	}
	c.rate = sold7 / 7
	if best != nil {
		c.onHand = best.on
	}
	for _, e := range evs {
		m := mv(e.id, e.kind, e.q, e.ago)
		copies := 1
		if r.IntN(3) == 0 {
			copies = 2 // a redelivery: recognised in the list, or by the ids remembered after it
		}
		for range copies {
			c.ops = append(c.ops, op{m: &m})
		}
	}
	for _, s := range snaps {
		x := sn(s.id, s.on, s.ago)
		c.ops = append(c.ops, op{s: &x})
		if r.IntN(3) == 0 {
			c.ops = append(c.ops, op{s: &x})
		}
	}
	return c
}

// TestShuffledOrderGivesSamePosition: any order of the same movements, duplicates and snapshots gives the
// position the ledger says, while the clock moves on and folds movements into the base.
func TestShuffledOrderGivesSamePosition(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	folded := 0
	for round := range 300 {
		c := randomLedger(r)
		for shuffle := range 4 {
			r.Shuffle(len(c.ops), func(i, j int) { c.ops[i], c.ops[j] = c.ops[j], c.ops[i] })
			b := newBook(t)
			for i, o := range c.ops {
				b.now = t0.Add(drift * time.Duration(i) / time.Duration(len(c.ops)))
				o.apply(b)
			}
			// One last movement at the end of the drift, so the rate is computed on the same day every time.
			b.now = t0.Add(drift)
			b.move(Movement{ID: "closing", SKU: "SKU", Site: "S1", Kind: Produced, Qty: 1, Time: b.now})
			if b.load().hasBase {
				folded++
			}
			p := b.pos()
			if p.OnHand != c.onHand || p.Produced != c.produced+1 || p.Sold != c.sold || math.Abs(p.DailyRate-c.rate) > 1e-9 {
				t.Fatalf("round %d shuffle %d: got on_hand %g produced %g sold %g rate %g, ledger says %g %g %g %g",
					round, shuffle, p.OnHand, p.Produced, p.Sold, p.DailyRate, c.onHand, c.produced+1, c.sold, c.rate)
			}
		}
	}
	if folded < 100 {
		t.Errorf("only %d of 1200 runs ended with a folded base: the test does not exercise folding", folded)
	}
}

func TestBadInputsNameTheID(t *testing.T) {
	now := t0
	good := Movement{ID: "sale:9:1", SKU: "SKU", Site: "S1", Kind: Sold, Qty: 1, Time: t0}
	cases := []struct {
		name string
		edit func(m *Movement)
		want string
	}{
		{"empty sku", func(m *Movement) { m.SKU = "" }, `movement "sale:9:1": sku: empty`},
		{"empty site", func(m *Movement) { m.Site = "" }, `movement "sale:9:1": site: empty`},
		{"zero qty", func(m *Movement) { m.Qty = 0 }, `movement "sale:9:1": qty: must be a finite number > 0, got 0`},
		{"negative qty", func(m *Movement) { m.Qty = -2 }, `qty: must be a finite number > 0, got -2`},
		{"NaN qty", func(m *Movement) { m.Qty = math.NaN() }, `movement "sale:9:1": qty: must be a finite number > 0, got NaN`},
		{"Inf qty", func(m *Movement) { m.Qty = math.Inf(1) }, `got +Inf`},
		{"zero time", func(m *Movement) { m.Time = time.Time{} }, `movement "sale:9:1": time: zero`},
		{"future time", func(m *Movement) { m.Time = t0.Add(48 * time.Hour) }, `movement "sale:9:1": time: 2026-06-17T12:00:00Z is more than 24h0m0s ahead`},
		{"ancient time", func(m *Movement) { m.Time = time.Date(1600, 1, 1, 0, 0, 0, 0, time.UTC) }, `time: 1600-01-01T00:00:00Z is outside`},
		{"unknown kind", func(m *Movement) { m.Kind = 0 }, `movement "sale:9:1": kind: unknown kind 0`},
		{"empty id", func(m *Movement) { m.ID = "" }, `movement "": id: empty (sku "SKU", site "S1")`},
		{"long sku", func(m *Movement) { m.SKU = strings.Repeat("x", 300) }, `movement "sale:9:1": sku: longer than 256 bytes`},
	}
	for _, c := range cases {
		m := good
		c.edit(&m)
		err := m.check(now, 24*time.Hour)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want it to contain %q", c.name, err, c.want)
		}
	}
	if err := good.check(now, 24*time.Hour); err != nil {
		t.Errorf("good movement refused: %v", err)
	}
	s := Snapshot{ID: "erp:7", SKU: "SKU", Site: "S1", OnHand: math.NaN(), Time: t0}
	if err := s.check(now, time.Hour); err == nil || !strings.Contains(err.Error(), `snapshot "erp:7": on_hand: must be finite, got NaN`) {
		t.Errorf("NaN on hand: %v", err)
	}
	s.OnHand = -3 // negative book stock is real
	if err := s.check(now, time.Hour); err != nil {
		t.Errorf("negative on hand refused: %v", err)
	}
}

// TestReturns: a return brings the units back into the position and takes them off the day's demand;
// a repeated return is a duplicate like any movement.
func TestReturns(t *testing.T) {
	b := newBook(t)
	b.snap(Snapshot{ID: "n1", SKU: "SKU", Site: "S1", OnHand: 10, Time: t0.Add(-3 * time.Hour)})
	b.move(mv("sale:1:1", Sold, 3, 2*time.Hour))
	if out := b.move(mv("sale:R1:1", Returned, 1, time.Hour)); out != Applied {
		t.Fatalf("return: %v", out)
	}
	if out := b.move(mv("sale:R1:1", Returned, 1, time.Hour)); out != Duplicate {
		t.Fatalf("repeated return: %v, want duplicate", out)
	}
	if p := b.pos(); p.Position != 8 || p.Sold != 3 {
		t.Fatalf("position %v sold %v, want 8 and 3", p.Position, p.Sold)
	}
	st := b.load()
	var demand float64
	for _, d := range st.days {
		demand += d.q
	}
	if demand != 2 {
		t.Fatalf("demand recorded %v, want 3 sold − 1 returned = 2", demand)
	}
	if err := (&Movement{ID: "x", SKU: "a", Site: "b", Kind: Kind(9), Qty: 1, Time: t0}).check(t0, time.Hour); err == nil {
		t.Fatal("unknown kind accepted")
	}
}

// TestReturnRepeatedAfterACount: a return the next count covers is still recognised when it is
// delivered again (a redelivery, another replica), as a repeated sale is: the day's demand is not
// reduced twice.
func TestReturnRepeatedAfterACount(t *testing.T) {
	b := newBook(t)
	day := 24 * time.Hour
	b.snap(sn("erp:1", 10, 3*day))
	expectOutcome(t, "sale", b.move(mv("sale:1:1", Sold, 5, 2*day)), Applied)
	expectOutcome(t, "return", b.move(mv("sale:R1:1", Returned, 2, 2*day-time.Hour)), Applied)
	expectOutcome(t, "count", b.snap(sn("erp:2", 7, day)), Applied)
	expectOutcome(t, "repeated sale", b.move(mv("sale:1:1", Sold, 5, 2*day)), Duplicate)
	expectOutcome(t, "repeated return", b.move(mv("sale:R1:1", Returned, 2, 2*day-time.Hour)), Duplicate)
	p := b.pos()
	expectPos(t, p, 7, 0, 0)
	if want := 3.0 / 7; math.Abs(p.DailyRate-want) > 1e-12 {
		t.Errorf("daily rate %g, want %g (5 sold − 2 returned over 7 days)", p.DailyRate, want)
	}
}

// TestRedeliveryAfterItsIDLeftTheList: a batch applied, then redelivered (its replica died before
// marking it done) after the movement's id left the list — the horizon passed it, a full list folded
// it early, or it never entered the list (older than the horizon, one of many) — must not count
// again: not as stock, not as demand. The ids are kept for the horizon after they left the list.
func TestRedeliveryAfterItsIDLeftTheList(t *testing.T) {
	h := time.Hour
	t.Run("horizon passed it", func(t *testing.T) {
		b := newBook(t)
		expectOutcome(t, "production just inside the horizon", b.move(mv("p1", Produced, 5, 47*h+59*time.Minute)), Applied)
		expectOutcome(t, "sale just inside the horizon", b.move(mv("s1", Sold, 2, 47*h+59*time.Minute)), Applied)
		b.now = t0.Add(5 * time.Minute) // the redelivery comes after the ack wait: both are past the horizon
		expectOutcome(t, "redelivered production", b.move(mv("p1", Produced, 5, 47*h+59*time.Minute)), Duplicate)
		expectOutcome(t, "redelivered sale", b.move(mv("s1", Sold, 2, 47*h+59*time.Minute)), Duplicate)
		expectPos(t, b.pos(), 0, 5, 2)
	})
	t.Run("counted sale the horizon passed", func(t *testing.T) {
		b := newBook(t)
		day := 24 * time.Hour
		b.move(mv("s1", Sold, 7, 47*h))
		b.snap(sn("erp:1", 100, 46*h)) // covers the sale
		b.now = t0.Add(2 * h)
		expectOutcome(t, "redelivered counted sale", b.move(mv("s1", Sold, 7, 47*h)), Duplicate)
		b.now = t0.Add(day) // the rate counts complete days before today
		var demand float64
		for _, d := range b.load().days {
			demand += d.q
		}
		if demand != 7 {
			t.Errorf("demand %v, want 7 (the sale once)", demand)
		}
	})
	t.Run("full list folded it", func(t *testing.T) {
		b := newBook(t)
		b.cfg.MaxMovements = 16
		for i := range 40 {
			b.move(mv(fmt.Sprintf("p%d", i), Produced, 1, time.Duration(40-i)*time.Minute))
		}
		for i := range 40 {
			expectOutcome(t, fmt.Sprintf("redelivered p%d", i), b.move(mv(fmt.Sprintf("p%d", i), Produced, 1, time.Duration(40-i)*time.Minute)), Duplicate)
		}
		expectPos(t, b.pos(), 0, 40, 0)
	})
	t.Run("older than the horizon", func(t *testing.T) {
		b := newBook(t)
		const n = 300 // a replayed backlog: far more than recentCap
		for i := range n {
			expectOutcome(t, "backlog", b.move(mv(fmt.Sprintf("old:%d", i), Produced, 1, 60*h+time.Duration(i)*time.Minute)), AppliedUnverified)
		}
		b.now = t0.Add(time.Minute)
		for i := range n {
			if out := b.move(mv(fmt.Sprintf("old:%d", i), Produced, 1, 60*h+time.Duration(i)*time.Minute)); out != Duplicate {
				t.Fatalf("redelivered old:%d: %v, want duplicate", i, out)
			}
		}
		expectPos(t, b.pos(), 0, n, 0)
	})
}

// TestFitForgetsRememberedIDsFirst: a value too large for one message forgets the older remembered ids
// before it folds its list early, and keeps what fits.
func TestFitForgetsRememberedIDsFirst(t *testing.T) {
	cfg := DefaultConfig()
	c := newClock(&cfg, t0)
	long := strings.Repeat("x", maxIDLen-16)
	st := &state{}
	for i := range 2048 {
		st.recent = append(st.recent, gone{fmt.Sprintf("old:%06d:%s", i, long), t0.Unix()})
		st.moves = append(st.moves, move{fmt.Sprintf("new:%06d:%s", i, long), t0.Add(-time.Duration(2048-i) * time.Second).UnixNano(), 1})
	}
	st.finish(c)
	const limit = 1 << 20
	b := st.fit(c, nil, limit)
	if len(b) > limit {
		t.Fatalf("value of %d bytes, more than %d", len(b), limit)
	}
	if len(st.moves) < 1024 || len(st.recent) < recentCap || !strings.HasPrefix(st.recent[0].id, "new:") {
		t.Errorf("kept %d movements and %d remembered ids (oldest %.10q): want half the list at least, its ids remembered before the older ones",
			len(st.moves), len(st.recent), st.recent[0].id)
	}
	if got, err := decodeState(b); err != nil || got.summary().position("S1", "SKU").Produced != 2048 {
		t.Errorf("fitted value: %v", err)
	}
}
