// Package experiment holds the hub's promotion experiments: deterministic holdouts with lift and a
// sample-ratio-mismatch check, and Thompson-sampling bandits over discount arms kept in a JetStream KV bucket.
package experiment

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strings"

	"github.com/gemba-io/gemba/config"
)

// Pools: which units of a rule share one bandit posterior.
const (
	// PoolUnit, the default: each SKU × channel learns its own response, starting from its channel's
	// (learnt from every SKU sold there) and leaning on it as much as its own sales are noisy. One
	// SKU × channel sees one promotion a day at most: alone, a noisy one (a wholesale day is a
	// handful of large orders) would learn nothing in weeks; pooled, a clean one (web) would be held
	// to its channel's average response, which is not its own.
	PoolUnit = "unit"
	// PoolChannel: one response per rule and channel, shared by its SKUs.
	PoolChannel = "channel"
	// PoolRule: one response for the whole rule.
	PoolRule = "rule"
)

// Config is a rule's `experiment:` block. Holdout and Bandit are independent: a rule may hold out
// units, choose its discount by bandit, or both (the bandit then learns from treated units only).
//
//	experiment:
//	  id: web-clearance-2026   # optional: the rule's name
//	  holdout: 0.1             # share of eligible SKU × channel units never promoted
//	  bandit:
//	    arms: [5, 10, 20, 30]  # discounts in percent
//	    floor: 0.02            # each eligible arm gets at least this share of a pool's outcomes
//	    pool: unit             # unit (default), channel or rule
//	    cost_share: 0          # unit cost as a share of the list price: 0 maximises revenue
//	    prior_lift: 0.4        # lift expected at a saturating discount, before any outcome
//	    prior_lift_sd: 0.35
type Config struct {
	// ID salts the holdout assignment and names the bandit's posteriors. Changing it reshuffles the
	// holdout and starts the bandit afresh; the engine fills it with the rule's name when empty.
	ID string `yaml:"id" json:"id,omitempty"`
	// Holdout is the share of eligible units held out, in (0, 1); 0 (or absent) holds none out.
	Holdout float64 `yaml:"holdout" json:"holdout,omitempty"`
	// Bandit chooses the discount among arms; nil keeps the rule's own discount.
	Bandit *BanditConfig `yaml:"bandit" json:"bandit,omitempty"`
}

// BanditConfig configures Thompson sampling over discount arms.
type BanditConfig struct {
	// Arms are the discounts in percent (0 < d < 100), at least two, all different.
	Arms []float64 `yaml:"arms" json:"arms"`
	// Floor is the least share of a pool's outcomes each eligible arm gets, so that no arm is starved
	// of the data that would show it is better; 0 ≤ floor and floor × len(arms) < 1.
	Floor float64 `yaml:"floor" json:"floor,omitempty"`
	// Pool is which units share a posterior: unit (default: partial pooling per channel), channel
	// or rule.
	Pool string `yaml:"pool" json:"pool,omitempty"`
	// CostShare is the unit cost as a share of the list price, in [0, 1): the bandit maximises the
	// margin lift × (1 − d − cost) / (1 − cost); 0 maximises revenue. A discount at or above the
	// margin is then never worth choosing (its value is ≤ 0).
	CostShare float64 `yaml:"cost_share" json:"cost_share,omitempty"`
	// PriorLift ± PriorLiftSD is the lift expected at a saturating discount before any outcome
	// (0.4 ± 0.35 when nil / 0): where every unit's first draws come from.
	PriorLift   *float64 `yaml:"prior_lift" json:"prior_lift,omitempty"`
	PriorLiftSD float64  `yaml:"prior_lift_sd" json:"prior_lift_sd,omitempty"`
}

var idRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$`)

// problems lists what is wrong as (field, message) pairs; Validate and Err share it.
func (c *Config) problems() config.Checks {
	var ps config.Checks
	add := ps.Add
	if c.ID != "" && !idRe.MatchString(c.ID) {
		add("id", "must be 1-128 letters, digits or _ . : / - starting with a letter or digit, got %q", c.ID)
	}
	if h := c.Holdout; math.IsNaN(h) || h < 0 || h >= 1 {
		add("holdout", "must be a share in (0, 1), or 0 for no holdout, got %v", h)
	}
	if c.Bandit == nil {
		return ps
	}
	b := c.Bandit
	switch len(b.Arms) {
	case 0:
		add("bandit.arms", "no arms: a bandit needs at least two discounts to choose from")
	case 1:
		add("bandit.arms", "one arm (%v): a bandit needs at least two discounts to choose from", b.Arms[0])
	}
	seen := map[float64]int{}
	for i, d := range b.Arms {
		f := fmt.Sprintf("bandit.arms[%d]", i)
		if math.IsNaN(d) || d <= 0 || d >= 100 {
			add(f, "must be a discount in percent above 0 and below 100, got %v", d)
			continue
		}
		if j, dup := seen[d]; dup {
			add(f, "discount %v is also arms[%d]", d, j)
		}
		seen[d] = i
	}
	if f := b.Floor; math.IsNaN(f) || f < 0 || (len(b.Arms) > 0 && f*float64(len(b.Arms)) >= 1) {
		add("bandit.floor", "must be ≥ 0 with floor × %d arms below 1, got %v", len(b.Arms), f)
	}
	switch b.Pool {
	case "", PoolChannel, PoolUnit, PoolRule:
	default:
		add("bandit.pool", "must be %q, %q or %q, got %q", PoolChannel, PoolUnit, PoolRule, b.Pool)
	}
	if p := b.PriorLift; p != nil && (math.IsNaN(*p) || *p < -1 || *p > 10) {
		add("bandit.prior_lift", "must be a lift between -1 and 10, got %v", *p)
	}
	if sd := b.PriorLiftSD; math.IsNaN(sd) || sd < 0 || sd > 10 {
		add("bandit.prior_lift_sd", "must be between 0 (default) and 10, got %v", sd)
	}
	if cs := b.CostShare; math.IsNaN(cs) || cs < 0 || cs >= 1 {
		add("bandit.cost_share", "must be a share in [0, 1), got %v", cs)
	}
	return ps
}

// Validate implements config.Validator: each problem names its field under the rule's experiment block.
func (c *Config) Validate(r config.Report) {
	c.problems().Report(r)
}

// Err is every problem of c as one error naming each field (for configs not read from YAML).
func (c *Config) Err() error {
	ps := c.problems()
	if len(ps) == 0 {
		return nil
	}
	msgs := make([]string, len(ps))
	for i, p := range ps {
		msgs[i] = "experiment." + p[0] + ": " + p[1]
	}
	return errors.New(strings.Join(msgs, "; "))
}

// pool is the bandit's pool with its default applied.
func (b *BanditConfig) pool() string {
	if b.Pool == "" {
		return PoolUnit
	}
	return b.Pool
}

// priorLift is the prior's lift and sd with their defaults applied.
func (b *BanditConfig) priorLift() (lift, sd float64) {
	lift, sd = defaultPriorLift, b.PriorLiftSD
	if b.PriorLift != nil {
		lift = *b.PriorLift
	}
	if sd == 0 {
		sd = defaultPriorLiftSD
	}
	return lift, sd
}

// sortedArms are the arms in increasing discount, so ties and listings do not depend on the
// order the rule's author wrote them in.
func (b *BanditConfig) sortedArms() []float64 {
	a := slices.Clone(b.Arms)
	slices.Sort(a)
	return a
}
