package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// onlyProblem fails unless err is Problems with exactly one problem, and returns it.
func onlyProblem(t *testing.T, err error) Problem {
	t.Helper()
	var ps Problems
	if !errors.As(err, &ps) || len(ps) != 1 {
		t.Fatalf("want exactly one problem, got %v", err)
	}
	return ps[0]
}

// aliasBomb nests levels of anchors, each a list of fan aliases of the one before: the document
// is a few hundred bytes, its expansion fan^levels strings.
func aliasBomb(levels, fan int) string {
	var b strings.Builder
	b.WriteString("l0: &l0 [x, x, x, x, x, x, x, x]\n")
	for i := 1; i <= levels; i++ {
		fmt.Fprintf(&b, "l%d: &l%d [", i, i)
		for j := range fan {
			if j > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "*l%d", i-1)
		}
		b.WriteString("]\n")
	}
	return b.String()
}

// tree decodes any nesting of lists; a scalar in it is a problem (as a wrong type in a real
// config would be, once per expanded copy).
type tree []tree

// TestAliasExpansionIsBounded: a small document whose aliases expand to many nodes is refused
// before decoding, at the line of the alias that crosses the budget, instead of exhausting
// memory and printing a problem per expanded copy (issue 12, point 8).
func TestAliasExpansionIsBounded(t *testing.T) {
	yml := aliasBomb(5, 8) // 8^6 ≈ 262k leaves from ~250 bytes
	var out map[string]tree
	err := NewDecoder().Unmarshal([]byte(yml), &out)
	p := onlyProblem(t, err)
	if !strings.Contains(p.Msg, "alias") || !strings.Contains(p.Msg, "100000") || p.Line < 2 || p.Column == 0 {
		t.Fatalf("want an alias-budget problem with line and column, got %+v", p)
	}

	// A self-referencing anchor is a cycle, not an endless decode.
	err = NewDecoder().Unmarshal([]byte("a: 1\nb: &x [1, *x]\n"), &out)
	if p := onlyProblem(t, err); p.Line != 2 || !strings.Contains(p.Msg, "refers to itself") {
		t.Fatalf("cycle: got %+v", p)
	}

	// Aliases within the budget still work, and the budget can be raised.
	small := aliasBomb(2, 8) // the aliases add 8*9 + 8*73 = 656 nodes
	if _, err := NewDecoder(WithMaxAliasNodes(656)).Parse([]byte(small)); err != nil {
		t.Fatalf("small expansion refused: %v", err)
	}
	if _, err := NewDecoder(WithMaxAliasNodes(655)).Parse([]byte(small)); err == nil {
		t.Fatal("WithMaxAliasNodes(655) accepted a 656-node expansion")
	}
}

// TestDocumentSizeIsBounded: an oversized document is refused by size, before the YAML parser
// spends memory on it, both as bytes and as a file (issue 12, point 8).
func TestDocumentSizeIsBounded(t *testing.T) {
	big := []byte("top: \"" + strings.Repeat("x", 5<<20) + "\"\n")
	var out doc
	err := NewDecoder().Unmarshal(big, &out)
	if p := onlyProblem(t, err); !strings.Contains(p.Msg, "4MiB") {
		t.Fatalf("got %+v", p)
	}
	if err := NewDecoder(WithMaxSize(8<<20)).Unmarshal(big, &out); err != nil {
		t.Fatalf("WithMaxSize(8MiB): %v", err)
	}

	f := filepath.Join(t.TempDir(), "big.yaml")
	if err := os.WriteFile(f, big, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadFile(f, DefaultMaxSize); !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), f) {
		t.Fatalf("ReadFile of a 5MiB file: %v", err)
	}
	data, err := ReadFile(f, 8<<20)
	if err != nil || len(data) != len(big) {
		t.Fatalf("ReadFile within the limit: %d bytes, %v", len(data), err)
	}
	if _, err := ReadFile(filepath.Join(t.TempDir(), "missing.yaml"), DefaultMaxSize); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}

// TestSyntaxErrorsNameTheProblemLine: yaml.v3 reports parser errors at the line before the
// construct that holds the problem (a 0-based line), and some errors with no line at all
// (issue 12, point 12).
func TestSyntaxErrorsNameTheProblemLine(t *testing.T) {
	cases := []struct {
		yml  string
		line int
		msg  string
	}{
		{"a:\n  b: 1\n c: 2\n", 3, "did not find expected key"},
		{"a: 1\nb:\n  - x\n  y: 2\n", 4, "did not find expected '-' indicator"},
		{"a: 1\nb: 2\n- c\n", 3, "did not find expected key"},
		{"a: 1\nb: |\n  text\n bad\n", 4, "did not find expected key"},
		{"a: 1\nb: {x: 1\nc: 2\n", 2, "did not find expected ',' or '}'"},
		{"a: 1\nb: 2\nc: [1, 2\n", 3, "did not find expected ',' or ']'"},
		{"a: 1\nb: 2\nc: *nope\n", 3, "unknown anchor 'nope'"},
		{"a: 1\nb: 2\n c: 3\n", 3, "mapping values are not allowed"},
		{"a: 1\nb: \"open\nc: 3\n", 2, "unexpected end of stream"},
		{"a: 1\n\tb: 2\n", 2, "tab character"},
		{"a: 1\nb: 2\nc: @x\n", 3, "cannot start any token"},
	}
	for _, c := range cases {
		var out map[string]any
		err := NewDecoder().Unmarshal([]byte(c.yml), &out)
		p := onlyProblem(t, err)
		if p.Line != c.line || !strings.Contains(p.Msg, c.msg) || strings.Contains(p.Msg, "line ") {
			t.Errorf("%q: got line %d %q, want line %d %q", c.yml, p.Line, p.Msg, c.line, c.msg)
		}
	}
}

// TestBadBytesNameLineAndColumn: a NUL, another control character or a byte that is not UTF-8
// is reported where it is (issue 12, point 12).
func TestBadBytesNameLineAndColumn(t *testing.T) {
	cases := []struct {
		yml       string
		line, col int
		msg       string
	}{
		{"a: 1\nb: x\x00y\n", 2, 5, "NUL"},
		{"a: 1\nb: 2\nc: \"é\x01\"\n", 3, 6, "control character U+0001"},
		{"a: 1\n# ok\nb: \xff\xfe\n", 3, 4, "not UTF-8"},
		{"a: 1\nb: \xe2\x82\n", 2, 4, "not UTF-8"},
		{"a: 1\r\nb: \x7f\r\n", 2, 4, "control character U+007F"},
	}
	for _, c := range cases {
		var out map[string]any
		err := NewDecoder().Unmarshal([]byte(c.yml), &out)
		p := onlyProblem(t, err)
		if p.Line != c.line || p.Column != c.col || !strings.Contains(p.Msg, c.msg) {
			t.Errorf("%q: got %d:%d %q, want %d:%d %q", c.yml, p.Line, p.Column, p.Msg, c.line, c.col, c.msg)
		}
	}
	// Tabs, CR LF, a BOM and non-ASCII text are fine.
	var out map[string]string
	if err := NewDecoder().Unmarshal([]byte("\ufeffa: \"x\ty\"\r\nb: größe ✓\r\n"), &out); err != nil || out["b"] != "größe ✓" {
		t.Fatalf("valid text refused: %v %v", out, err)
	}
}

// TestEnvExpansionSemantics: nesting in defaults, and the POSIX difference between ":-" and "-";
// a set-but-empty variable with neither is an error (issue 12, point 10).
func TestEnvExpansionSemantics(t *testing.T) {
	env := map[string]string{"A": "x", "EMPTY": "", "B": "y"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	ok := map[string]string{
		"${UNSET:-${B:-z}}":           "y",
		"${UNSET:-${UNSET2:-z}}":      "z",
		"${A:-${UNSET}}":              "x", // the default is not evaluated when not needed
		"${UNSET:-pre-${A}-post}/dir": "pre-x-post/dir",
		"${UNSET:-${EMPTY:-${A}}}":    "x",
		"${UNSET:-a}b}":               "ab}",
		"${UNSET:-$${A}}":             "${A}",
		"${EMPTY-}":                   "",
		"${EMPTY:-}":                  "",
		"${UNSET-}":                   "",
		"${EMPTY-dflt}":               "",
		"${UNSET-dflt}":               "dflt",
		"${EMPTY:-dflt}":              "dflt",
		"${A-dflt}":                   "x",
	}
	for in, want := range ok {
		got, err := expandString(in, lookup)
		if err != nil || got != want {
			t.Errorf("expand(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	bad := map[string]string{
		"${EMPTY}/buffer":        "set but empty",
		"${UNSET:-${EMPTY}}":     "set but empty",
		"${UNSET:-${UNSET2}}":    "not set",
		"${UNSET:-${B:-z}":       "unterminated",
		"${UNSET:-${1X:-z}}":     "invalid environment variable name",
		"${A:-${1X}}":            "invalid environment variable name", // syntax is checked even when unused
		"${A?oops}":              "invalid",
		"${UNSET:-${A:-${B:-c}}": "unterminated",
	}
	for in, want := range bad {
		if got, err := expandString(in, lookup); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("expand(%q) = %q, %v; want an error with %q", in, got, err, want)
		}
	}
	// In a document, the error names the line.
	_, err := decodeDoc(t, "top: x\nitems:\n  - name: \"${EMPTY}/buffer\"\n", env)
	if p := onlyProblem(t, err); p.Line != 3 || p.Path != "items[0].name" || !strings.Contains(p.Msg, "${EMPTY-}") {
		t.Fatalf("got %+v", p)
	}
}

func TestRedactURL(t *testing.T) {
	cases := map[string]string{
		"nats://u:hunter2@hub:4222":     "nats://[redacted]@hub:4222",
		"nats://token@hub:4222":         "nats://[redacted]@hub:4222",
		"tls://hub:4222":                "tls://hub:4222",
		"tcp://u:p%zz@broker:1883/x":    "tcp://[redacted]@broker:1883/x",
		"line1.{topic.2}":               "line1.{topic.2}",
		"opc.tcp://a:b@10.0.0.5:4840/x": "opc.tcp://[redacted]@10.0.0.5:4840/x",
		// Without a scheme url.Parse reads "u" as one and the rest as opaque.
		"u:hunter2@hub:4222":    "[redacted]@hub:4222",
		"mailto:me@example.com": "mailto:me@example.com",
		// Credentials in the query: a websocket token, a signed hook.
		"wss://broker/mqtt?token=hunter2&x=1":         "wss://broker/mqtt?token=redacted&x=1",
		"https://hooks.example/h?Sig=hunter2":         "https://hooks.example/h?Sig=redacted",
		"nats://u:hunter2@hub:4222?api%5Fkey=hunter2": "nats://[redacted]@hub:4222?api%5Fkey=redacted",
		"https://example.com/a?page=2":                "https://example.com/a?page=2",
	}
	for in, want := range cases {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
	in := []byte(`{"servers":["nats://u:hunter2@hub:4222","nats://hub:4223"],"note":"me@example.com","esc":"tcp://a:b\"c@h:1"}`)
	out := string(RedactJSON(in))
	if strings.Contains(out, "hunter2") || strings.Contains(out, `b\"c`) || !strings.Contains(out, "nats://hub:4223") || !strings.Contains(out, "me@example.com") {
		t.Fatalf("RedactJSON: %s", out)
	}
}

type located struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Nodes []node `yaml:"nodes"`
	} `yaml:"groups"`
}

func (l *located) Validate(r Report) {
	for _, s := range []string{"b.two", "missing"} {
		if p, ok := r.Locate("groups", "signal", s); ok {
			r.Errorf(p, "found %s", s)
		} else {
			r.Errorf("groups", "not found %s", s)
		}
	}
}

// TestLocate: a cross-check that knows a value but not where it was written finds its line.
func TestLocate(t *testing.T) {
	yml := `groups:
  - name: a
    nodes:
      - {node: n1, signal: a.one}
  - name: b
    nodes:
      - {node: n2, signal: b.one}
      - {node: n3,
         signal: b.two}
`
	var out located
	err := NewDecoder().Unmarshal([]byte(yml), &out)
	var ps Problems
	if !errors.As(err, &ps) || len(ps) != 2 {
		t.Fatalf("got %v", err)
	}
	if ps[1].Path != "groups[1].nodes[1].signal" || ps[1].Line != 9 || ps[0].Path != "groups" || ps[0].Line != 2 {
		t.Fatalf("got %+v", ps)
	}
}

func TestCheckFile(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	check := func(yml string) error {
		var out struct {
			F checked `yaml:"f"`
		}
		return NewDecoder().Unmarshal([]byte(yml), &out)
	}
	if err := check("f: {ca: " + f + "}\n"); err != nil {
		t.Fatalf("existing file: %v", err)
	}
	err := check("f:\n  ca: " + dir + "/nope.pem\n  dir: " + dir + "\n")
	var ps Problems
	if !errors.As(err, &ps) || len(ps) != 2 || ps[0].Path != "f.ca" || ps[0].Line != 2 || !strings.Contains(ps[0].Msg, "nope.pem") ||
		ps[1].Path != "f.dir" || !strings.Contains(ps[1].Msg, "is a directory") {
		t.Fatalf("got %v", err)
	}
}

type checked struct {
	CA  string `yaml:"ca"`
	Dir string `yaml:"dir"`
}

func (c *checked) Validate(r Report) {
	r.CheckFile("ca", c.CA)
	r.CheckFile("dir", c.Dir)
}

// TestWithoutEnvKeepsValuesLiteral: data files (the hub's graph) keep "$" text as written and
// still get the limits and line-accurate errors.
func TestWithoutEnvKeepsValuesLiteral(t *testing.T) {
	var out doc
	err := NewDecoder(WithoutEnv()).Unmarshal([]byte("top: \"${X} costs $$5\"\n"), &out)
	if err != nil || out.Top != "${X} costs $$5" {
		t.Fatalf("got %q, %v", out.Top, err)
	}
	if _, err := NewDecoder(WithoutEnv()).Parse([]byte(aliasBomb(5, 8))); err == nil {
		t.Fatal("alias bomb accepted without env expansion")
	}
}
