package experiment

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/internal/natstest"
)

var day0 = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

func openStore(t *testing.T, url string) (*Store, jetstream.JetStream) {
	t.Helper()
	_, js := natstest.Connect(t, url)
	s, err := Open(context.Background(), js, DefaultStoreConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return s, js
}

// banditCfg pools per channel: one state per test, its arithmetic easy to follow.
func banditCfg(id string) Config {
	return Config{ID: id, Bandit: &BanditConfig{Arms: []float64{10, 20, 30}, Pool: PoolChannel}}
}

// curveLift is a response the model's curve family holds exactly: worth 1.28, 1.38 and 1.36 at 10,
// 20 and 30 %, so 20 % is the best arm.
func curveLift(d float64) float64 { return 1 + 1.5*(1-math.Exp(-d/30)) }

func outcome(id string, d, units float64) Outcome {
	return Outcome{ID: id, SKU: "A-100", Channel: "web", Discount: d, Units: units, Baseline: 100, End: day0}
}

// Two replicas record the same outcomes concurrently, each outcome by both and some twice: every
// outcome is applied once.
func TestRecordAppliesEachOutcomeOnceAcrossReplicas(t *testing.T) {
	n := natstest.JetStream(t)
	a, _ := openStore(t, n.URL())
	b, _ := openStore(t, n.URL())
	cfg := Config{ID: "once", Bandit: &BanditConfig{Arms: []float64{10, 20, 30}}} // pool unit: two keys per outcome
	ctx := context.Background()
	const outcomes = 40
	var applied [2]int
	var wg sync.WaitGroup
	errs := make(chan error, 4*outcomes)
	for r, s := range []*Store{a, b} {
		wg.Go(func() {
			for i := range outcomes {
				for range 2 {
					d := 10 + 10*float64(i%3)
					ok, err := s.Record(ctx, cfg, outcome(fmt.Sprintf("dec-%d", i), d, 100*curveLift(d)))
					if err != nil {
						errs <- err
						return
					}
					if ok {
						applied[r]++
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if applied[0]+applied[1] != outcomes {
		t.Fatalf("applied %d + %d times, want %d in all", applied[0], applied[1], outcomes)
	}
	pool, unit, err := a.Posterior(ctx, cfg, "A-100", "web")
	if err != nil {
		t.Fatal(err)
	}
	for name, st := range map[string]State{"channel": pool, "unit": *unit} {
		if st.Stats.N != outcomes || len(st.Applied) != outcomes {
			t.Fatalf("%s state after %d outcomes: n %d, %d ids", name, outcomes, st.Stats.N, len(st.Applied))
		}
		var arms int
		for _, arm := range st.Arms {
			arms += arm.N
			if want := curveLift(arm.Discount); math.Abs(arm.Sum/float64(arm.N)-want) > 1e-9 {
				t.Fatalf("%s arm %v: mean lift %v, want %v", name, arm.Discount, arm.Sum/float64(arm.N), want)
			}
		}
		if arms != outcomes {
			t.Fatalf("%s arms count %d outcomes, want %d", name, arms, outcomes)
		}
	}
	// Every unit's outcome at an arm was the same: no within-unit noise was added.
	if pool.WithinSS > 1e-12 || pool.WithinDF != outcomes-3 {
		t.Fatalf("within-unit sums %v, %v: want 0 and %d", pool.WithinSS, pool.WithinDF, outcomes-3)
	}
	// The outcomes lie on a curve of the model's family: the posterior mean curve goes through them.
	c := poolCurve(newPrior(defaultPriorLift, defaultPriorLiftSD), pool.Stats)
	for _, d := range []float64{10, 20, 30, 40} {
		if math.Abs(c.Lift(d)-curveLift(d)) > 0.02 { // 40 % is beyond every outcome: the prior still shows a little
			t.Fatalf("posterior mean lift at %v %% = %v, want %v", d, c.Lift(d), curveLift(d))
		}
	}
}

func TestChooseIsDeterministicAndRecordsItsPosterior(t *testing.T) {
	n := natstest.JetStream(t)
	a, _ := openStore(t, n.URL())
	b, _ := openStore(t, n.URL())
	cfg := banditCfg("choose")
	ctx := context.Background()
	for i, d := range []float64{10, 20, 30, 10, 20, 30} {
		if _, err := a.Record(ctx, cfg, outcome(fmt.Sprintf("o%d", i), d, 100*curveLift(d))); err != nil {
			t.Fatal(err)
		}
	}
	u := Unit{SKU: "A-200", Channel: "web", Baseline: 100, Position: 1e6}
	c1, err := a.Choose(ctx, cfg, "dec-1", u)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := b.Choose(ctx, cfg, "dec-1", u)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(c1) != fmt.Sprint(c2) {
		t.Fatalf("two replicas, one decision, one state: %+v and %+v", c1, c2)
	}
	// The decision records the choice as JSON: it must encode, and decode to the same choice.
	data, err := json.Marshal(c1)
	if err != nil {
		t.Fatalf("the choice does not encode: %v", err)
	}
	var back Choice
	if err := json.Unmarshal(data, &back); err != nil || fmt.Sprint(back) != fmt.Sprint(c1) {
		t.Fatalf("the choice does not round-trip through JSON (%v): %s", err, data)
	}
	if c1.Reason != ReasonThompson || c1.PoolRevision == 0 || c1.Curve.N != 6 || len(c1.Arms) != 3 || c1.PoolKey == "" || c1.UnitKey != "" {
		t.Fatalf("choice %+v", c1)
	}
	for _, ad := range c1.Arms {
		if !ad.Drawn || !ad.Eligible || ad.PoolN != 2 || ad.Sample == 0 {
			t.Fatalf("arm %+v: want drawn, eligible, two outcomes", ad)
		}
		if ad.Discount == c1.Discount {
			for _, o := range c1.Arms {
				if o.Value > ad.Value {
					t.Fatalf("chose %v (value %v) over %v (value %v)", ad.Discount, ad.Value, o.Discount, o.Value)
				}
			}
		}
	}
	// 20 % is the best and, with outcomes this clean, the arm chosen nearly always.
	best := 0
	for i := range 100 {
		c, err := a.Choose(ctx, cfg, fmt.Sprintf("dec-%d", i), u)
		if err != nil {
			t.Fatal(err)
		}
		if c.Discount == 20 {
			best++
		}
	}
	if best < 80 {
		t.Fatalf("the best arm chosen %d times in 100", best)
	}
}

// An arm whose expected extra units exceed position − safety stock is never chosen; no arm left
// is ErrNoEligibleArm.
func TestChooseNeverBreachesCover(t *testing.T) {
	n := natstest.JetStream(t)
	s, _ := openStore(t, n.URL())
	cfg := banditCfg("cover")
	ctx := context.Background()
	for i, d := range []float64{10, 20, 30, 10, 20, 30} {
		if _, err := s.Record(ctx, cfg, outcome(fmt.Sprintf("o%d", i), d, 100*curveLift(d))); err != nil {
			t.Fatal(err)
		}
	}
	// Expected extra over a baseline of 100: 43, 73, 95 units. Room 80 leaves 10 % and 20 %.
	u := Unit{SKU: "A-100", Channel: "web", Baseline: 100, Position: 100, SafetyStock: 20}
	for i := range 100 {
		c, err := s.Choose(ctx, cfg, fmt.Sprintf("dec-%d", i), u)
		if err != nil {
			t.Fatal(err)
		}
		if c.Discount == 30 {
			t.Fatalf("chose 30 %% (expected extra %v) with room for 80", c.Arms[2].ExpectedExtra)
		}
		if c.Arms[2].Eligible || c.Arms[2].Drawn || !c.Arms[1].Eligible {
			t.Fatalf("arms %+v", c.Arms)
		}
	}
	u.Position = 50 // room 30: no arm
	_, err := s.Choose(ctx, cfg, "dec-x", u)
	if !errors.Is(err, ErrNoEligibleArm) || !strings.Contains(err.Error(), "A-100/web") {
		t.Fatalf("got %v, want ErrNoEligibleArm naming the unit", err)
	}
}

func TestFloorServesAStarvedArm(t *testing.T) {
	n := natstest.JetStream(t)
	s, _ := openStore(t, n.URL())
	cfg := banditCfg("floor")
	cfg.Bandit.Floor = 0.1
	ctx := context.Background()
	for i := range 20 { // 20 outcomes, all at 10 %
		if _, err := s.Record(ctx, cfg, outcome(fmt.Sprintf("o%d", i), 10, 130)); err != nil {
			t.Fatal(err)
		}
	}
	c, err := s.Choose(ctx, cfg, "dec", Unit{SKU: "A-100", Channel: "web", Baseline: 100, Position: 1e6})
	if err != nil {
		t.Fatal(err)
	}
	if c.Reason != ReasonFloor || c.Discount == 10 {
		t.Fatalf("20 %% and 30 %% have 0 of 20 outcomes under a 10 %% floor; chose %v by %s", c.Discount, c.Reason)
	}
}

func TestPartialPoolingUpdatesUnitAndChannel(t *testing.T) {
	n := natstest.JetStream(t)
	s, _ := openStore(t, n.URL())
	cfg := Config{ID: "partial", Bandit: &BanditConfig{Arms: []float64{10, 20}}}
	ctx := context.Background()
	skus := []string{"A-100", "B-110", "C-120", "A-200", "B-210"}
	for i, sku := range skus {
		o := outcome(fmt.Sprintf("o%d", i), 10, 180)
		o.SKU = sku
		if ok, err := s.Record(ctx, cfg, o); err != nil || !ok {
			t.Fatal(ok, err)
		}
	}
	pool, unit, err := s.Posterior(ctx, cfg, "A-100", "web")
	if err != nil {
		t.Fatal(err)
	}
	if unit == nil || unit.Stats.N != 1 || pool.Stats.N != len(skus) {
		t.Fatalf("unit %+v, channel n %d: want 1 and %d", unit, pool.Stats.N, len(skus))
	}
	// A SKU new to the channel starts from the channel's curve (lift 1.8 at 10 %), not the prior's 1.18.
	c, err := s.Choose(ctx, cfg, "dec", Unit{SKU: "C-220", Channel: "web", Baseline: 100, Position: 1e6})
	if err != nil {
		t.Fatal(err)
	}
	if c.Arms[0].ExpectedLift < 1.6 || c.UnitKey == "" || c.UnitRevision != 0 || c.Pool != PoolUnit {
		t.Fatalf("a new unit's choice %+v: its channel's lift of 1.8 at 10 %% was not its prior", c)
	}
	// A SKU of another channel does not.
	c, err = s.Choose(ctx, cfg, "dec", Unit{SKU: "C-220", Channel: "retail", Baseline: 100, Position: 1e6})
	if err != nil {
		t.Fatal(err)
	}
	if c.Arms[0].ExpectedLift > 1.25 {
		t.Fatalf("retail's expected lift at 10 %% is %v, from web's outcomes", c.Arms[0].ExpectedLift)
	}
}

func TestCorruptEntryIsAnErrorNeverOverwritten(t *testing.T) {
	n := natstest.JetStream(t)
	s, js := openStore(t, n.URL())
	cfg := banditCfg("corrupt")
	ctx := context.Background()
	key, _, err := Keys(cfg, "A-100", "web")
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, DefaultStoreConfig().Bucket)
	if err != nil {
		t.Fatal(err)
	}
	for _, val := range []string{
		`{not json`,
		`{"v":1,"stats":{"n":3,"xx":[-1,0,1],"xr":[0,0],"rr":0}}`,
		`{"v":2,"stats":{}}`,
		`{"v":1,"stats":{},"arms":[{"discount":20,"n":1,"sum":1},{"discount":10,"n":1,"sum":1}]}`,
	} {
		rev, err := kv.Put(ctx, key, []byte(val))
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.Choose(ctx, cfg, "dec", Unit{SKU: "A-100", Channel: "web", Baseline: 10, Position: 100})
		if err == nil || !strings.Contains(err.Error(), "corrupt entry") || !strings.Contains(err.Error(), key) {
			t.Errorf("%s: Choose got %v, want a corrupt-entry error naming %s", val, err, key)
		}
		_, err = s.Record(ctx, cfg, outcome("o1", 10, 120))
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("revision %d: corrupt entry", rev)) {
			t.Errorf("%s: Record got %v, want a corrupt-entry error with the revision", val, err)
		}
		e, err := kv.Get(ctx, key)
		if err != nil || e.Revision() != rev {
			t.Fatalf("%s: the corrupt entry was overwritten (%v, %v)", val, e, err)
		}
	}
}

func TestBadInputIsAnError(t *testing.T) {
	n := natstest.JetStream(t)
	s, _ := openStore(t, n.URL())
	ctx := context.Background()
	cfg := banditCfg("bad")
	u := Unit{SKU: "A-100", Channel: "web", Baseline: 10, Position: 100}
	for _, c := range []struct {
		err  error
		want string
	}{
		{func() error { _, err := s.Record(ctx, cfg, outcome("o", 10, -1)); return err }(), "outcome o (A-100/web): units -1 must be a finite number ≥ 0"},
		{func() error { o := outcome("o", 10, 5); o.Baseline = 0; _, err := s.Record(ctx, cfg, o); return err }(), "baseline 0 must be a finite number above 0"},
		{func() error { _, err := s.Record(ctx, cfg, outcome("", 10, 5)); return err }(), "empty outcome id"},
		{func() error { _, err := s.Record(ctx, cfg, outcome("o", 100, 5)); return err }(), "discount 100 is not an arm"},
		{func() error {
			o := outcome("o", 10, 5)
			o.End = time.Time{}
			_, err := s.Record(ctx, cfg, o)
			return err
		}(), "empty window end"},
		{func() error { _, err := s.Record(ctx, Config{ID: "x"}, outcome("o", 10, 5)); return err }(), "experiment x: no bandit block"},
		{func() error { _, err := s.Choose(ctx, cfg, "", u); return err }(), "empty decision id"},
		{func() error { v := u; v.Baseline = math.NaN(); _, err := s.Choose(ctx, cfg, "d", v); return err }(), "baseline NaN"},
		{func() error { v := u; v.SafetyStock = -1; _, err := s.Choose(ctx, cfg, "d", v); return err }(), "safety stock -1"},
		{func() error { _, err := s.Choose(ctx, Config{Bandit: cfg.Bandit}, "d", u); return err }(), "empty id"},
		{func() error {
			_, err := s.Choose(ctx, Config{ID: "x", Bandit: &BanditConfig{}}, "d", u)
			return err
		}(), "experiment.bandit.arms: no arms"},
	} {
		if c.err == nil || !strings.Contains(c.err.Error(), c.want) {
			t.Errorf("got %v, want an error containing %q", c.err, c.want)
		}
	}
	if _, err := Open(ctx, nil, StoreConfig{Bucket: "a.b", Replicas: 2}, nil); err == nil ||
		!strings.Contains(err.Error(), "bucket: must be letters") || !strings.Contains(err.Error(), "replicas: must be 1 or 3") {
		t.Fatalf("Open with a bad config: %v", err)
	}
	if _, err := Open(ctx, nil, DefaultStoreConfig(), nil); err == nil || !strings.Contains(err.Error(), "no JetStream context") {
		t.Fatalf("Open without JetStream: %v", err)
	}
}

// Past MaxApplied ids the oldest are forgotten; an outcome that old is refused rather than risk
// applying it twice, while a newer one still applies.
func TestForgottenOutcomeIsRefused(t *testing.T) {
	st := newState()
	for i := range MaxApplied + 1 {
		o := outcome(fmt.Sprintf("o%d", i), 10, 120)
		o.End = day0.Add(time.Duration(i) * time.Minute)
		if ok, err := st.apply(o, [2]float64{}); err != nil || !ok {
			t.Fatal(ok, err)
		}
	}
	if len(st.Applied) != MaxApplied || !st.Horizon.Equal(day0) {
		t.Fatalf("%d ids, horizon %s", len(st.Applied), st.Horizon)
	}
	_, err := st.apply(outcome("o0", 10, 120), [2]float64{})
	if !errors.Is(err, ErrOutcomeTooOld) {
		t.Fatalf("re-applying the forgotten o0: %v, want ErrOutcomeTooOld", err)
	}
	if ok, err := st.apply(outcome("o5", 10, 120), [2]float64{}); ok || err != nil {
		t.Fatalf("re-applying a remembered id: %v, %v", ok, err)
	}
	late := outcome("new", 10, 120)
	late.End = day0.Add(time.Hour)
	if ok, err := st.apply(late, [2]float64{}); !ok || err != nil {
		t.Fatalf("a new outcome: %v, %v", ok, err)
	}
	if err := st.check(); err != nil || st.Stats.N != MaxApplied+2 {
		t.Fatalf("state: %v, n %d", err, st.Stats.N)
	}
}
