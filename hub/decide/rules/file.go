package rules

import (
	"fmt"
	"math"
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/gemba-io/gemba/config"
	"github.com/gemba-io/gemba/hub/decide/experiment"
)

// The YAML form of a rule set (docs/rules.md).
type file struct {
	Name        string     `yaml:"name"`
	Label       string     `yaml:"label"`
	Description string     `yaml:"description"`
	HitPolicy   string     `yaml:"hit_policy"`
	Rules       []fileRule `yaml:"rules"`
	// new is set for a new rule set (Load): checks added after versions were stored apply to
	// new sets only, so a stored version still loads.
	new bool
}

type fileRule struct {
	node *yaml.Node // the rule's mapping, for findings about the rule as a whole
	body ruleBody
}

type ruleBody struct {
	Name        string       `yaml:"name"`
	Description string       `yaml:"description"`
	Priority    int          `yaml:"priority"`
	When        expr         `yaml:"when"`
	Promote     *filePromote `yaml:"promote"`
	Hold        *fileHold    `yaml:"hold"`
	// Experiment holds out a share of the rule's units and/or chooses its discount by bandit
	// (promote rules only; docs/hub-learning.md).
	Experiment *experiment.Config `yaml:"experiment"`
}

func (r *fileRule) UnmarshalConfig(d *config.Decoder, n *yaml.Node, path string) {
	r.node = n
	d.DecodeMapping(n, path, &r.body)
}

// expr is a CEL expression with the node it was written in, to place its errors in the file.
type expr struct {
	text string
	node *yaml.Node
}

func (e *expr) UnmarshalConfig(d *config.Decoder, n *yaml.Node, path string) {
	e.node = n
	if s, ok := d.Scalar(n, path); ok {
		e.text = s
	}
}

type filePromote struct {
	Channels []string      `yaml:"channels"`
	Discount float64       `yaml:"discount"` // percent
	Duration time.Duration `yaml:"duration"`
	Audience string        `yaml:"audience"`
}

type fileHold struct {
	Channels []string `yaml:"channels"`
	Reason   string   `yaml:"reason"`
}

// AllChannels in an action's channels stands for every channel the SKU is sold via
// (Input.Neighbours.Channels).
const AllChannels = "*"

// MaxDiscount and MaxDuration bound what a rule may ask for; guardrails set the real limits.
const (
	MaxDiscount = 100.0
	MaxDuration = 366 * 24 * time.Hour
)

// MaxChannelLen bounds a channel id: the guard refuses longer ones (they name its keys).
const MaxChannelLen = 64

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$`)

func checkID(r config.Report, field, what, id string, required bool) {
	switch {
	case id == "" && required:
		r.Errorf(field, "%s is required", what)
	case id != "" && !idPattern.MatchString(id):
		r.Errorf(field, "%s %q: use letters, digits and _ . : - (at most 128, starting with a letter or digit)", what, id)
	}
}

func (f *file) Validate(r config.Report) {
	checkID(r, "name", "the rule set's name", f.Name, true)
	switch f.HitPolicy {
	case string(First), string(Collect):
	case "":
		r.Errorf("hit_policy", "hit_policy is required: first (the first matching rule decides) or collect (every matching rule)")
	default:
		r.Errorf("hit_policy", "unknown hit policy %q (use first or collect)", f.HitPolicy)
	}
	if len(f.Rules) == 0 {
		r.Errorf("rules", "a rule set needs at least one rule")
	}
	seen := map[string]int{}
	for i, rule := range f.Rules {
		name := rule.body.Name
		if j, dup := seen[name]; dup && name != "" {
			r.Errorf(fmt.Sprintf("rules[%d].name", i), "duplicate rule name %q (rules[%d] has it)", name, j)
			continue
		}
		seen[name] = i
	}
	if f.new {
		sharedExperiments(r, f.Rules)
	}
}

// sharedExperiments reports rules sharing an experiment id. The id salts the holdout and names the
// posteriors: two rules sharing one would learn from each other's outcomes as if one had decided.
func sharedExperiments(r config.Report, rules []fileRule) {
	exps := map[string]int{}
	for i, rule := range rules {
		e := rule.body.Experiment
		if e == nil {
			continue
		}
		id, field := e.ID, fmt.Sprintf("rules[%d].experiment.id", i)
		if id == "" {
			id, field = rule.body.Name, fmt.Sprintf("rules[%d].experiment", i)
		}
		if j, dup := exps[id]; dup && id != "" {
			r.Errorf(field, "experiment id %q is rules[%d]'s too: each rule's experiment needs its own id", id, j)
			continue
		}
		exps[id] = i
	}
}

func (b *ruleBody) Validate(r config.Report) {
	checkID(r, "name", "the rule's name", b.Name, true)
	if strings.TrimSpace(b.When.text) == "" && (b.When.node == nil || b.When.node.Kind == yaml.ScalarNode) {
		r.Errorf("when", "when is required: a CEL condition (use true to always match)")
	}
	switch {
	case b.Promote == nil && b.Hold == nil:
		r.Errorf("", "a rule needs an action: promote or hold")
	case b.Promote != nil && b.Hold != nil:
		r.Errorf("hold", "a rule has one action: promote or hold, not both")
	}
	if b.Experiment != nil && b.Promote == nil {
		r.Errorf("experiment", "an experiment needs a promote action: it holds out promotions or chooses their discount")
	}
	if e := b.Experiment; e != nil && e.Bandit != nil && b.Promote != nil {
		for i, d := range e.Bandit.Arms {
			if d > MaxDiscount {
				r.Errorf(fmt.Sprintf("experiment.bandit.arms[%d]", i), "discount %v is above %v", d, MaxDiscount)
			}
		}
	}
}

func checkChannels(r config.Report, chans []string) {
	if len(chans) == 0 {
		r.Errorf("channels", "channels is required: channel ids, or \"*\" for every channel the SKU is sold via")
	}
	seen := map[string]bool{}
	for i, c := range chans {
		field := "channels" + config.Index(i)
		if seen[c] {
			r.Errorf(field, "channel %q is listed twice", c)
			continue
		}
		seen[c] = true
		if c != AllChannels {
			checkID(r, field, "channel", c, true)
			if len(c) > MaxChannelLen {
				r.Errorf(field, "channel %q: at most %d bytes (what the guard and the outbox keep)", c, MaxChannelLen)
			}
		}
	}
	if seen[AllChannels] && len(chans) > 1 {
		r.Errorf("channels", "\"*\" already means every channel the SKU is sold via: list it alone")
	}
}

func (p *filePromote) Validate(r config.Report) {
	checkChannels(r, p.Channels)
	switch {
	case math.IsNaN(p.Discount) || p.Discount <= 0 || p.Discount > MaxDiscount:
		r.Errorf("discount", "discount %v: a percentage above 0 and at most %v", p.Discount, MaxDiscount)
	}
	switch {
	case p.Duration <= 0:
		r.Errorf("duration", "duration is required and positive (e.g. 24h)")
	case p.Duration > MaxDuration:
		r.Errorf("duration", "duration %s is longer than %s", p.Duration, MaxDuration)
	}
	checkID(r, "audience", "audience", p.Audience, false)
}

func (h *fileHold) Validate(r config.Report) {
	checkChannels(r, h.Channels)
	if strings.TrimSpace(h.Reason) == "" {
		r.Errorf("reason", "reason is required: it goes into the audit record and to the channel")
	}
}
