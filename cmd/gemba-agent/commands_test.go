package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeConfig(t *testing.T, data string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(file, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

// TestValidatePrintRedactsURLPasswords: the printed config hid secrets but not a password written
// in a server URL (issue 12, point 9).
func TestValidatePrintRedactsURLPasswords(t *testing.T) {
	file := writeConfig(t, `agent: {id: gw1, site: plant1}
buffer: {dir: /tmp/gemba-test-buffer}
uplink: {nats: {servers: ["nats://gw1:hunter2@hub:4222"]}}
`)
	stdout, stderr, code := runAgent(t, nil, "validate", "--print", "-c", file)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	if strings.Contains(stdout, "hunter2") || !strings.Contains(stdout, "nats://[redacted]@hub:4222") {
		t.Fatalf("printed config:\n%s", stdout)
	}
}

// TestHostileYAMLFailsFastWithALine: nested aliases (a few hundred bytes that expand to millions
// of nodes) and a 50 MB file used to exhaust memory in validate and run; a NUL byte had no line
// (issue 12, points 8 and 12). Each is now one problem line.
func TestHostileYAMLFailsFastWithALine(t *testing.T) {
	var bomb strings.Builder
	bomb.WriteString("agent: {id: gw1, site: plant1}\nx0: &x0 [a, a, a, a, a, a, a, a, a]\n")
	for i := 1; i <= 9; i++ {
		fmt.Fprintf(&bomb, "x%d: &x%d [%s]\n", i, i, strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*x%d, ", i-1), 9), ", "))
	}
	bombFile := writeConfig(t, bomb.String())
	big := writeConfig(t, "agent: {id: gw1, site: plant1}\n# "+strings.Repeat("x", 50<<20)+"\n")
	nul := writeConfig(t, "agent: {id: gw1, site: plant1}\nbuffer:\n  dir: /tmp/\x00x\n")

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"validate", "-c", bombFile}, bombFile + ":7: x5[0]: alias *x4 expands the document by more than 100000 nodes"},
		{[]string{"run", "-c", bombFile}, bombFile + ":7: x5[0]: alias *x4 expands"},
		{[]string{"validate", "-c", big}, big + ": larger than the limit of 4MiB"},
		{[]string{"run", "-c", big}, big + ": larger than the limit of 4MiB"},
		{[]string{"validate", "-c", nul}, nul + ":3:13: NUL byte"},
	} {
		_, stderr, code := runAgent(t, nil, c.args...)
		lines := strings.Split(strings.TrimSpace(stderr), "\n")
		if code != 1 || len(lines) != 1 || !strings.Contains(lines[0], c.want) {
			t.Errorf("%v: exit %d, stderr:\n%.2000s\nwant one line containing %q", c.args, code, stderr, c.want)
		}
	}
}

// TestRunRefusesBadLogFlags: --log-format and --log-level override the file after it is
// validated, so they need checks of their own. An unknown format ran with JSON logs and no word;
// an unknown level failed without naming the flag. Both are refused before anything starts, with
// the flag in the message. (The buffer dir is a file: an agent that starts anyway fails there.)
func TestRunRefusesBadLogFlags(t *testing.T) {
	dir := t.TempDir()
	notDir := filepath.Join(dir, "not-a-dir")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	file := writeConfig(t, "agent: {id: gw1, site: plant1}\nbuffer: {dir: "+notDir+"}\nhttp: {enabled: false}\n")
	for _, c := range []struct {
		flag, want string
	}{
		{"--log-format=xml", `--log-format: must be json or text, got "xml"`},
		{"--log-level=verbose", `--log-level: unknown log level "verbose"`},
	} {
		_, stderr, code := runAgent(t, nil, "run", "-c", file, c.flag)
		lines := strings.Split(strings.TrimSpace(stderr), "\n")
		if code != 1 || len(lines) != 1 || !strings.Contains(lines[0], c.want) {
			t.Errorf("%s: exit %d, stderr:\n%s\nwant one line containing %q", c.flag, code, stderr, c.want)
		}
	}
}
