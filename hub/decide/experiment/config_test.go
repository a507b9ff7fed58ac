package experiment

import (
	"strings"
	"testing"

	"github.com/gemba-io/gemba/config"
)

type ruleDoc struct {
	Experiment Config `yaml:"experiment"`
}

func TestConfigDecodesAndValidates(t *testing.T) {
	good := `
experiment:
  id: web-clearance
  holdout: 0.1
  bandit:
    arms: [5, 10, 20]
    floor: 0.05
    pool: unit
    cost_share: 0.4
    prior_lift: 0
    prior_lift_sd: 0.5
`
	var d ruleDoc
	if err := config.NewDecoder(config.WithoutEnv()).Unmarshal([]byte(good), &d); err != nil {
		t.Fatal(err)
	}
	if d.Experiment.Holdout != 0.1 || len(d.Experiment.Bandit.Arms) != 3 {
		t.Fatalf("decoded %+v", d.Experiment)
	}
	if l, sd := d.Experiment.Bandit.priorLift(); l != 0 || sd != 0.5 {
		t.Fatalf("prior lift %v ± %v, want an explicit 0 ± 0.5", l, sd)
	}
	if l, sd := (&BanditConfig{}).priorLift(); l != defaultPriorLift || sd != defaultPriorLiftSD {
		t.Fatalf("default prior lift %v ± %v", l, sd)
	}
	if err := d.Experiment.Err(); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct{ doc, want string }{
		{"experiment:\n  holdout: 1.5\n", "line 2: experiment.holdout: must be a share in (0, 1)"},
		{"experiment:\n  holdout: -0.1\n", "experiment.holdout: must be a share in (0, 1), or 0 for no holdout, got -0.1"},
		{"experiment:\n  bandit:\n    arms: []\n", "experiment.bandit.arms: no arms"},
		{"experiment:\n  bandit:\n    floor: 0.1\n", "experiment.bandit.arms: no arms"},
		{"experiment:\n  bandit:\n    arms: [10]\n", "one arm (10)"},
		{"experiment:\n  bandit:\n    arms: [10, 0, 10]\n", "experiment.bandit.arms[1]: must be a discount in percent above 0 and below 100, got 0"},
		{"experiment:\n  bandit:\n    arms: [10, 0, 10]\n", "experiment.bandit.arms[2]: discount 10 is also arms[0]"},
		{"experiment:\n  bandit:\n    arms: [10, 20]\n    floor: 0.5\n", "experiment.bandit.floor: must be ≥ 0 with floor × 2 arms below 1, got 0.5"},
		{"experiment:\n  bandit:\n    arms: [10, 20]\n    pool: sku\n", `experiment.bandit.pool: must be "channel", "unit" or "rule", got "sku"`},
		{"experiment:\n  bandit:\n    arms: [10, 20]\n    cost_share: 1\n", "experiment.bandit.cost_share: must be a share in [0, 1), got 1"},
		{"experiment:\n  id: 'a b'\n", `experiment.id: must be 1-128 letters`},
		{"experiment:\n  bandit:\n    arms: [10, 20]\n    prior_lift: 20\n", "experiment.bandit.prior_lift: must be a lift between -1 and 10, got 20"},
		{"experiment:\n  bandit:\n    arms: [10, 20]\n    prior_lift_sd: -1\n", "experiment.bandit.prior_lift_sd: must be between 0 (default) and 10, got -1"},
		{"experiment:\n  bandit:\n    arm: [10, 20]\n", "arm"},
	} {
		var d ruleDoc
		err := config.NewDecoder(config.WithoutEnv()).Unmarshal([]byte(c.doc), &d)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: got %v, want an error containing %q", c.doc, err, c.want)
		}
	}

	bad := Config{Holdout: 2, Bandit: &BanditConfig{}}
	if err := bad.Err(); err == nil || !strings.Contains(err.Error(), "experiment.holdout:") || !strings.Contains(err.Error(), "experiment.bandit.arms: no arms") {
		t.Fatalf("Err() = %v", err)
	}
}
