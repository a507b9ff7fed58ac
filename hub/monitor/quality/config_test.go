package quality

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/gemba-io/gemba/config"
)

func TestConfigAllErrorsAtOnce(t *testing.T) {
	cfg := DefaultConfig()
	err := config.NewDecoder().Unmarshal([]byte(`
window: 1h
reference_lag: 30m
slices: 0
samples: 2
defaults:
  psi: -1
  ks_alpha: 0.9
features:
  temp:
    edges: [1, 3, 2]
    bins: 1
    bad_share: 2
`), &cfg)
	var ps config.Problems
	if !errors.As(err, &ps) {
		t.Fatalf("want problems, got %v", err)
	}
	want := []string{"reference_lag", "slices", "samples", "defaults.psi", "defaults.ks_alpha", "features.temp.edges[2]",
		"features.temp.bins", "features.temp.bad_share"}
	text := err.Error()
	for _, w := range want {
		if !strings.Contains(text, w) {
			t.Errorf("no problem at %s in:\n%s", w, text)
		}
	}
	for _, p := range ps {
		if p.Line == 0 && p.Path != "" {
			t.Errorf("problem without a line: %v", p)
		}
	}
	good := DefaultConfig()
	if err := config.NewDecoder().Unmarshal([]byte("features:\n  temp: {psi: 0.2, edges: [1, 2, 3]}\n"), &good); err != nil {
		t.Fatal(err)
	}
	if th := good.For("temp"); th.PSI != 0.2 || len(th.Edges) != 3 || th.KS != DefaultThresholds().KS {
		t.Errorf("per-feature thresholds over defaults: %+v", th)
	}
	good.Features["tmep"] = Thresholds{}
	err = config.NewDecoder().Unmarshal([]byte("{}"), &checkFeatures{cfg: &good, defined: []string{"temp", "units"}})
	if err == nil || !strings.Contains(err.Error(), `no feature "tmep" is defined`) {
		t.Errorf("unknown feature in thresholds: %v", err)
	}
}

// checkFeatures runs CheckFeatures through a decoder's report (as the hub's config does).
type checkFeatures struct {
	cfg     *Config
	defined []string
}

func (c *checkFeatures) Validate(r config.Report) { c.cfg.CheckFeatures(r, c.defined) }

// stuck_after: per feature over the defaults, 0 turns it off, unset it is 6h cut to reference_lag;
// longer than reference_lag or negative is a problem at its line, with the others.
func TestConfigStuckAfter(t *testing.T) {
	cfg := DefaultConfig()
	err := config.NewDecoder().Unmarshal([]byte(`
window: 1h
reference_lag: 2h
defaults:
  stuck_after: 3h
features:
  temp: {stuck_after: -1m}
  units: {stuck_after: 0}
`), &cfg)
	var ps config.Problems
	if !errors.As(err, &ps) || len(ps) != 2 {
		t.Fatalf("want 2 problems, got %v", err)
	}
	for i, w := range []struct {
		path string
		line int
		text string
	}{{"defaults.stuck_after", 5, "longer than reference_lag 2h"}, {"features.temp.stuck_after", 7, "must not be negative"}} {
		if p := ps[i]; !strings.HasSuffix(p.Path, w.path) || p.Line != w.line || !strings.Contains(p.Error(), w.text) {
			t.Errorf("problem %d: want %s at line %d saying %q, got %v (line %d)", i, w.path, w.line, w.text, p, p.Line)
		}
	}
	good := DefaultConfig()
	if err := config.NewDecoder().Unmarshal([]byte("reference_lag: 2h\nfeatures:\n  units: {stuck_after: 0}\n  temp: {psi: 0.3}\n  other: {stuck_after: 30m}\n"), &good); err != nil {
		t.Fatal(err)
	}
	// By default only a level of a signal can be stuck; set for a feature, any feature.
	for _, c := range []struct {
		feature, edge string
		want          time.Duration
	}{{"units", "mean", 0}, {"temp", "mean", 2 * time.Hour}, {"other", "count", 30 * time.Minute},
		{"unlisted", "p95", 2 * time.Hour}, {"availability", "availability", 0}, {"parts", "delta", 0}} {
		if got := good.stuckAfter(c.feature, c.edge); got != c.want {
			t.Errorf("stuck_after of %s (%s): %s, want %s", c.feature, c.edge, got, c.want)
		}
	}
	if def := DefaultConfig(); def.stuckAfter("temp", "mean") != DefaultStuckAfter {
		t.Errorf("default stuck_after: want %s", DefaultStuckAfter)
	}
	code := testConfig()
	code.Defaults.StuckAfter = ptr(5 * time.Hour)
	if _, err := Open(t.Context(), nil, Options{Config: code}); err == nil || !strings.Contains(err.Error(), "defaults.stuck_after") {
		t.Errorf("a config built in code with stuck_after past reference_lag: %v", err)
	}
}
