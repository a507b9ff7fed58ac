package collectors

import (
	"strings"
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

// TestBuildRecoversAPanickingConstructor: a constructor's bug is its collector's error, not the
// agent's crash (the agent builds every collector at start and at each reload).
func TestBuildRecoversAPanickingConstructor(t *testing.T) {
	Register(Factory{Type: "test-panics", NewConfig: func() any { return &struct{}{} },
		New: func(string, any, Deps) (Collector, error) { var m map[string]int; m["x"] = 1; return nil, nil }})
	c, err := Build(&Spec{Name: "press", Type: "test-panics"}, Deps{})
	if err == nil || c != nil || !strings.Contains(err.Error(), `collector "press": building it panicked`) {
		t.Fatalf("Build = %v, %v; want the collector's error naming the panic", c, err)
	}
}
