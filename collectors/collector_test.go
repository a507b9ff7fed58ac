package collectors

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestMatchGlob(t *testing.T) {
	cases := []struct {
		pattern, name string
		want          bool
	}{
		{"line1.press.sku", "line1.press.sku", true},
		{"line1.press.sku", "line1.press.skus", false},
		{"line1.*.sku", "line1.press.sku", true},
		{"line1.*.sku", "line1.a.b.sku", true},
		{"line1.*.sku", "line2.press.sku", false},
		{"*", "", true},
		{"*.temp", "temp", false},
		{"a*b*c", "axxbyyc", true},
		{"a*b*c", "axxbyy", false},
	}
	for _, c := range cases {
		if got := MatchGlob(c.pattern, c.name); got != c.want {
			t.Errorf("MatchGlob(%q, %q) = %v, want %v", c.pattern, c.name, got, c.want)
		}
	}
}
