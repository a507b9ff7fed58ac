package backtest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gemba-io/gemba/hub"
	"github.com/gemba-io/gemba/hub/decide/rules"
)

// Two signals feeding one key close their windows at the same instant (a site's availability from
// both of its lines, in one message): the feature store keeps the later message's value, and within
// one message the larger signal's (features' later), so that every replica keeps the same one. The
// backtest keeps the same: here l2's 0.9 whole day long, never l1's 0 while it is down, so a rule
// on the site's availability never holds.
func TestBacktestKeepsTheFeatureStoresValueOnEqualWindows(t *testing.T) {
	_, dir := testConfig(t)
	src := strings.Replace(testHub, "features:\n", "features:\n  - {name: site_avail, signal: \"*.pack.state\", feature: availability, key: site, max_age: 1m}\n", 1)
	if err := os.WriteFile(filepath.Join(dir, "hub.yaml"), []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := hub.Load(filepath.Join(dir, "hub.yaml"), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	js := hubNATS(t, cfg)
	publishHistory(t, js, cfg)
	set, err := rules.Load([]byte(`name: site
hit_policy: first
rules:
  - name: hold-site-down
    when: has(features.site_avail) && !features.site_avail.stale && features.site_avail.value < 0.5
    hold: {channels: ["*"], reason: site down}
`), rules.KnownFeatures("availability", "units", "site_avail"))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	if _, err := Run(context.Background(), Options{JS: js, Config: cfg, Rules: set, From: at(9, 0), To: at(14, 0),
		Out: func(d Decision) { got = append(got, line(d)) }, TempDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Fatalf("decided on l1's value of the site's availability, which the feature store never keeps:\n%s", strings.Join(got, "\n"))
	}
}
