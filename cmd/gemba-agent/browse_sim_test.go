package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/sim"
)

// Issue 18 point 8, end to end through the CLI: `browse` against gemba-sim's real OPC UA server from
// the default root prints the sim's variables once each; the output pasted into a config validates;
// the same config with one node pasted twice is refused, naming both lines.
func TestBrowseSimThenValidateRejectsDuplicateNode(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	s, err := sim.New(sim.Options{Plant: sim.DefaultConfig(), OPCUA: addr})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	dir := t.TempDir()
	out, stderr, code := runAgent(t, nil, "browse", s.OPCUAEndpoint(), "--security", "None/None", "--data-dir", dir)
	if code != 0 {
		t.Fatalf("browse exit %d\n%s", code, stderr)
	}
	var nodes []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "- {node:") {
			nodes = append(nodes, "      "+strings.TrimSpace(l))
		}
	}
	if len(nodes) == 0 || !strings.Contains(out, "nsu="+sim.NamespaceURI+";s=") {
		t.Fatalf("browse found none of the sim's variables:\n%s", out)
	}
	if strings.Contains(out, `node: "i=`) {
		t.Fatalf("browse printed the Server object's variables by default:\n%s", out)
	}
	write := func(name string, lines []string) string {
		cfg := fmt.Sprintf(`agent: {id: gw1, site: plant1, data_dir: %s/state}
buffer: {dir: %s/buf}
uplink:
  nats: {servers: ["nats://127.0.0.1:4222"], stream: GEMBA}
collectors:
  - name: sim
    type: opcua
    endpoint: %s
    security: {policy: None, mode: None}
    nodes:
%s
`, dir, dir, s.OPCUAEndpoint(), strings.Join(lines, "\n"))
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	if o, e, code := runAgent(t, nil, "validate", "-c", write("ok.yaml", nodes)); code != 0 {
		t.Fatalf("validate rejected browse output (exit %d)\n%s%s", code, o, e)
	}
	// The first node again, under another signal name, at the end (config line 10 is the first node).
	again := strings.Replace(nodes[0], "signal: ", "signal: again_", 1)
	dupLines := append(append([]string(nil), nodes...), again)
	file := write("dup.yaml", dupLines)
	_, e, code := runAgent(t, nil, "validate", "-c", file)
	first, last := 11, 11+len(nodes)
	re := regexp.MustCompile(fmt.Sprintf(`%s:%d: collectors\[0\]\.nodes\[%d\]\.node: node \S+ is listed twice: also at %s:%d \(collectors\[0\]\.nodes\[0\]\)`,
		regexp.QuoteMeta(file), last, len(nodes), regexp.QuoteMeta(file), first))
	if code != 1 || !re.MatchString(e) {
		t.Fatalf("validate of a duplicated node: exit %d, want 1 and a problem matching %s:\n%s", code, re, e)
	}
}
