package guard

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/gemba-io/gemba/config"
)

const exampleYAML = `
bucket: GUARD
replicas: 3
max_discount: 30
cooldown: 12h
budget_weight: discount_x_units
daily:
  max_promotions: 200
  max_budget: 50000
channels:
  web:
    max_discount: 25
    daily: {max_promotions: 50}
approval:
  above_discount: 20
  ttl: 4h
  forbid_self_approval: true
zone: Europe/Berlin
max_skew: 5m
`

func TestConfigDecode(t *testing.T) {
	cfg := DefaultConfig()
	if err := config.NewDecoder().Unmarshal([]byte(exampleYAML), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Replicas != 3 || cfg.Cooldown != 12*time.Hour || cfg.Channels["web"].Daily.MaxPromotions != 50 ||
		cfg.Approval.TTL != 4*time.Hour || cfg.BudgetWeight != WeightDiscountUnits || cfg.Retention != 72*time.Hour {
		t.Fatalf("%+v", cfg)
	}
	if err := cfg.err(); err != nil {
		t.Fatal(err)
	}
}

func TestConfigProblems(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{"max_discount: 0\n", "line 1: max_discount: must be a percentage above 0"},
		{"max_discount: 130\n", "line 1: max_discount: must be a percentage above 0"},
		{"max_discount: 30\ndaily:\n  max_promotions: -1\n", "line 3: daily.max_promotions: must not be negative"},
		{"max_discount: 30\nchannels:\n  Web:\n    max_discount: 101\n", "channels.Web: channel names are lower-case"},
		{"max_discount: 30\nchannels:\n  web:\n    max_discount: 101\n", "line 4: channels.web.max_discount: must be a percentage from 0"},
		{"max_discount: 30\nzone: Mars/Olympus\n", "line 2: zone: must be an IANA time zone"},
		{"max_discount: 30\nbudget_weight: units\n", "line 2: budget_weight: must be"},
		{"max_discount: 30\nmax_discount_pct: 3\n", "line 2: max_discount_pct"},
		{"max_discount: 30\nretention: 1h\n", "line 2: retention: must be at least 25h"},
		{"max_discount: 30\napproval:\n  above_discount: 10\n  ttl: 0s\n", "approval.ttl: must be positive"},
	} {
		cfg := DefaultConfig()
		err := config.NewDecoder().Unmarshal([]byte(tc.doc), &cfg)
		var ps config.Problems
		if !errors.As(err, &ps) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %q", tc.doc, err, tc.want)
		}
	}
	// New refuses an invalid config without a decoder too.
	cfg := DefaultConfig()
	if err := cfg.err(); err == nil || !strings.Contains(err.Error(), "max_discount") {
		t.Fatalf("default without max_discount: %v", err)
	}
}
