package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// readmeValidate is the README's first agent command: "bin/gemba-agent validate -c FILE  # comment".
var readmeValidate = regexp.MustCompile(`(?m)^bin/gemba-agent (validate [^#\n]*?)\s*(#.*)?$`)

// TestReadmeValidateCommandPasses: the README's `bin/gemba-agent validate -c
// configs/agent.example.yaml`, run from the repository root exactly as written, with none of the
// example's variables set, exits 0 (issue 18.7: it exited 1 until three passwords were set).
func TestReadmeValidateCommandPasses(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := readmeValidate.FindSubmatch(readme)
	if m == nil {
		t.Fatal("README.md has no `bin/gemba-agent validate` command")
	}
	args := strings.Fields(string(m[1]))
	self, err := filepath.Abs(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "-test.run=^$")
	cmd.Dir = "../.."
	// A clean shell: none of the variables the example refers to.
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasSuffix(name, "_PASSWORD") && !strings.HasPrefix(name, "GEMBA_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "GEMBA_TEST_MAIN=1", "GEMBA_TEST_ARGS="+strings.Join(args, " "))
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Run(); err != nil || !strings.Contains(o.String(), "valid (config version") {
		t.Fatalf("README command `gemba-agent %s` from the repository root: %v\n%s%s", m[1], err, o.String(), e.String())
	}
}
