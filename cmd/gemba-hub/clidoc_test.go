package main

import (
	"testing"

	"github.com/gemba-io/gemba/internal/doccheck"
)

// TestCLIDocumented: every command and flag of gemba-hub is named in docs/ or README.md, and
// every gemba-hub command line there names commands and flags that exist.
func TestCLIDocumented(t *testing.T) {
	doccheck.CheckCobraCLI(t, newRoot(), doccheck.ReadCorpus(t, "../.."))
}
