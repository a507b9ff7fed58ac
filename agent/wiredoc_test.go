package agent

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
)

// srcRow is the `src` row of the sample table in docs/wire-format.md; its first code span is the
// documented form, e.g. `<collector>:<node or topic>`.
var srcRow = regexp.MustCompile("(?m)^\\| `src` \\|.*?`(<collector>[^`]*<[^`>]+>)`")

// TestSampleSourceMatchesWireFormat: the src of a real OPC UA sample has the form
// docs/wire-format.md documents (issue 18.7: the code wrote collector:node, the doc collector/node).
func TestSampleSourceMatchesWireFormat(t *testing.T) {
	doc, err := os.ReadFile("../docs/wire-format.md")
	if err != nil {
		t.Fatal(err)
	}
	m := srcRow.FindSubmatch(doc)
	if m == nil {
		t.Fatal("docs/wire-format.md: no `src` row with a `<collector>…<…>` form in the sample table")
	}
	form := string(m[1])
	opc := startOPC(t, testutil.FreePort(t), 0, "c1")
	h := start(t, baseConfig+fmt.Sprintf(`
collectors:
  - name: press-plc
    type: opcua
    endpoint: %s
    security: {policy: None, mode: None}
    nodes: [{node: "%s", signal: press.c1}]
`, opc.url(), opc.node("c1")))
	var got []signal.Sample
	testutil.WaitFor(t, 30*time.Second, "the first OPC UA sample in the buffer", func() bool {
		got, _ = bufferedRecords(t, h.buf, signal.StreamSamples)
		return len(got) > 0
	})
	want := regexp.MustCompile(`<[^>]+>$`).ReplaceAllString(strings.Replace(form, "<collector>", "press-plc", 1), opc.node("c1"))
	if got[0].Source != want {
		t.Errorf("src %q; docs/wire-format.md documents %s, which is %q here", got[0].Source, form, want)
	}
}
