package kvkey

import (
	"go.uber.org/goleak"

	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	for _, s := range []string{"SKU-1", "Plant 1", "A.B=C", "line1.press.state", "日本", "=", "a/b_c", "\x00\xff"} {
		e := Escape(s)
		for i := 0; i < len(e); i++ {
			if !keep(e[i]) && e[i] != '=' {
				t.Fatalf("Escape(%q) = %q holds %q", s, e, e[i])
			}
		}
		u, err := Unescape(e)
		if err != nil || u != s {
			t.Fatalf("Unescape(Escape(%q)) = %q, %v", s, u, err)
		}
	}
	if got := Escape("Plant 1"); got != "Plant=201" {
		t.Errorf("Escape = %q", got)
	}
	parts, err := Split(Join("units", "line1.press", "A B"), 3)
	if err != nil || strings.Join(parts, "|") != "units|line1.press|A B" {
		t.Errorf("Split(Join) = %q, %v", parts, err)
	}
}

func TestUnescapeRejects(t *testing.T) {
	for _, s := range []string{"", "=", "=4", "=4G", "=41", "a b", "a.b", "=zz"} {
		if _, err := Unescape(s); err == nil {
			t.Errorf("Unescape(%q) accepted", s)
		}
	}
	if _, err := Split("a.b", 3); err == nil {
		t.Error("Split with the wrong part count accepted")
	}
}

func FuzzEscape(f *testing.F) {
	f.Add("SKU-1")
	f.Add("A.B=C")
	f.Fuzz(func(t *testing.T, s string) {
		if s == "" {
			return
		}
		u, err := Unescape(Escape(s))
		if err != nil || u != s {
			t.Fatalf("round trip of %q: %q, %v", s, u, err)
		}
		_, _ = Unescape(s) // never panics
	})
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
