// Package rules is the hub's rule language: rule sets in YAML whose conditions are CEL expressions
// over one SKU's input, compiled once per version, linted, and evaluated into promote/hold matches.
package rules

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
	"go.yaml.in/yaml/v3"

	"github.com/gemba-io/gemba/config"
	"github.com/gemba-io/gemba/hub/decide/experiment"
)

// MaxFileSize bounds a rule file: hundreds of rules fit in far less.
const MaxFileSize = 1 << 20

// DefaultCostLimit bounds one evaluation of one condition, in CEL's cost units (about one per
// operation and per list element visited). The rules of the examples cost under 100; the limit
// stops a condition that loops over large neighbour lists before it holds up every other SKU.
const DefaultCostLimit = 10_000

// HitPolicy says which matching rules decide.
type HitPolicy string

// Hit policies.
const (
	First   HitPolicy = "first"   // the first matching rule, in evaluation order, decides
	Collect HitPolicy = "collect" // every matching rule decides
)

// ActionKind is what a rule asks for.
type ActionKind string

// Action kinds.
const (
	Promote ActionKind = "promote"
	Hold    ActionKind = "hold"
)

// Action is a rule's action as written. Channels may hold AllChannels.
type Action struct {
	Kind     ActionKind    `json:"kind"`
	Channels []string      `json:"channels"`
	Discount float64       `json:"discount,omitempty"` // percent, promote only
	Duration time.Duration `json:"duration,omitempty"` // promote only
	Audience string        `json:"audience,omitempty"` // promote only; empty: everyone the channel serves
	Reason   string        `json:"reason,omitempty"`   // hold only
}

func (a Action) equal(b Action) bool {
	return a.Kind == b.Kind && slices.Equal(a.Channels, b.Channels) && a.Discount == b.Discount &&
		a.Duration == b.Duration && a.Audience == b.Audience && a.Reason == b.Reason
}

// Rule is one compiled rule.
type Rule struct {
	Name        string
	Description string
	Priority    int
	When        string // the expression as written
	Action      Action
	Index       int    // position in the file
	Path        string // rules[i]
	// Reads is what the condition mentions: the inputs whose quality decides whether its match
	// may be acted on (a rule that never looks at the lines is not stopped by a stale line).
	Reads Reads
	// Experiment is the rule's holdout and bandit (nil: none); its id defaults to the rule's name.
	Experiment *experiment.Config

	prog     cel.Program // with runtime cost tracking and the limit
	fast     cel.Program // without tracking, for inputs within bounds; nil when the bound is over the limit
	maxCost  uint64      // the static worst case within bounds (with fast)
	ast      *cel.Ast
	line     int       // the rule's line in the file
	whenPos  []filePos // where each character of When is written
	whenRune []rune
}

// Set is a compiled, immutable rule set; safe for concurrent use.
type Set struct {
	name, label, description string
	policy                   HitPolicy
	version                  string
	rules                    []*Rule
	order                    []int // evaluation order: priority, highest first, then file order
	costLimit                uint64
	adapter                  types.Adapter
}

// Name returns the rule set's name.
func (s *Set) Name() string { return s.name }

// Label returns the human label of this version (may be empty).
func (s *Set) Label() string { return s.label }

// Description returns the rule set's description.
func (s *Set) Description() string { return s.description }

// Policy returns the hit policy.
func (s *Set) Policy() HitPolicy { return s.policy }

// Version is the sha256 (hex) of the rule set's canonical content: its name, description, hit
// policy and rules (names, descriptions, priorities, conditions without surrounding white space,
// actions) in file order. Layout, comments and the label do not change it, so the same rules
// under a new label are the same version, and any change a rule's behaviour can see is a new one.
func (s *Set) Version() string { return s.version }

// Rules returns copies of the rules in file order (the set itself cannot be changed).
func (s *Set) Rules() []Rule {
	out := make([]Rule, len(s.rules))
	for i, r := range s.rules {
		out[i] = *r
		out[i].Action.Channels = slices.Clone(r.Action.Channels)
	}
	return out
}

// Option configures loading.
type Option func(*options)

type options struct {
	costLimit uint64
	features  []string
	known     bool // features lists every feature (KnownFeatures was given)
}

// CostLimit sets the cost limit of one condition's evaluation (DefaultCostLimit by default).
func CostLimit(n uint64) Option { return func(o *options) { o.costLimit = n } }

// KnownFeatures makes Load reject a condition that names a feature not in names (with the
// column of the name), instead of leaving it to fail at run time as a missing feature.
// LoadStored ignores it: a stored version must run even after a feature is renamed.
func KnownFeatures(names ...string) Option {
	return func(o *options) { o.features, o.known = slices.Clone(names), true }
}

// Load decodes, validates and compiles a new rule set with the strict environment. Its error is
// config.Problems, every problem found, each with its path, line and (for conditions) column in
// the file; Describe prints them.
func Load(data []byte, opts ...Option) (*Set, error) { return load(data, true, opts) }

// LoadStored compiles a rule set that was valid when stored (an active or past version) with the
// permissive environment, so checks added since then cannot refuse it.
func LoadStored(data []byte, opts ...Option) (*Set, error) { return load(data, false, opts) }

// FileError is a rule file that did not load. Err is config.Problems when the content is wrong.
type FileError struct {
	Path string
	Err  error
}

func (e *FileError) Error() string { return strings.Join(Describe(e.Path, e.Err), "\n") }
func (e *FileError) Unwrap() error { return e.Err }

// LoadFile reads and loads a rule file (see Load).
func LoadFile(path string, opts ...Option) (*Set, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("rules: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, &FileError{Path: path, Err: err}
	}
	s, err := Load(data, opts...)
	if err != nil {
		return nil, &FileError{Path: path, Err: err}
	}
	return s, nil
}

// Describe turns a load error into lines FILE:LINE:COL: PATH: MESSAGE (FILE:LINE: when the
// column is not known).
func Describe(file string, err error) []string {
	var ps config.Problems
	if !errors.As(err, &ps) {
		return []string{file + ": " + err.Error()}
	}
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		loc := file
		switch {
		case p.Line > 0 && p.Column > 0:
			loc = fmt.Sprintf("%s:%d:%d", file, p.Line, p.Column)
		case p.Line > 0:
			loc = fmt.Sprintf("%s:%d", file, p.Line)
		}
		if p.Path != "" {
			loc += ": " + p.Path
		}
		out = append(out, loc+": "+p.Msg)
	}
	return out
}

func load(data []byte, strict bool, opts []Option) (*Set, error) {
	o := options{costLimit: DefaultCostLimit}
	for _, opt := range opts {
		opt(&o)
	}
	if len(data) > MaxFileSize {
		return nil, config.Problems{{Msg: fmt.Sprintf("the rule file is larger than the limit of %d KiB", MaxFileSize>>10)}}
	}
	if p, ok := secondDocument(data); ok {
		return nil, config.Problems{p}
	}
	// Literal data: no ${VAR} expansion, so a version's content and hash do not depend on the host.
	d := config.NewDecoder(config.WithoutEnv())
	f := file{new: strict}
	// Problems stay in d: the conditions are compiled even when other fields are wrong, so a
	// file's every problem comes out in one run.
	_ = d.Unmarshal(data, &f)
	env, err := permissiveEnv()
	if strict {
		env, err = strictEnv()
	}
	if err != nil {
		return nil, fmt.Errorf("rules: CEL environment: %w", err) // a bug here, not in the file
	}
	src := newSource(data)
	s := &Set{name: f.Name, label: f.Label, description: f.Description, policy: HitPolicy(f.HitPolicy), costLimit: o.costLimit,
		adapter: env.CELTypeAdapter()}
	for i, fr := range f.Rules {
		r := &Rule{Name: fr.body.Name, Description: fr.body.Description, Priority: fr.body.Priority,
			When: fr.body.When.text, Index: i, Path: fmt.Sprintf("rules[%d]", i), line: fr.node.Line}
		if p := fr.body.Promote; p != nil {
			r.Action = Action{Kind: Promote, Channels: p.Channels, Discount: p.Discount, Duration: p.Duration, Audience: p.Audience}
		} else if h := fr.body.Hold; h != nil {
			r.Action = Action{Kind: Hold, Channels: h.Channels, Reason: h.Reason}
		}
		if e := fr.body.Experiment; e != nil {
			x := *e
			if x.ID == "" {
				x.ID = r.Name
			}
			r.Experiment = &x
		}
		r.whenRune = []rune(r.When)
		r.whenPos = src.positions(fr.body.When.node)
		compile(d, env, r, strict, o)
		s.rules = append(s.rules, r)
	}
	if err := d.Err(); err != nil {
		return nil, err
	}
	s.order = make([]int, len(s.rules))
	for i := range s.order {
		s.order[i] = i
	}
	slices.SortStableFunc(s.order, func(a, b int) int { return cmp.Compare(s.rules[b].Priority, s.rules[a].Priority) })
	s.version = s.hash()
	return s, nil
}

// secondDocument reports a second YAML document: the decoder reads the first only, and a rule
// set silently cut short would be a different version than the author wrote.
func secondDocument(data []byte) (config.Problem, bool) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc, next yaml.Node
	if dec.Decode(&doc) != nil {
		return config.Problem{}, false // empty, or a syntax error the config decoder reports
	}
	if err := dec.Decode(&next); err == nil {
		return config.Problem{Line: next.Line, Msg: "a second YAML document (after ---): a rule file holds one rule set"}, true
	}
	return config.Problem{}, false
}

// compile type-checks a rule's condition and plans its program, reporting every CEL problem at
// its place in the file.
func compile(d *config.Decoder, env *cel.Env, r *Rule, strict bool, o options) {
	if r.When == "" || r.whenPos == nil {
		return // reported by validation
	}
	path := r.Path + ".when"
	ast, iss := env.Compile(r.When)
	if iss != nil && iss.Err() != nil {
		for _, e := range iss.Errors() {
			off := offsetOf(r.whenRune, e.Location.Line(), e.Location.Column())
			if off+1 < len(r.whenRune) && r.whenRune[off] == '.' {
				off++ // CEL places a field's errors at the dot; the name is what is wrong
			}
			at := r.posAtOffset(off)
			d.Errorf(&yaml.Node{Line: at.Line, Column: at.Col}, path, "%s", e.Message)
		}
		return
	}
	if !ast.OutputType().IsExactType(cel.BoolType) {
		at := r.whenPos[0]
		d.Errorf(&yaml.Node{Line: at.Line, Column: at.Col}, path, "a condition must be true or false, this one gives %s", ast.OutputType())
		return
	}
	if strict {
		for _, e := range strictChecks(ast, o.features, o.known) {
			at := r.posAtOffset(int(e.offset))
			d.Errorf(&yaml.Node{Line: at.Line, Column: at.Col}, path, "%s", e.msg)
		}
	}
	prog, err := env.Program(ast, cel.CostLimit(o.costLimit), cel.CostTracking(callCosts{}), cel.EvalOptions(cel.OptOptimize))
	if err != nil && !strict {
		// Optimizing compiles constant regular expressions while planning; a stored version
		// with a pattern the strict checks would refuse still runs, its rule failing at evaluation.
		prog, err = env.Program(ast, cel.CostLimit(o.costLimit), cel.CostTracking(callCosts{}))
	}
	if err != nil {
		d.Errorf(r.whenNode(), path, "%v", err)
		return
	}
	r.ast, r.prog = ast, prog
	r.Reads = readsOf(ast)
	// Within the input bounds the worst case is known: when it is under the limit, the same
	// condition also gets a program without runtime cost tracking.
	if est, err := env.EstimateCost(ast, sizeBounds{}); err == nil && est.Max <= o.costLimit {
		if fast, err := env.Program(ast, cel.EvalOptions(cel.OptOptimize)); err == nil {
			r.fast, r.maxCost = fast, est.Max
		}
	}
}

func (r *Rule) whenNode() *yaml.Node {
	at := r.whenPos[0]
	return &yaml.Node{Line: at.Line, Column: at.Col}
}

func (r *Rule) posAtOffset(off int) filePos {
	return r.whenPos[min(max(off, 0), len(r.whenPos)-1)]
}

// canonical is what Version hashes: a change to it is a change of behaviour or of its text.
type canonical struct {
	Name        string          `json:"name"`
	Description string          `json:"description"`
	HitPolicy   HitPolicy       `json:"hit_policy"`
	Rules       []canonicalRule `json:"rules"`
}

type canonicalRule struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	Priority    int    `json:"priority"`
	When        string `json:"when"`
	Action      Action `json:"action"`
	// omitempty: a rule without an experiment hashes as it did before experiments existed.
	Experiment *experiment.Config `json:"experiment,omitempty"`
}

// canonicalFormat names the encoding the version is taken over; change it when the encoding changes.
const canonicalFormat = "gemba-rules/1\n"

func (s *Set) hash() string {
	c := canonical{Name: s.name, Description: s.description, HitPolicy: s.policy}
	for _, r := range s.rules {
		c.Rules = append(c.Rules, canonicalRule{Name: r.Name, Description: r.Description, Priority: r.Priority,
			When: strings.TrimSpace(r.When), Action: r.Action, Experiment: r.Experiment})
	}
	b, _ := json.Marshal(c) // strings and finite numbers: cannot fail
	h := sha256.Sum256(append([]byte(canonicalFormat), b...))
	return hex.EncodeToString(h[:])
}
