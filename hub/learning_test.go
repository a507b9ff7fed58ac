package hub

import (
	"strings"
	"testing"
	"time"
)

// Every bad value of the learn section is reported at once, with its path and line.
func TestLearnConfigProblems(t *testing.T) {
	_, err := Parse([]byte(`
learn:
  enabled: true
  refit_every: 10s
  history_days: 3
  horizon_days: 0
  promote: sometimes
  timezone: Mars/Olympus
  lock_ttl: 1ms
  workers: -1
  buckets: {sets: "a.b"}
`), func(string) (string, bool) { return "", false })
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{"learn.refit_every", "learn.history_days", "learn.horizon_days", `learn.promote`, `"sometimes"`,
		"learn.timezone", "Mars/Olympus", "learn.lock_ttl", "learn.workers", "learn.buckets.sets", "line 4", "line 7"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("no %q in:\n%v", want, err)
		}
	}
	cfg, err := Parse([]byte("learn: {enabled: true, refit_every: 0, promote: shadow}\n"), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	l := cfg.Learn
	if !l.Enabled || l.RefitEvery != 0 || l.Promote != "shadow" || l.HistoryDays != 365 || l.HorizonDays != 28 || l.LockTTL != 2*time.Minute {
		t.Fatalf("defaults not kept: %+v", l)
	}
	opts := RefitOptions(cfg, "ops", "why", "", nil)
	if opts.Promote != "shadow" || opts.History != 365 || opts.Source.Stream != "COMMERCE" || opts.Location.String() != "UTC" ||
		opts.Fit.FallbackWindow != cfg.Inventory.RateWindow {
		t.Fatalf("refit options: %+v", opts)
	}
}
