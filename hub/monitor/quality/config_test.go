package quality

import (
	"errors"
	"strings"
	"testing"

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
