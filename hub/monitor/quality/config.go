package quality

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/gemba-io/gemba/config"
	"github.com/gemba-io/gemba/signal"
)

// Config is the hub's monitor section.
type Config struct {
	// Enabled runs the monitor: the ingest observes every fresh message into the monitor log.
	Enabled bool `yaml:"enabled" json:"enabled"`
	// Stream is the monitor log: what every replica's ingest observed (see log.go). Its retention
	// is derived: reference_lag + window + one slice, all the state needs.
	Stream   string `yaml:"stream" json:"stream"`
	Replicas int    `yaml:"replicas" json:"replicas"` // 0: nats.replicas
	// Window is the current window that drift and the bad-quality share are measured over, in event
	// time (the values' window ends), ending at the newest complete slice.
	Window time.Duration `yaml:"window" json:"window"`
	// ReferenceLag: the reference window is the window of the same length this much earlier (a
	// rolling day-ago window by default, so a daily cycle is not drift).
	ReferenceLag time.Duration `yaml:"reference_lag" json:"reference_lag"`
	// Slices per window: drift is evaluated each time a slice completes.
	Slices int `yaml:"slices" json:"slices"`
	// Samples is the reservoir per window kept for KS (and for PSI without configured edges).
	Samples int `yaml:"samples" json:"samples"`
	// GapAfter: a sequence hole still open this long after it appeared is a gap.
	GapAfter time.Duration `yaml:"gap_after" json:"gap_after"`
	// MaxAhead: an event time further than this past the moment it was logged is a clock error
	// (counted as a bad value); 0 turns the check off, for simulations in accelerated time.
	MaxAhead time.Duration `yaml:"max_ahead" json:"max_ahead"`
	// Every is how often freshness and gaps are checked against the clock.
	Every time.Duration `yaml:"every" json:"every"`
	// ListedOnly monitors only the features listed under Features (the others cost nothing): the
	// monitor costs every replica a few hundred ns per monitored value, and memory per key.
	ListedOnly bool `yaml:"listed_only" json:"listed_only"`
	// Defaults are the thresholds of every monitored feature; Features overrides them per feature.
	Defaults Thresholds            `yaml:"defaults" json:"defaults"`
	Features map[string]Thresholds `yaml:"features" json:"features,omitempty"`
}

// Thresholds say when a key is in breach. A zero field takes the default's.
type Thresholds struct {
	// PSI at or above which a distribution has drifted (0.25 is the usual "significant shift").
	PSI float64 `yaml:"psi" json:"psi"`
	// KS: the two-sample KS statistic D at or above which it has drifted. Either PSI or D must
	// reach its threshold, and the KS p-value be below KSAlpha (the difference is significant).
	KS      float64 `yaml:"ks" json:"ks"`
	KSAlpha float64 `yaml:"ks_alpha" json:"ks_alpha"`
	// BadShare of values (partial windows, NaN/Inf) or samples (quality bad) in the current window.
	BadShare float64 `yaml:"bad_share" json:"bad_share"`
	// MinCount: fewer values than this in either window and drift is not judged.
	MinCount int `yaml:"min_count" json:"min_count"`
	// MaxAge overrides the feature definition's max_age for staleness.
	MaxAge time.Duration `yaml:"max_age" json:"max_age"`
	// Edges are fixed PSI bin edges (ascending); without them PSI bins are the deciles of the
	// reference window's reservoir.
	Edges []float64 `yaml:"edges" json:"edges,omitempty"`
	// Bins is the number of reference-quantile bins when no edges are set (at most one per 25
	// values of the smaller window).
	Bins int `yaml:"bins" json:"bins"`
	// Confirm: a breach (or its recovery) counts after this many consecutive evaluations agree.
	Confirm int `yaml:"confirm" json:"confirm"`
	// StuckAfter: a value unchanged (to 1e-9 relative) for this long in event time, over at least
	// min_count values, is stuck, whatever the reference window holds. Unset (nil): the default's,
	// and in the defaults DefaultStuckAfter, at most reference_lag; 0 turns it off (for a
	// feature that is legitimately constant for long: a line's availability, units of a stopped
	// line).
	StuckAfter *time.Duration `yaml:"stuck_after" json:"stuck_after,omitempty"`
}

// Defaults of the section.
const (
	DefaultStream       = "GEMBA_MONITOR"
	DefaultWindow       = time.Hour
	DefaultReferenceLag = 24 * time.Hour
	DefaultSlices       = 4
	DefaultSamples      = 128
	DefaultGapAfter     = time.Minute
	DefaultEvery        = 5 * time.Second
	// DefaultStuckAfter is stuck_after when neither the defaults nor the feature set it (at most
	// reference_lag).
	DefaultStuckAfter = 6 * time.Hour
	// maxSlices bounds the ring of slices per key ((lag + window) / slice): the memory per key.
	maxSlices = 512
	maxEdges  = 64
	maxBins   = 64
)

// DefaultThresholds are the thresholds without configuration.
func DefaultThresholds() Thresholds {
	return Thresholds{PSI: 0.25, KS: 0.2, KSAlpha: 0.0001, BadShare: 0.1, MinCount: 30, Bins: 10, Confirm: 2}
}

// DefaultConfig is the section without configuration.
func DefaultConfig() Config {
	return Config{Enabled: true, Stream: DefaultStream, Window: DefaultWindow, ReferenceLag: DefaultReferenceLag, Slices: DefaultSlices,
		Samples: DefaultSamples, GapAfter: DefaultGapAfter, MaxAhead: time.Hour, Every: DefaultEvery, Defaults: DefaultThresholds()}
}

// Slice is the width of one slice.
func (c *Config) Slice() time.Duration { return c.Window / time.Duration(max(c.Slices, 1)) }

// ring is the number of slices a key keeps: the reference window, the lag and the current slice.
func (c *Config) ring() int {
	s := c.Slice()
	if s <= 0 {
		return 1
	}
	return int((c.ReferenceLag+c.Window)/s) + 2
}

// Retention is how long the monitor log keeps messages: everything the state is made of.
func (c *Config) Retention() time.Duration { return c.ReferenceLag + c.Window + 2*c.Slice() }

// For returns the thresholds of a feature: its own over the defaults.
func (c *Config) For(feature string) Thresholds {
	t := c.Defaults
	o, ok := c.Features[feature]
	if !ok {
		return t
	}
	if o.PSI != 0 {
		t.PSI = o.PSI
	}
	if o.KS != 0 {
		t.KS = o.KS
	}
	if o.KSAlpha != 0 {
		t.KSAlpha = o.KSAlpha
	}
	if o.BadShare != 0 {
		t.BadShare = o.BadShare
	}
	if o.MinCount != 0 {
		t.MinCount = o.MinCount
	}
	if o.MaxAge != 0 {
		t.MaxAge = o.MaxAge
	}
	if len(o.Edges) > 0 {
		t.Edges = o.Edges
	}
	if o.Bins != 0 {
		t.Bins = o.Bins
	}
	if o.Confirm != 0 {
		t.Confirm = o.Confirm
	}
	if o.StuckAfter != nil {
		t.StuckAfter = o.StuckAfter
	}
	return t
}

// stuckAfter is how long a value of a feature with thresholds t must stay unchanged to be stuck
// (0: never). At most reference_lag (problems; the default is cut to it): the drift verdict of a
// sensor that stuck lets go once its reference window holds mostly the stuck value (about
// reference_lag + window later), and the stuck verdict must hold by then; and every replica must
// see a run that long, whenever it started (the log keeps reference_lag + window + 2 slices).
//
// Set for the feature (features.<name>.stuck_after), it applies whatever the feature is. Otherwise
// only to a level of a signal (edge is the definition's edge feature: mean, min, max, a percentile,
// first, last, ewma, twa): counts, deltas, rates and state features (availability 1 all shift, units
// 0 on a stopped line) are constant for hours on a healthy line.
func (c *Config) stuckAfter(feature, edge string) time.Duration {
	if t, ok := c.Features[feature]; ok && t.StuckAfter != nil {
		return *t.StuckAfter
	}
	if !levelFeatures[edge] {
		return 0
	}
	if c.Defaults.StuckAfter != nil {
		return *c.Defaults.StuckAfter
	}
	return min(DefaultStuckAfter, c.ReferenceLag)
}

// levelFeatures are the edge features that follow a signal's level: a value of one of them unchanged
// for hours is a sensor that stopped, not a quiet line.
var levelFeatures = map[string]bool{"mean": true, "min": true, "max": true, "first": true, "last": true,
	"ewma": true, "twa": true, "p50": true, "p90": true, "p95": true, "p99": true}

// Validate checks one set of thresholds (config.Validator): every problem, each at its field.
func (t *Thresholds) Validate(r config.Report) {
	check := func(field string, v, lo, hi float64, what string) {
		if math.IsNaN(v) || v < lo || v > hi {
			r.Errorf(field, "%v: want %s", v, what)
		}
	}
	check("psi", t.PSI, 0, 100, "0 (the default) or a positive PSI such as 0.25")
	check("ks", t.KS, 0, 1, "a KS statistic between 0 and 1")
	check("ks_alpha", t.KSAlpha, 0, 0.5, "a significance level between 0 and 0.5, e.g. 0.001")
	check("bad_share", t.BadShare, 0, 1, "a share between 0 and 1")
	if t.MinCount < 0 {
		r.Errorf("min_count", "%d: must not be negative", t.MinCount)
	}
	if t.MaxAge < 0 {
		r.Errorf("max_age", "%s: must not be negative", t.MaxAge)
	}
	if t.Bins < 0 || t.Bins == 1 || t.Bins > maxBins {
		r.Errorf("bins", "%d: want 2 to %d bins", t.Bins, maxBins)
	}
	if t.Confirm < 0 || t.Confirm > 100 {
		r.Errorf("confirm", "%d: want 1 to 100 consecutive evaluations", t.Confirm)
	}
	if len(t.Edges) > maxEdges {
		r.Errorf("edges", "%d edges, at most %d", len(t.Edges), maxEdges)
	}
	for i, e := range t.Edges {
		switch {
		case math.IsNaN(e) || math.IsInf(e, 0):
			r.Errorf(fmt.Sprintf("edges[%d]", i), "%v: edges must be finite", e)
		case i > 0 && !(e > t.Edges[i-1]):
			r.Errorf(fmt.Sprintf("edges[%d]", i), "%v is not above the previous edge %v: edges must ascend", e, t.Edges[i-1])
		}
	}
}

// Validate checks the section (config.Validator). The feature names are checked against the
// hub's feature definitions by CheckFeatures.
func (c *Config) Validate(r config.Report) {
	c.problems().Report(r)
}

func (c *Config) problems() config.Checks {
	var ps config.Checks
	add := ps.Add
	if err := signal.CheckToken(c.Stream); err != nil || strings.ContainsAny(c.Stream, "/\\") {
		add("stream", "%q is not a stream name (one subject token, no '/' or '\\')", c.Stream)
	}
	switch c.Replicas {
	case 0, 1, 3, 5:
	default:
		add("replicas", "must be 1, 3 or 5, got %d", c.Replicas)
	}
	if c.Window < time.Second {
		add("window", "%s: want at least 1s", c.Window)
	}
	if c.ReferenceLag < c.Window {
		add("reference_lag", "%s is shorter than window %s: the reference would overlap the current window", c.ReferenceLag, c.Window)
	}
	if c.Slices < 1 || c.Slices > 60 {
		add("slices", "%d: want 1 to 60 slices per window", c.Slices)
	} else if c.Window >= time.Second && c.ReferenceLag >= c.Window && c.ring() > maxSlices {
		add("slices", "(reference_lag + window) / slice is %d slices per key, at most %d: fewer slices or a shorter reference_lag",
			c.ring(), maxSlices)
	}
	if c.Samples < 8 || c.Samples > 4096 {
		add("samples", "%d: want 8 to 4096 (the KS reservoir per window)", c.Samples)
	}
	if c.GapAfter <= 0 {
		add("gap_after", "must be positive")
	}
	if c.MaxAhead < 0 {
		add("max_ahead", "must not be negative (0 turns the check off)")
	}
	if c.Every <= 0 {
		add("every", "must be positive")
	}
	if c.Defaults.PSI <= 0 {
		add("defaults.psi", "required and positive")
	}
	if c.Defaults.KS <= 0 || c.Defaults.KSAlpha <= 0 {
		add("defaults", "ks and ks_alpha are required and positive")
	}
	if c.Defaults.BadShare <= 0 {
		add("defaults.bad_share", "required and positive")
	}
	if c.Defaults.Bins < 2 {
		add("defaults.bins", "required, at least 2")
	}
	if c.Defaults.Confirm < 1 {
		add("defaults.confirm", "required, at least 1")
	}
	// Past reference_lag the drift verdict of a stuck sensor may have let go before the stuck one
	// holds, and a run longer than the log keeps would be stuck on the replicas that ran through it
	// and not on one started since (see stuckAfter).
	names := make([]string, 0, len(c.Features))
	for n := range c.Features {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range append([]string{""}, names...) {
		field, th := "defaults.stuck_after", c.Defaults
		if n != "" {
			field, th = "features."+n+".stuck_after", c.Features[n]
		}
		switch d := th.StuckAfter; {
		case d == nil:
		case *d < 0:
			add(field, "%s: must not be negative (0 turns the check off)", *d)
		case *d > c.ReferenceLag:
			add(field, "%s is longer than reference_lag %s: a stuck sensor's drift verdict lets go about then, and a replica started later might not see a run that long",
				*d, c.ReferenceLag)
		}
	}
	return ps
}

// CheckFeatures reports thresholds for features the hub does not define (a typo would silently
// leave the defaults in force).
func (c *Config) CheckFeatures(r config.Report, defined []string) {
	names := make([]string, 0, len(c.Features))
	for n := range c.Features {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if !slices.Contains(defined, n) {
			r.Errorf("features."+n, "no feature %q is defined in the features section (defined: %s)", n, strings.Join(defined, ", "))
		}
	}
}

// check is Validate for a config built in code (Open).
func (c *Config) check() error {
	ps := c.problems()
	if len(ps) == 0 {
		return nil
	}
	msg := make([]string, len(ps))
	for i, p := range ps {
		msg[i] = p[0] + ": " + p[1]
	}
	return fmt.Errorf("monitor config: %s", strings.Join(msg, "; "))
}
