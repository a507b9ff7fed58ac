package config

import (
	"errors"
	"strings"
	"testing"
)

// TestSecondDocumentIsAProblem: a file of two YAML documents (--- between them) was read up to the
// second one, silently: its settings (a read token, the guard section) were dropped and the file
// passed as valid. The second document is a problem at its line, reported with the first's.
func TestSecondDocumentIsAProblem(t *testing.T) {
	for _, tc := range []struct {
		yml  string
		line int
	}{
		{"top: x\nitems: [{name: a, colour: red}]\n---\nitems:\n  - {name: b}\n", 3},
		{"---\ntop: x\n---\ntop: y\n", 3},
		{"top: x\n...\n---\n top: : y\n", 3}, // the second does not even parse
	} {
		_, err := decodeDoc(t, tc.yml, nil)
		var ps Problems
		if !errors.As(err, &ps) {
			t.Errorf("%q: want Problems, got %v", tc.yml, err)
			continue
		}
		found := false
		for _, p := range ps {
			if p.Line == tc.line && strings.Contains(p.Msg, "document") {
				found = true
			}
		}
		if !found {
			t.Errorf("%q: want a problem at line %d about the second document, got:\n%v", tc.yml, tc.line, err)
		}
	}
	// One document, with its markers, or an empty one after it, is fine.
	for _, yml := range []string{"---\ntop: x\n", "top: x\n...\n", "---\ntop: x\n---\n", "top: x\n---\n# nothing\n"} {
		if out, err := decodeDoc(t, yml, nil); err != nil || out.Top != "x" {
			t.Errorf("%q: %+v, %v", yml, out, err)
		}
	}
}
