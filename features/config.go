package features

import (
	"fmt"
	"math"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gemba-io/gemba/config"
)

// Config is the `features:` list of the agent configuration. Rules are tried in order; the first
// rule whose signal name or glob matches a sample's signal applies to it.
type Config []Rule

// Rule configures the features of one signal or glob pattern of signals.
type Rule struct {
	// Signal is an exact signal name or a glob (path.Match syntax: *, ?, [...]); '*' matches dots.
	Signal string `yaml:"signal"`
	// Kind is gauge (default), counter or state.
	Kind string `yaml:"kind"`
	// Window is the window length (required, > 0).
	Window time.Duration `yaml:"window"`
	// Hop makes windows sliding: a window of length Window is emitted every Hop. Zero means tumbling
	// (Hop = Window). Window must be a multiple of Hop.
	Hop time.Duration `yaml:"hop"`
	// Compute lists the features to emit (see the tables in the package documentation).
	Compute []string `yaml:"compute"`
	// By attributes counter increments to the value another signal (e.g. the current SKU) had at the
	// time of each counter sample; features then carry a label named ByLabel.
	By string `yaml:"by"`
	// ByLabel is the label key for By (default: the last dot-separated part of By, e.g. "sku").
	ByLabel string `yaml:"by_label"`
	// Rename maps computed feature names to emitted names, e.g. {delta: units_produced}.
	Rename map[string]string `yaml:"rename"`
	// ForwardRaw keeps the raw samples flowing to the samples stream as well (default true).
	ForwardRaw *bool `yaml:"forward_raw"`
	// AllowedLateness is how far behind the signal's watermark (its newest event time) a sample may
	// arrive and still be folded into its window. Default 0.
	AllowedLateness time.Duration `yaml:"allowed_lateness"`
	// IdleTimeout closes a signal's open windows when no sample arrived for this long (wall clock).
	// Default Window + AllowedLateness; "-1s" (any negative value) disables it.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// Retention drops the series of a signal that sent nothing for this long (wall clock): its
	// windows are closed as the idle timeout closes them, then its state (a counter's baseline, a
	// state) is forgotten, in memory and in the checkpoint. Default the larger of 168h,
	// 2 x (Window + AllowedLateness) and 2 x IdleTimeout; any negative value disables it. When set,
	// at least Window + AllowedLateness and IdleTimeout.
	Retention time.Duration `yaml:"retention"`
	// Uncertain is include (default) or exclude: whether Uncertain-quality samples are folded.
	// Bad samples are always excluded and counted as bad_count.
	Uncertain string `yaml:"uncertain"`
	// CounterMax is the value a counter rolls over after (e.g. 65535); 0 means it never rolls over and
	// every decrease is a reset to zero.
	CounterMax float64 `yaml:"counter_max"`
	// EWMAAlpha is the smoothing factor of ewma (0 < alpha <= 1, default 0.1).
	EWMAAlpha float64 `yaml:"ewma_alpha"`
	// States maps state values to their role (kind state).
	States StateMapping `yaml:"states"`
}

// StateMapping says which state values count as running and as planned production time, and
// optionally names numeric state codes. Values are compared as text (1, "1" and 1.0 differ: an int
// state 1 is "1").
type StateMapping struct {
	Running []string          `yaml:"running"`
	Planned []string          `yaml:"planned"` // empty: every state is planned time
	Names   map[string]string `yaml:"names"`   // e.g. {"1": running, "2": idle}
}

// Feature names by kind.
var (
	gaugeFeatures   = []string{"count", "sum", "mean", "min", "max", "stddev", "first", "last", "delta", "rate", "ewma", "twa", "p50", "p90", "p95", "p99"}
	counterFeatures = []string{"delta", "rate", "resets"}
	stateFeatures   = []string{"time_in_state", "transitions", "availability"}
)

// Validate checks every rule; paths are relative to the list (e.g. "[2].window").
func (c Config) Validate(r config.Report) {
	for i := range c {
		c[i].validate(r.Sub(config.Index(i)))
	}
}

// CheckSignals reports rules whose `by` names a signal for which known returns false. The agent
// calls it with the set of statically configured signal names.
func (c Config) CheckSignals(r config.Report, known func(signal string) bool) {
	for i, ru := range c {
		if ru.By != "" && !known(ru.By) {
			r.Errorf(config.Index(i)+".by", "unknown signal %q (no collector produces it)", ru.By)
		}
	}
}

func (ru *Rule) validate(r config.Report) {
	if ru.Signal == "" {
		r.Errorf("signal", "is required")
	} else if _, err := path.Match(ru.Signal, ""); err != nil {
		r.Errorf("signal", "bad pattern %q: %v", ru.Signal, err)
	}
	kind := ru.kind()
	var allowed []string
	switch kind {
	case "gauge":
		allowed = gaugeFeatures
	case "counter":
		allowed = counterFeatures
	case "state":
		allowed = stateFeatures
	default:
		r.Errorf("kind", "unknown kind %q (want gauge, counter or state)", ru.Kind)
	}
	switch {
	case ru.Window <= 0:
		r.Errorf("window", "must be > 0, got %s", ru.Window)
	case ru.Window%time.Millisecond != 0:
		r.Errorf("window", "must be a whole number of milliseconds, got %s", ru.Window)
	}
	switch {
	case ru.Hop < 0:
		r.Errorf("hop", "must be >= 0, got %s", ru.Hop)
	case ru.Hop > 0 && ru.Window > 0 && (ru.Hop > ru.Window || ru.Window%ru.Hop != 0):
		r.Errorf("hop", "window %s must be a multiple of hop %s", ru.Window, ru.Hop)
	case ru.Hop > 0 && ru.Window > 0 && ru.Window/ru.Hop > 1000:
		r.Errorf("hop", "window %s / hop %s gives more than 1000 panes", ru.Window, ru.Hop)
	}
	if ru.AllowedLateness < 0 {
		r.Errorf("allowed_lateness", "must be >= 0, got %s", ru.AllowedLateness)
	}
	if least := max(ru.Window+ru.AllowedLateness, ru.IdleTimeout); ru.Retention > 0 && ru.Retention < least {
		r.Errorf("retention", "must be at least window + allowed_lateness and idle_timeout (%s), got %s", least, ru.Retention)
	}
	if len(ru.Compute) == 0 {
		r.Errorf("compute", "must list at least one feature")
	}
	seen := map[string]bool{}
	for i, f := range ru.Compute {
		p := "compute" + config.Index(i)
		switch {
		case seen[f]:
			r.Errorf(p, "duplicate feature %q", f)
		case allowed != nil && !slices.Contains(allowed, f):
			r.Errorf(p, "unknown feature %q for kind %s (want one of %s)", f, kind, strings.Join(allowed, ", "))
		}
		seen[f] = true
	}
	for k, v := range ru.Rename {
		if !seen[k] {
			r.Errorf("rename."+k, "renames %q, which is not in compute", k)
		}
		if v == "" {
			r.Errorf("rename."+k, "new name must not be empty")
		}
		if v == "bad_count" || v == "uncertain_count" {
			r.Errorf("rename."+k, "new name %q is the name of a quality record", v)
		}
	}
	// Every window's records must keep distinct names, or a consumer keeps one value of two.
	emitted := map[string]string{} // emitted name -> computed feature
	for _, f := range ru.Compute {
		n := f
		if v := ru.Rename[f]; v != "" {
			n = v
		}
		if other, dup := emitted[n]; dup && other != f {
			renamed, with := f, other
			if _, ok := ru.Rename[f]; !ok {
				renamed, with = other, f
			}
			r.Errorf("rename."+renamed, "new name %q is also the name of feature %q", n, with)
		}
		emitted[n] = f
	}
	if ru.By != "" {
		if kind != "counter" {
			r.Errorf("by", "grouping is supported for kind counter only")
		}
		if ru.By == ru.Signal {
			r.Errorf("by", "a signal cannot be grouped by itself")
		}
		if strings.ContainsAny(ru.By, "*?[") {
			r.Errorf("by", "must name one signal, not a pattern: %q", ru.By)
		}
	} else if ru.ByLabel != "" {
		r.Errorf("by_label", "set without by")
	}
	switch ru.Uncertain {
	case "", "include", "exclude":
	default:
		r.Errorf("uncertain", "unknown policy %q (want include or exclude)", ru.Uncertain)
	}
	if ru.CounterMax < 0 || math.IsInf(ru.CounterMax, 0) {
		r.Errorf("counter_max", "must be >= 0")
	} else if ru.CounterMax > 0 && kind != "counter" {
		r.Errorf("counter_max", "applies to kind counter only")
	}
	if ru.EWMAAlpha < 0 || ru.EWMAAlpha > 1 {
		r.Errorf("ewma_alpha", "must be in (0, 1], got %g", ru.EWMAAlpha)
	}
	st := ru.States
	if kind != "state" {
		if len(st.Running)+len(st.Planned)+len(st.Names) > 0 {
			r.Errorf("states", "applies to kind state only")
		}
	} else if slices.Contains(ru.Compute, "availability") {
		if len(st.Running) == 0 {
			r.Errorf("states.running", "availability needs the running states")
		}
		for i, s := range st.Running {
			if len(st.Planned) > 0 && !slices.Contains(st.Planned, s) {
				r.Errorf("states.running"+config.Index(i), "running state %q is not in planned", s)
			}
		}
	}
}

func (ru *Rule) kind() string {
	if ru.Kind == "" {
		return "gauge"
	}
	return ru.Kind
}

// defaultRetention is the least default retention: a week, longer than the standstills (a
// weekend, a holiday) through which a counter reporting by exception must keep its baseline.
const defaultRetention = 168 * time.Hour

// kind codes of compiled rules
const (
	kindGauge = iota
	kindCounter
	kindState
)

// rule is a Rule compiled for the hot path.
type rule struct {
	src        *Rule
	kind       int
	window     int64 // ns
	hop        int64 // ns
	panes      int64 // window / hop
	lateness   int64
	idle       time.Duration // <= 0: disabled
	retention  time.Duration // <= 0: disabled
	forwardRaw bool
	exclUnc    bool
	alpha      float64
	counterMax float64
	byLabel    string
	names      map[string]string // compute name -> emitted name
	running    map[string]bool
	planned    map[string]bool // nil: all
	stateNames map[string]string
	// gauge feature flags, so the fold only does what is asked for
	want      map[string]bool
	quantiles []quantile
	sketch    bool
	exactCap  int // values a pane keeps for exact percentiles: exactBudget / panes
	twa       bool
	ewma      bool
	fp        string // fingerprint: checkpoints of a changed rule are not restored
}

type quantile struct {
	name string
	q    float64
}

func compile(ru *Rule) *rule {
	c := &rule{src: ru, window: int64(ru.Window), hop: int64(ru.Hop), lateness: int64(ru.AllowedLateness),
		forwardRaw: ru.ForwardRaw == nil || *ru.ForwardRaw, exclUnc: ru.Uncertain == "exclude",
		alpha: ru.EWMAAlpha, counterMax: ru.CounterMax, names: map[string]string{}, want: map[string]bool{}}
	if c.hop == 0 {
		c.hop = c.window
	}
	c.panes = c.window / c.hop
	c.idle = ru.IdleTimeout
	if c.idle == 0 {
		c.idle = ru.Window + ru.AllowedLateness
	}
	c.retention = ru.Retention
	if c.retention == 0 {
		c.retention = max(defaultRetention, 2*(ru.Window+ru.AllowedLateness), 2*c.idle)
	}
	if c.alpha == 0 {
		c.alpha = 0.1
	}
	switch ru.kind() {
	case "counter":
		c.kind = kindCounter
	case "state":
		c.kind = kindState
	}
	for _, f := range ru.Compute {
		c.want[f] = true
		c.names[f] = f
		if n, ok := ru.Rename[f]; ok {
			c.names[f] = n
		}
		if c.kind == kindGauge && len(f) == 3 && f[0] == 'p' {
			q, _ := strconv.Atoi(f[1:])
			c.quantiles = append(c.quantiles, quantile{f, float64(q) / 100})
			c.sketch = true
		}
	}
	c.exactCap = int(max(1, exactBudget/c.panes))
	c.twa = c.want["twa"]
	c.ewma = c.want["ewma"]
	if ru.By != "" {
		c.byLabel = ru.ByLabel
		if c.byLabel == "" {
			c.byLabel = ru.By[strings.LastIndexByte(ru.By, '.')+1:]
		}
	}
	c.running = set(ru.States.Running)
	if len(ru.States.Planned) > 0 {
		c.planned = set(ru.States.Planned)
	}
	c.stateNames = ru.States.Names
	c.fp = fmt.Sprintf("%s|%d|%d|%v|%s|%g|%g|%v", ru.kind(), c.window, c.hop, ru.Compute, ru.By, c.alpha, c.counterMax, c.exclUnc)
	return c
}

func set(l []string) map[string]bool {
	m := make(map[string]bool, len(l))
	for _, s := range l {
		m[s] = true
	}
	return m
}

// name returns the emitted name of computed feature f.
func (c *rule) name(f string) string {
	if n, ok := c.names[f]; ok {
		return n
	}
	return f
}
