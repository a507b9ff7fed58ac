package rules

import (
	"strings"
	"testing"
)

const experimentRules = `name: x
hit_policy: first
rules:
  - name: clear-web
    when: inventory.days_of_cover > 30
    promote: {channels: [web], discount: 10, duration: 24h}
    experiment:
      holdout: 0.1
      bandit: {arms: [5, 10, 20], floor: 0.05}
  - name: plain
    when: inventory.days_of_cover > 60
    promote: {channels: [web], discount: 10, duration: 24h}
`

// A rule's experiment block is read, defaults its id to the rule's name and is part of the version;
// a rule without one keeps the version it had before experiments existed.
func TestExperimentBlock(t *testing.T) {
	s, err := Load([]byte(experimentRules))
	if err != nil {
		t.Fatal(err)
	}
	rs := s.Rules()
	e := rs[0].Experiment
	if e == nil || e.ID != "clear-web" || e.Holdout != 0.1 || e.Bandit == nil || len(e.Bandit.Arms) != 3 || rs[1].Experiment != nil {
		t.Fatalf("experiment %+v, plain rule's %+v", e, rs[1].Experiment)
	}
	other, err := Load([]byte(strings.Replace(experimentRules, "holdout: 0.1", "holdout: 0.2", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if other.Version() == s.Version() {
		t.Error("a changed holdout share kept the version")
	}
	without, err := Load([]byte(`name: x
hit_policy: first
rules:
  - name: plain
    when: inventory.days_of_cover > 60
    promote: {channels: [web], discount: 10, duration: 24h}
`))
	if err != nil {
		t.Fatal(err)
	}
	// Fixed: the version of this file before the experiment field existed (an activated version
	// must keep its id, or a rollback to it would not find it).
	if got, want := without.Version(), stableVersion; got != want {
		t.Errorf("version %s, want %s (rules without experiments must hash as before)", got, want)
	}
}

func TestExperimentBlockErrors(t *testing.T) {
	for _, c := range []struct{ yaml, want string }{
		{strings.Replace(experimentRules, "holdout: 0.1", "holdout: 1.5", 1), "rules[0].experiment.holdout"},
		{strings.Replace(experimentRules, "[5, 10, 20]", "[5]", 1), "rules[0].experiment.bandit.arms"},
		{`name: x
hit_policy: first
rules:
  - name: h
    when: true
    hold: {channels: [web], reason: r}
    experiment: {holdout: 0.1}
`, "rules[0].experiment: an experiment needs a promote action"},
	} {
		_, err := Load([]byte(c.yaml))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("error %v, want one naming %q", err, c.want)
		}
	}
}

// stableVersion is the version of the experiment-free file in TestExperimentBlock, as computed before
// rules had experiments (at b36730a).
const stableVersion = "d5c8df134be962d554d8cf429815be7836bcf331149b96b157bcc0a75b9e19a1"
