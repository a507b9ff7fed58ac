package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// validLine is validate's last line: "FILE: valid (config version V, N collectors)".
var validLine = regexp.MustCompile(`(?m)^.*: valid \(config version (\w+), \d+ collectors\)\n\z`)

// goKey is a mapping key in Go's spelling (MaxBytes), which the config file does not accept.
var goKey = regexp.MustCompile(`(?m)^\s*(- )?[A-Z]\w*:`)

// TestValidatePrintRoundTrips: validate --print writes the effective config as YAML with the
// file's keys and readable durations and sizes (issue 18.7: it was JSON with Go field names and
// nanoseconds); pasted into a file, it validates to the same effective config and version.
func TestValidatePrintRoundTrips(t *testing.T) {
	files, _ := filepath.Glob("../../configs/agent*.yaml")
	sub, _ := filepath.Glob("../../configs/*/agent*.yaml")
	files = append(files, sub...)
	if len(files) == 0 {
		t.Fatal("no configs found")
	}
	env := exampleEnv(t)
	print := func(file string) (yml, version string) {
		t.Helper()
		stdout, stderr, code := runAgent(t, env, "validate", "--print", "-c", file)
		m := validLine.FindStringSubmatchIndex(stdout)
		if code != 0 || m == nil {
			t.Fatalf("%s: exit %d\n%s%s", file, code, stdout, stderr)
		}
		return stdout[:m[0]], stdout[m[2]:m[3]]
	}
	for _, f := range files {
		t.Run(filepath.Base(filepath.Dir(f))+"/"+filepath.Base(f), func(t *testing.T) {
			yml, version := print(f)
			if k := goKey.FindString(yml); k != "" {
				t.Errorf("printed config has a Go field name %q:\n%s", k, yml)
			}
			if !strings.Contains(yml, "\n  shutdown_timeout: ") || regexp.MustCompile(`(?m)_(timeout|interval|wait): \d{4,}$`).MatchString(yml) {
				t.Errorf("durations are not written as durations:\n%s", yml)
			}
			again := filepath.Join(t.TempDir(), "printed.yaml")
			if err := os.WriteFile(again, []byte(yml), 0o600); err != nil {
				t.Fatal(err)
			}
			yml2, version2 := print(again)
			if yml2 != yml || version2 != version {
				t.Errorf("printed config read back differs (version %s, was %s):\n%s\n--- was ---\n%s", version2, version, yml2, yml)
			}
		})
	}
}
