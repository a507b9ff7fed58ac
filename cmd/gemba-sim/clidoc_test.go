package main

import (
	"bytes"
	"errors"
	"flag"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gemba-io/gemba/internal/doccheck"
)

// simFlags are the flags gemba-sim takes, read from its own usage (-h), each with its default as
// the usage prints it ("" when it prints none: the zero value).
func simFlags(t *testing.T) map[string]string {
	var out, usage bytes.Buffer
	if err := run([]string{"-h"}, &out, &usage); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("gemba-sim -h: %v", err)
	}
	flags := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^  -([a-z][a-z0-9-]*)(.*\n(?:\s{4,}.*\n)*)`).FindAllStringSubmatch(usage.String(), -1) {
		def := ""
		if d := regexp.MustCompile(`\(default "?([^")]*)"?\)\s*$`).FindStringSubmatch(m[2]); d != nil {
			def = d[1]
		}
		flags[m[1]] = def
	}
	if len(flags) < 10 {
		t.Fatalf("read %d flags from gemba-sim -h:\n%s", len(flags), usage.String())
	}
	return flags
}

// TestCLIDocumented: every flag of gemba-sim is named (-name) in docs/ or README.md, and every
// gemba-sim command line there gives flags that exist.
func TestCLIDocumented(t *testing.T) {
	flags := simFlags(t)
	docs := doccheck.ReadCorpus(t, "../..")
	for _, name := range slices.Sorted(maps.Keys(flags)) {
		if !docs.Mentions(regexp.MustCompile(`(^|[\s\x60(\[])--?` + regexp.QuoteMeta(name) + `\b`)) {
			t.Errorf("flag -%s of gemba-sim is documented nowhere in docs/ or README.md", name)
		}
	}
	for _, inv := range docs.Invocations("gemba-sim") {
		for _, w := range inv.Words {
			w = strings.TrimLeft(w, "[(")
			if !strings.HasPrefix(w, "-") {
				continue
			}
			name, _, _ := strings.Cut(strings.TrimLeft(w, "-"), "=")
			name = strings.TrimRight(name, "])`,.")
			if _, ok := flags[name]; name != "" && name != "h" && name != "help" && !ok {
				t.Errorf("%s:%d: `gemba-sim %s`: gemba-sim has no flag -%s", inv.File, inv.Line, strings.Join(inv.Words, " "), name)
			}
		}
	}
}

// simFlagRow is a row of a flag table in docs/simulator.md: flags, then defaults.
var simFlagRow = regexp.MustCompile("(?m)^\\| (`-[^|]*) \\| ([^|]*) \\|")

// TestSimFlagDefaultsDocumented: the defaults docs/simulator.md's flag tables give are gemba-sim's.
func TestSimFlagDefaultsDocumented(t *testing.T) {
	flags := simFlags(t)
	doc, err := os.ReadFile("../../docs/simulator.md")
	if err != nil {
		t.Fatal(err)
	}
	span := regexp.MustCompile("`([^`]*)`")
	for _, row := range simFlagRow.FindAllStringSubmatch(string(doc), -1) {
		names, defs := span.FindAllStringSubmatch(row[1], -1), strings.Split(row[2], ",")
		if len(names) != len(defs) {
			continue
		}
		for i, n := range names {
			name := strings.TrimLeft(n[1], "-")
			want, ok := flags[name]
			d := span.FindStringSubmatch(defs[i])
			if !ok || d == nil {
				continue // a flag TestCLIDocumented reports, or a default in words: (off), (embedded)
			}
			if !sameDefault(d[1], want) {
				t.Errorf("docs/simulator.md: -%s is documented with default %q; gemba-sim -h says %q", name, d[1], want)
			}
		}
	}
}

// sameDefault compares a documented default with the usage's ("" is the zero value).
func sameDefault(doc, usage string) bool {
	if doc == usage || (usage == "" && (doc == "0" || doc == "false")) {
		return true
	}
	a, errA := time.ParseDuration(doc)
	b, errB := time.ParseDuration(usage)
	return errA == nil && errB == nil && a == b
}
