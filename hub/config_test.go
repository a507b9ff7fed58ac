package hub

import (
	"strings"
	"testing"
)

// A decision id must be remembered longer than a proposal of it can come: its time bucket plus the
// skew the guard accepts. A shorter guard retention would let the sweep forget an id that is then
// decided a second time, caps counted again.
func TestRetentionOutlivesTheBucket(t *testing.T) {
	doc := `
hub: {id: h1, data_dir: /tmp/gemba-hub-config-test}
decide: {bucket: 48h}
guard: {max_discount: 20, retention: 30h, max_skew: 10m}
`
	_, err := Parse([]byte(doc), func(string) (string, bool) { return "", false })
	if err == nil || !strings.Contains(err.Error(), "guard.retention") || !strings.Contains(err.Error(), "decide.bucket") {
		t.Fatalf("retention shorter than the bucket: %v, want an error at guard.retention naming decide.bucket", err)
	}
	_, err = Parse([]byte(strings.Replace(doc, "retention: 30h", "retention: 49h", 1)), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatalf("retention beyond bucket + skew: %v", err)
	}
}
