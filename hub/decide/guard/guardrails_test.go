package guard

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestGuardrails runs one table case per guardrail: earlier proposals (each must be allowed) set up
// the shared state, then the proposal under test must get the outcome and name the guardrail.
func TestGuardrails(t *testing.T) {
	type tc struct {
		name      string
		cfg       func(*Config)
		prior     func(c *clock) []Proposal
		p         func(c *clock) Proposal
		kill      bool
		want      Outcome
		guardrail string
		value     float64 // of the failed assessment, when want is not Allow
		limit     float64
	}
	stale := func(f func(*Input)) func(c *clock) Proposal {
		return func(c *clock) Proposal {
			p := promo(c, "r", "SKU-1", "retail", 10)
			f(&p.Inputs[1])
			return p
		}
	}
	cases := []tc{
		{name: "allow", p: func(c *clock) Proposal { return promo(c, "r", "SKU-1", "retail", 10) }, want: Allow},
		{name: "max discount", cfg: func(c *Config) { c.Approval.Above = 0 },
			p: func(c *clock) Proposal { return promo(c, "r", "SKU-1", "retail", 31) }, want: Suppress, guardrail: GMaxDiscount, value: 31, limit: 30},
		{name: "max discount of the channel", cfg: func(c *Config) { c.Approval.Above = 0 },
			p: func(c *clock) Proposal { return promo(c, "r", "SKU-1", "web", 26) }, want: Suppress, guardrail: GMaxDiscountChannel, value: 26, limit: 25},
		{name: "stale input", p: stale(func(i *Input) { i.Stale = true }), want: Suppress, guardrail: GInputs, value: 1},
		{name: "historical input", p: stale(func(i *Input) { i.Historical = true }), want: Suppress, guardrail: GInputs, value: 1},
		{name: "partial input", p: stale(func(i *Input) { i.Partial = true }), want: Suppress, guardrail: GInputs, value: 1},
		{name: "bad-quality input", p: stale(func(i *Input) { i.BadQuality = true }), want: Suppress, guardrail: GInputs, value: 1},
		{name: "hold on stale input", p: func(c *clock) Proposal {
			p := promo(c, "h", "SKU-1", "retail", 0)
			p.Kind, p.Discount, p.Inputs[0].Stale = Hold, 0, true
			return p
		}, want: Suppress, guardrail: GInputs, value: 1},
		{name: "proposal from the past", p: func(c *clock) Proposal {
			p := promo(c, "r", "SKU-1", "retail", 10)
			p.Time = p.Time.Add(-11 * time.Minute)
			return p
		}, want: Suppress, guardrail: GTimeSkew, value: -660, limit: 600},
		{name: "approval threshold", p: func(c *clock) Proposal { return promo(c, "r", "SKU-1", "retail", 21) },
			want: NeedsApproval, guardrail: GApproval, value: 21, limit: 20},
		{name: "cooldown", prior: func(c *clock) []Proposal { return []Proposal{promo(c, "a", "SKU-1", "retail", 10)} },
			p:    func(c *clock) Proposal { c.Add(time.Hour); return promo(c, "b", "SKU-1", "retail", 10) },
			want: Suppress, guardrail: GCooldown, value: 3600, limit: 6 * 3600},
		{name: "cooldown is per channel", prior: func(c *clock) []Proposal { return []Proposal{promo(c, "a", "SKU-1", "retail", 10)} },
			p: func(c *clock) Proposal { return promo(c, "b", "SKU-1", "wholesale", 10) }, want: Allow},
		{name: "cooldown passed", prior: func(c *clock) []Proposal { return []Proposal{promo(c, "a", "SKU-1", "retail", 10)} },
			p: func(c *clock) Proposal { c.Add(6 * time.Hour); return promo(c, "b", "SKU-1", "retail", 10) }, want: Allow},
		{name: "daily count", prior: func(c *clock) []Proposal {
			var ps []Proposal
			for _, s := range []string{"A", "B", "C", "D", "E"} {
				ps = append(ps, promo(c, "r", s, "retail", 5))
			}
			return ps
		}, p: func(c *clock) Proposal { return promo(c, "r", "F", "retail", 5) }, want: Suppress, guardrail: GDailyCount, value: 6, limit: 5},
		{name: "daily budget", prior: func(c *clock) []Proposal {
			return []Proposal{promo(c, "r", "A", "retail", 20), promo(c, "r", "B", "retail", 20), promo(c, "r", "C", "wholesale", 20), promo(c, "r", "D", "wholesale", 15)}
		}, p: func(c *clock) Proposal { return promo(c, "r", "E", "retail", 10) }, want: Suppress, guardrail: GDailyBudget, value: 85, limit: 80},
		{name: "daily count of the channel", prior: func(c *clock) []Proposal {
			return []Proposal{promo(c, "r", "A", "web", 5), promo(c, "r", "B", "web", 5), promo(c, "r", "C", "web", 5)}
		}, p: func(c *clock) Proposal { return promo(c, "r", "D", "web", 5) }, want: Suppress, guardrail: GDailyCountChannel, value: 4, limit: 3},
		{name: "caps count the day in the zone", cfg: func(c *Config) { c.Zone = "Asia/Tokyo" }, prior: func(c *clock) []Proposal {
			// 10:00 UTC is 19:00 in Tokyo; five promotions fill that day, then 15:00 UTC is the next day.
			var ps []Proposal
			for _, s := range []string{"A", "B", "C", "D", "E"} {
				ps = append(ps, promo(c, "r", s, "retail", 5))
			}
			return ps
		}, p: func(c *clock) Proposal { c.Add(5 * time.Hour); return promo(c, "r", "F", "retail", 5) }, want: Allow},
		{name: "budget by expected units", cfg: func(c *Config) { c.BudgetWeight = WeightDiscountUnits; c.Daily.MaxBudget = 1000 },
			prior: func(c *clock) []Proposal {
				p := promo(c, "r", "A", "retail", 10)
				p.ExpectedUnits = 90
				return []Proposal{p}
			}, p: func(c *clock) Proposal {
				p := promo(c, "r", "B", "retail", 10)
				p.ExpectedUnits = 11
				return p
			}, want: Suppress, guardrail: GDailyBudget, value: 1010, limit: 1000},
		{name: "budget by expected units needs them", cfg: func(c *Config) { c.BudgetWeight = WeightDiscountUnits },
			p: func(c *clock) Proposal { return promo(c, "r", "A", "retail", 10) }, want: Suppress, guardrail: GDailyBudget, limit: 80},
		{name: "kill switch", kill: true, p: func(c *clock) Proposal { return promo(c, "r", "A", "retail", 10) },
			want: Suppress, guardrail: GKillSwitch, value: 1},
		{name: "kill switch stops holds", kill: true, p: func(c *clock) Proposal {
			p := promo(c, "h", "SKU-1", "retail", 0)
			p.Kind, p.Discount = Hold, 0
			return p
		}, want: Suppress, guardrail: GKillSwitch, value: 1},
		{name: "holds ignore caps", cfg: func(c *Config) { c.Daily.MaxPromotions = 1 },
			prior: func(c *clock) []Proposal { return []Proposal{promo(c, "r", "A", "retail", 10)} },
			p: func(c *clock) Proposal {
				p := promo(c, "h", "A", "retail", 0)
				p.Kind, p.Discount = Hold, 0
				return p
			}, want: Allow},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g, c, _ := single(t, tc.cfg)
			ctx := context.Background()
			if tc.prior != nil {
				for _, p := range tc.prior(c) {
					if v := mustCheck(t, g, p); v.Outcome != Allow {
						t.Fatalf("prior %s %s: %s %s: %s", p.SKU, p.Channel, v.Outcome, v.Guardrail, v.Reason)
					}
				}
			}
			if tc.kill {
				if err := g.SetKill(ctx, true, "ops", "test"); err != nil {
					t.Fatal(err)
				}
			}
			p := tc.p(c)
			v := mustCheck(t, g, p)
			if v.Outcome != tc.want || v.Guardrail != tc.guardrail {
				t.Fatalf("got %s by %q (%s), want %s by %q; failed: %s", v.Outcome, v.Guardrail, v.Reason, tc.want, tc.guardrail, failedNames(v))
			}
			if v.DecisionID != p.ID || v.Replayed {
				t.Fatalf("verdict id %s replayed %v", v.DecisionID, v.Replayed)
			}
			if tc.want == Allow {
				if a, bad := v.Failed(); bad {
					t.Fatalf("allowed with a failed assessment %+v", a)
				}
				return
			}
			a, bad := v.Failed()
			if !bad || a.Guardrail != tc.guardrail || a.Value != tc.value || a.Limit != tc.limit || v.Reason == "" {
				t.Fatalf("failed assessment %+v (reason %q), want %s %g vs %g", a, v.Reason, tc.guardrail, tc.value, tc.limit)
			}
		})
	}
}

// TestAssessmentsRecorded: an allowed promotion lists every guardrail it passed, value vs limit.
func TestAssessmentsRecorded(t *testing.T) {
	g, c, _ := single(t, nil)
	v := mustCheck(t, g, promo(c, "r", "SKU-1", "web", 10))
	var names []string
	for _, a := range v.Assessments {
		names = append(names, a.Guardrail)
		if !a.Passed {
			t.Fatalf("failed %+v", a)
		}
	}
	want := "kill_switch inputs time_skew max_discount max_discount_channel approval cooldown daily_count_channel daily_budget_channel daily_count daily_budget"
	if got := strings.Join(names, " "); got != want {
		t.Fatalf("assessments %q\nwant %q", got, want)
	}
	for _, a := range v.Assessments {
		if a.Guardrail == GDailyCount && (a.Value != 1 || a.Limit != 5) {
			t.Fatalf("daily count %+v", a)
		}
	}
}

// TestInvalidProposals: malformed proposals are refused with the field named, nothing recorded.
func TestInvalidProposals(t *testing.T) {
	g, c, js := single(t, nil)
	for field, mutate := range map[string]func(*Proposal){
		"id":             func(p *Proposal) { p.ID = "a.b" },
		"sku":            func(p *Proposal) { p.SKU = "" },
		"channel":        func(p *Proposal) { p.Channel = "" },
		"rule_version":   func(p *Proposal) { p.RuleVersion = "" },
		"time":           func(p *Proposal) { p.Time = time.Time{} },
		"kind":           func(p *Proposal) { p.Kind = "discount" },
		"discount":       func(p *Proposal) { p.Discount = -1 },
		"duration":       func(p *Proposal) { p.Duration = 0 },
		"expected_units": func(p *Proposal) { p.ExpectedUnits = -2 },
		"inputs[1].name": func(p *Proposal) { p.Inputs[1].Name = "" },
	} {
		p := promo(c, "r", "SKU-1", "retail", 10)
		mutate(&p)
		_, err := g.Check(context.Background(), p)
		var ie *InputError
		if !errors.As(err, &ie) || ie.Field != field || !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: got %v", field, err)
		}
	}
	if n := len(allRecords(t, js, g.cfg.Bucket)); n != 0 {
		t.Fatalf("%d records written for invalid proposals", n)
	}
}
