package agent

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestLogDurationsAreText: JSON logs wrote durations as nanoseconds ("retry_in":2000000000); they
// are text as in the config file, at the top level and inside groups (issue 18.7).
func TestLogDurationsAreText(t *testing.T) {
	for _, format := range []string{"json", "text"} {
		var b bytes.Buffer
		log := NewLogger(&b, format, 0)
		log.Info("collector failed; restarting", "in", 1500*time.Millisecond, "n", 3)
		log.WithGroup("uplink").Info("reconnecting", "wait", 2*time.Second)
		out := b.String()
		for _, want := range []string{"1.5s", "2s"} {
			if !strings.Contains(out, want) {
				t.Errorf("%s log lacks %q:\n%s", format, want, out)
			}
		}
		if strings.Contains(out, "1500000000") || strings.Contains(out, "2000000000") {
			t.Errorf("%s log has nanoseconds:\n%s", format, out)
		}
		if format == "json" {
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				var m map[string]any
				if err := json.Unmarshal([]byte(line), &m); err != nil {
					t.Fatalf("not JSON: %s", line)
				}
				if m["n"] != nil && m["n"] != float64(3) {
					t.Errorf("a number changed: %v", m["n"])
				}
			}
		}
	}
}
