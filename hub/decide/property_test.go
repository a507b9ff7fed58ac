package decide

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub/act"
	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/decide/guard"
	"github.com/gemba-io/gemba/hub/decide/rules"
	"github.com/gemba-io/gemba/hub/state/features"
	"github.com/gemba-io/gemba/internal/testutil"
)

const propGraph = `version: prop
sites: [{id: s1}]
lines: [{id: l1, site: s1}, {id: l2, site: s1}]
skus: [{id: P1}, {id: P2}, {id: P3}, {id: P4}]
channels: [{id: web}, {id: retail}]
edges:
  - {kind: produces, from: l1, to: P1}
  - {kind: produces, from: l1, to: P2}
  - {kind: produces, from: l2, to: P3}
  - {kind: produces, from: l2, to: P4}
  - {kind: produces, from: l2, to: P1}
  - {kind: sold_via, from: P1, to: web}
  - {kind: sold_via, from: P1, to: retail}
  - {kind: sold_via, from: P2, to: web}
  - {kind: sold_via, from: P3, to: retail}
  - {kind: sold_via, from: P4, to: web}
  - {kind: sold_via, from: P4, to: retail}
`

// randomRules writes a random rule set: conditions over features, stock and lines (some always
// true), promotions with discounts up to twice the guard's limit, holds, either hit policy.
func randomRules(rng *rand.Rand, n int) string {
	terms := []string{
		"has(features.units) && features.units.value > %d.0",
		"inventory.days_of_cover > %d.0",
		"inventory.days_of_cover < %d.0",
		`lines.exists(l, l.state == "running")`,
		`!lines.exists(l, l.state == "running")`,
		"true",
	}
	var b strings.Builder
	fmt.Fprintf(&b, "name: prop-%d\nhit_policy: %s\nrules:\n", rng.IntN(1e6), []string{"first", "collect"}[rng.IntN(2)])
	for i := range n {
		var cond []string
		for range 1 + rng.IntN(2) {
			t := terms[rng.IntN(len(terms))]
			if strings.Contains(t, "%d") {
				t = fmt.Sprintf(t, rng.IntN(50))
			}
			cond = append(cond, t)
		}
		chans := []string{`"web"`, `"retail"`, `"*"`, `"web", "retail"`}[rng.IntN(4)]
		fmt.Fprintf(&b, "  - name: r%d\n    priority: %d\n    when: '%s'\n", i, rng.IntN(3), strings.Join(cond, " && "))
		if rng.IntN(4) == 0 {
			fmt.Fprintf(&b, "    hold: {channels: [%s], reason: r%d}\n", chans, i)
		} else {
			fmt.Fprintf(&b, "    promote: {channels: [%s], discount: %d, duration: %dh}\n", chans, 1+rng.IntN(50), 1+rng.IntN(48))
		}
	}
	return b.String()
}

// TestPropertyGuardrailsHold drives the engine with random rule sets over random inputs (fresh,
// stale, historical, partial, unknown stock, lines up and down) on a moving clock, with the real
// guard and outbox, and checks every action delivered against the limits and its own audit record:
// no discount above the global or the channel's maximum, no two promotions of a SKU on a channel
// within the cooldown, no day over its count or budget, and no action whose rule read a stale,
// historical or partial value or a stock nobody counted.
func TestPropertyGuardrailsHold(t *testing.T) {
	const (
		maxDiscount, webMax = 25.0, 20.0
		cooldown            = time.Hour
		dayCount, dayBudget = 8, 120.0
	)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	r := newRigOn(t, propGraph, func(c *guard.Config) {
		c.MaxDiscount, c.Cooldown, c.Approval.Above = maxDiscount, cooldown, 0
		c.Daily = guard.Caps{MaxPromotions: dayCount, MaxBudget: dayBudget}
		c.Channels = map[string]guard.ChannelLimits{"web": {MaxDiscount: webMax}}
	}, func(c *Config) { c.Bucket = 10 * time.Minute })
	r.nowMu.Lock()
	r.now = time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC) // the rounds cross midnight: two days of caps
	r.nowMu.Unlock()

	sets := map[string]*rules.Set{}
	skus, lines := []string{"P1", "P2", "P3", "P4"}, []string{"l1", "l2"}
	for round := range 60 {
		if round%8 == 0 {
			data := randomRules(rng, 3+rng.IntN(4))
			set, err := rules.Load([]byte(data))
			if err != nil {
				t.Fatalf("generated rules do not load: %v\n%s", err, data)
			}
			sets[set.Version()] = set
			r.activate(data)
		}
		r.advance(time.Duration(5+rng.IntN(60)) * time.Minute)
		now := r.clock()
		spoil := func(rd *features.Reading) {
			switch rng.IntN(6) {
			case 0:
				rd.Stale = true
			case 1:
				rd.Historical = true
			case 2:
				rd.Partial = true
			}
		}
		for _, l := range lines {
			r.state.setFeature("availability", l, []float64{0, 0.3, 0.9, 0.95}[rng.IntN(4)], now, spoil)
		}
		for _, s := range skus {
			r.state.setFeature("units", s, float64(rng.IntN(50)), now, spoil)
			if c := rng.IntN(5); c == 0 {
				r.state.mu.Lock()
				delete(r.state.pos, [2]string{s, "s1"})
				r.state.mu.Unlock()
			} else {
				r.state.setCover(s, "s1", []float64{2, 15, 45, 90}[c-1])
			}
		}
		before := r.eng.rounds.Load()
		for _, l := range lines {
			r.eng.FeatureChanged("availability", l)
		}
		testutil.WaitFor(t, 30*time.Second, fmt.Sprintf("round %d evaluated", round), func() bool { return r.eng.settled(before) })
	}

	// Everything allowed is delivered (the outbox's clock is the rig's).
	var msgs []act.Message
	testutil.WaitFor(t, 30*time.Second, "every allowed decision delivered", func() bool {
		msgs = msgs[:0]
		for _, m := range r.actions() {
			if m.Event == act.EventStart {
				msgs = append(msgs, m)
			}
		}
		return len(msgs) == int(r.guard.Metrics.Allowed.Load())
	})
	if len(msgs) == 0 {
		t.Fatal("no action at all: the generator tests nothing")
	}
	promos := map[string][]time.Time{} // sku/channel → starts
	days := map[string]int{}
	budget := map[string]float64{}
	for _, m := range msgs {
		recs, err := r.log.History(r.ctx, m.DecisionID)
		if err != nil || len(recs) == 0 {
			t.Fatalf("action %s without its record: %v", m.DecisionID, err)
		}
		rec := audit.Decided(recs) // not a deferral before it: that one read what it could not use
		if rec.Event != audit.EventDecided {
			t.Fatalf("action %s without a decided record: %+v", m.DecisionID, recs)
		}
		if m.Kind == act.Promote {
			if m.Discount > maxDiscount || (m.Channel == "web" && m.Discount > webMax) {
				t.Errorf("%s: %g %% on %s", m.DecisionID, m.Discount, m.Channel)
			}
			k := m.SKU + "/" + m.Channel
			promos[k] = append(promos[k], m.Start)
			day := m.Start.UTC().Format(time.DateOnly)
			days[day]++
			budget[day] += m.Discount
		}
		set := sets[rec.RuleSet.Version]
		if set == nil {
			t.Fatalf("record of unknown version %s", rec.RuleSet.Version)
		}
		i := slices.IndexFunc(set.Rules(), func(x rules.Rule) bool { return x.Name == rec.Rule.Name })
		reads := set.Rules()[i].Reads
		for _, in := range rec.Inputs {
			read := (in.Name == "units" && (reads.AllFeatures || slices.Contains(reads.Features, "units"))) ||
				(in.Name == "availability" && (reads.Lines || reads.AllFeatures || slices.Contains(reads.Features, "availability")))
			if read && (in.Stale || in.Historical || in.Partial) {
				t.Errorf("%s (rule %s: %s) acted on %s@%s stale=%v historical=%v partial=%v", m.DecisionID, rec.Rule.Name, rec.Rule.When,
					in.Name, in.Key, in.Stale, in.Historical, in.Partial)
			}
		}
		if reads.Inventory && rec.Inventory == nil {
			t.Errorf("%s (rule %s) acted on a stock nobody counted", m.DecisionID, rec.Rule.Name)
		}
	}
	for k, starts := range promos {
		slices.SortFunc(starts, func(a, b time.Time) int { return a.Compare(b) })
		for i := 1; i < len(starts); i++ {
			if gap := starts[i].Sub(starts[i-1]); gap < cooldown {
				t.Errorf("%s promoted twice within %s", k, gap)
			}
		}
	}
	for day, n := range days {
		if n > dayCount || budget[day] > dayBudget {
			t.Errorf("%s: %d promotions, %g budget (caps %d, %g)", day, n, budget[day], dayCount, dayBudget)
		}
	}
	np := 0
	for _, s := range promos {
		np += len(s)
	}
	t.Logf("%d actions (%d promotions over %d days); guard: %d allowed, %d suppressed", len(msgs), np, len(days),
		r.guard.Metrics.Allowed.Load(), r.guard.Metrics.Suppressed.Load())
}
