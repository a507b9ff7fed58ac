package opcua

import (
	"bytes"
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/sim"
)

var browsedNode = regexp.MustCompile(`node: "([^"]+)"`)

// browseNodes runs Browse and returns the node ids it printed, in order, and the whole output.
func browseNodes(t *testing.T, opts BrowseOptions) ([]string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out bytes.Buffer
	if err := Browse(ctx, opts, &out); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range browsedNode.FindAllStringSubmatch(out.String(), -1) {
		ids = append(ids, m[1])
	}
	return ids, out.String()
}

func duplicates(ids []string) []string {
	seen := map[string]int{}
	var dup []string
	for _, id := range ids {
		if seen[id]++; seen[id] == 2 {
			dup = append(dup, id)
		}
	}
	return dup
}

// Issue 18 point 8: browse from the default root (Objects, i=85) of gemba-sim's real OPC UA server
// finds every one of its variables, each once, and none of the Server object's diagnostics unless
// asked; what it prints is a config validate accepts.
func TestBrowseSimFindsItsVariablesOnce(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	s, err := sim.New(sim.Options{Plant: sim.DefaultConfig(), OPCUA: addr})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	want := map[string]bool{}
	for _, m := range s.Plant().Machines {
		if m.Protocol != sim.OPCUA {
			continue
		}
		for i := range m.Points {
			want["nsu="+sim.NamespaceURI+";s="+m.Signal(m.Points[i].Field)] = true
		}
	}
	if len(want) == 0 {
		t.Fatal("the default plant has no OPC UA machines")
	}
	opts := BrowseOptions{Endpoint: s.OPCUAEndpoint(), Security: Security{Policy: "None", Mode: "None"}, DataDir: t.TempDir()}

	ids, out := browseNodes(t, opts)
	if d := duplicates(ids); len(d) > 0 {
		t.Errorf("browse printed %d node ids twice: %v", len(d), d)
	}
	got := map[string]bool{}
	for _, id := range ids {
		got[id] = true
		if !want[id] {
			t.Errorf("browse printed %s, which is not one of the sim's variables (Server object not skipped?)", id)
		}
	}
	for id := range want {
		if !got[id] {
			t.Errorf("browse missed the sim's variable %s", id)
		}
	}
	if !strings.Contains(out, fmt.Sprintf(": %d variables\n", len(want))) {
		t.Errorf("header does not count %d variables:\n%s", len(want), out)
	}
	// Pasted into a collector, the output is valid: no duplicate node ids, no duplicate signals.
	decodeConfig(t, "endpoint: "+s.OPCUAEndpoint()+"\nsecurity: {policy: None, mode: None}\n"+out)

	// --include-server adds the server's own variables, still each once.
	opts.IncludeServer = true
	all, _ := browseNodes(t, opts)
	if d := duplicates(all); len(d) > 0 {
		t.Errorf("browse --include-server printed %d node ids twice: %v", len(d), d)
	}
	server := 0
	for _, id := range all {
		if !strings.HasPrefix(id, "nsu="+sim.NamespaceURI+";") {
			server++
		}
	}
	if server == 0 || len(all) != len(ids)+server {
		t.Errorf("--include-server: %d ids, %d outside the sim's namespace; want the %d sim variables plus some", len(all), server, len(ids))
	}
}
