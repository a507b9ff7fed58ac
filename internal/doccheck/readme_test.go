package doccheck

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// makeTarget is a Makefile rule's target ("demo: ## ...").
var makeTarget = regexp.MustCompile(`(?m)^([a-z][a-z0-9-]*):`)

// TestReadmeFirstScreen: README.md's first screen says what gemba is and how to try it (make demo)
// and test it (make test).
func TestReadmeFirstScreen(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(readme), "\n")
	screen := strings.Join(lines[:min(len(lines), 30)], "\n")
	for _, want := range []string{"gemba turns factory-floor signals into business decisions", "make demo", "make test"} {
		if !strings.Contains(screen, want) {
			t.Errorf("README.md's first 30 lines lack %q", want)
		}
	}
}

// TestMakeTargetsExist: every `make TARGET` in the code of README.md and docs/ (fenced blocks and
// code spans) is a target of the Makefile.
func TestMakeTargetsExist(t *testing.T) {
	mk, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	targets := map[string]bool{}
	for _, m := range makeTarget.FindAllStringSubmatch(string(mk), -1) {
		targets[m[1]] = true
	}
	for _, inv := range ReadCorpus(t, "../..").Invocations("make") {
		for _, w := range inv.Words {
			if strings.HasPrefix(w, "-") || strings.Contains(w, "=") {
				continue // make -C dir, make FUZZTIME=60s fuzz
			}
			if !targets[w] {
				t.Errorf("%s:%d: `make %s`: the Makefile has no target %s", inv.File, inv.Line, strings.Join(inv.Words, " "), w)
			}
		}
	}
	if len(targets) < 5 {
		t.Fatalf("read %d targets from the Makefile", len(targets))
	}
}
