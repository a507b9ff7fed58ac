package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type node struct {
	Node     string        `yaml:"node"`
	Signal   string        `yaml:"signal"`
	Sampling time.Duration `yaml:"sampling"`
	Deadband float64       `yaml:"deadband"`
}

func (n *node) Validate(r Report) {
	if n.Node == "" {
		r.Errorf("node", "required")
	}
	if n.Sampling < 0 {
		r.Errorf("sampling", "must not be negative")
	}
}

type inner struct {
	Name     string            `yaml:"name"`
	Size     ByteSize          `yaml:"size"`
	Password Secret            `yaml:"password"`
	Nodes    []node            `yaml:"nodes"`
	Labels   map[string]string `yaml:"labels"`
	Enabled  *bool             `yaml:"enabled"`
	Port     int               `yaml:"port"`
}

type doc struct {
	Items []inner `yaml:"items"`
	Top   string  `yaml:"top"`
}

func decodeDoc(t *testing.T, yml string, env map[string]string) (doc, error) {
	t.Helper()
	d := NewDecoder(WithEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok }))
	out := doc{Top: "default"}
	err := d.Unmarshal([]byte(yml), &out)
	return out, err
}

func TestDecodeValues(t *testing.T) {
	yml := `
items:
  - name: a
    size: 2GiB
    password: ${PW}
    port: ${PORT:-4840}
    enabled: false
    labels: {line: "1", "a.b": x}
    nodes:
      - {node: "ns=2;s=T", signal: t, sampling: 100ms, deadband: 0.5}
`
	got, err := decodeDoc(t, yml, map[string]string{"PW": "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	it := got.Items[0]
	if it.Size != 2<<30 || it.Port != 4840 || it.Password.Value() != "s3cret" || it.Enabled == nil || *it.Enabled {
		t.Fatalf("decoded %+v", it)
	}
	if it.Nodes[0].Sampling != 100*time.Millisecond || it.Nodes[0].Deadband != 0.5 {
		t.Fatalf("nodes %+v", it.Nodes)
	}
	if it.Labels["a.b"] != "x" || got.Top != "default" {
		t.Fatalf("labels %v top %q", it.Labels, got.Top)
	}
}

func TestAllErrorsWithPathAndLine(t *testing.T) {
	yml := `items:
  - name: a
    colour: red
    nodes:
      - {node: "ns=2;s=T", sampling: fast}
      - {signal: x}
    size: lots
    password: ${NOT_SET}
`
	_, err := decodeDoc(t, yml, nil)
	var ps Problems
	if !errors.As(err, &ps) {
		t.Fatalf("want Problems, got %v", err)
	}
	want := []Problem{
		{Path: "items[0].colour", Line: 3, Msg: `unknown field "colour"`},
		{Path: "items[0].nodes[0].sampling", Line: 5, Msg: `invalid duration "fast"`},
		{Path: "items[0].nodes[1].node", Line: 6, Msg: "required"},
		{Path: "items[0].size", Line: 7, Msg: `invalid size "lots"`},
		{Path: "items[0].password", Line: 8, Msg: "${NOT_SET}: environment variable is not set"},
	}
	if len(ps) != len(want) {
		t.Fatalf("got %d problems, want %d:\n%v", len(ps), len(want), err)
	}
	for _, w := range want {
		found := false
		for _, p := range ps {
			if p.Path == w.Path && p.Line == w.Line && strings.Contains(p.Msg, w.Msg) {
				found = true
			}
		}
		if !found {
			t.Errorf("missing problem %+v in:\n%v", w, err)
		}
	}
	for i := 1; i < len(ps); i++ {
		if ps[i].Line < ps[i-1].Line {
			t.Errorf("problems not in line order:\n%v", err)
		}
	}
	if !strings.Contains(ps.Error(), "line 3: items[0].colour: unknown field") {
		t.Errorf("rendering: %v", ps.Error())
	}
}

func TestSuggestion(t *testing.T) {
	_, err := decodeDoc(t, "items:\n  - nmae: a\n", nil)
	if err == nil || !strings.Contains(err.Error(), `did you mean "name"`) {
		t.Fatalf("got %v", err)
	}
}

func TestTypeErrors(t *testing.T) {
	cases := map[string]string{
		"items: {a: 1}\n":                 "items: expected a list",
		"items: [{port: abc}]\n":          "items[0].port: expected an integer",
		"items: [{nodes: x}]\n":           "items[0].nodes: expected a list",
		"items: [{name: [1, 2]}]\n":       "items[0].name: expected a single value",
		"items: [{enabled: maybe}]\n":     "items[0].enabled: expected true or false",
		"items: [{name: a, name: b}]\n":   "duplicate key",
		"top: a\ntop: b\n":                "duplicate key",
		"items: [{password: {file: ''}}]": "needs file",
		"items: [{labels: [a]}]\n":        "items[0].labels: expected a mapping",
		"items: [\n":                      "line",
		"top: ${1BAD}\n":                  "invalid environment variable name",
		"top: ${UNTERMINATED\n":           "unterminated",
	}
	for yml, want := range cases {
		_, err := decodeDoc(t, yml, nil)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want %q", yml, err, want)
		}
	}
}

func TestEnvExpansion(t *testing.T) {
	env := map[string]string{"A": "x", "EMPTY": ""}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	cases := map[string]string{
		"${A}":           "x",
		"pre-${A}-post":  "pre-x-post",
		"${B:-dflt}":     "dflt",
		"${EMPTY:-dflt}": "dflt",
		"$$A":            "$A",
		"cost $5":        "cost $5",
		"${A}${B:-}${A}": "xx",
		"${B:-a:-b}":     "a:-b",
	}
	for in, want := range cases {
		got, err := expandString(in, lookup)
		if err != nil || got != want {
			t.Errorf("expand(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := expandString("${B}", lookup); !errors.Is(err, ErrUnset) {
		t.Errorf("unset: %v", err)
	}
}

func TestByteSize(t *testing.T) {
	cases := map[string]ByteSize{"2GiB": 2 << 30, "512MB": 512e6, "64KiB": 64 << 10, "1024": 1024, "1.5GiB": 3 << 29, "10B": 10, "1_000": 1000}
	for in, want := range cases {
		got, err := ParseByteSize(in)
		if err != nil || got != want {
			t.Errorf("%q = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "x", "-1GiB", "1PB", "GiB", "NaN"} {
		if _, err := ParseByteSize(bad); err == nil {
			t.Errorf("%q: want error", bad)
		}
	}
	if s := ByteSize(2 << 30).String(); s != "2GiB" {
		t.Errorf("String = %q", s)
	}
}

func TestSecretNeverPrints(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "pw")
	if err := os.WriteFile(f, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := decodeDoc(t, "items: [{password: {file: "+f+"}}, {password: literal}]", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.Items[0].Password.Value() != "from-file" || got.Items[1].Password.Value() != "literal" {
		t.Fatalf("values %q %q", got.Items[0].Password.Value(), got.Items[1].Password.Value())
	}
	s := got.Items[1].Password
	for _, out := range []string{s.String(), s.LogValue().String()} {
		if strings.Contains(out, "literal") {
			t.Errorf("secret leaked: %q", out)
		}
	}
	j, _ := s.MarshalJSON()
	if strings.Contains(string(j), "literal") {
		t.Errorf("secret leaked in JSON: %s", j)
	}
	if _, err := decodeDoc(t, "items: [{password: {file: "+filepath.Join(dir, "missing")+"}}]", nil); err == nil ||
		!strings.Contains(err.Error(), "items[0].password.file: cannot read secret") {
		t.Errorf("missing file: %v", err)
	}
	// A secret file is a line, not whatever the path names: /dev/zero is refused, not read until
	// memory runs out.
	if _, err := decodeDoc(t, "items: [{password: {file: /dev/zero}}]", nil); err == nil ||
		!strings.Contains(err.Error(), "items[0].password.file: cannot read secret") || !strings.Contains(err.Error(), "larger than the limit") {
		t.Errorf("endless file: %v", err)
	}
}

func TestEmptyDocumentKeepsDefaults(t *testing.T) {
	got, err := decodeDoc(t, "", nil)
	if err != nil || got.Top != "default" {
		t.Fatalf("%+v %v", got, err)
	}
}

func TestAnchorsAndAliases(t *testing.T) {
	got, err := decodeDoc(t, "items:\n  - &a {name: x, port: 1}\n  - *a\n", nil)
	if err != nil || len(got.Items) != 2 || got.Items[1].Name != "x" {
		t.Fatalf("%+v %v", got, err)
	}
}

// withSection holds a validated section that a document may leave out.
type withSection struct {
	Top     string `yaml:"top"`
	Section struct {
		Node node `yaml:"node"`
	} `yaml:"section"`
}

// TestValidatorsRunForAbsentSections: a section left out, given empty, or a document with nothing
// in it keeps its defaults, and those defaults are validated like written values.
func TestValidatorsRunForAbsentSections(t *testing.T) {
	for name, yml := range map[string]string{
		"absent":         "top: x\n",
		"null":           "section:\n",
		"empty document": "",
		"nested absent":  "section: {}\n",
	} {
		t.Run(name, func(t *testing.T) {
			var out withSection
			err := NewDecoder().Unmarshal([]byte(yml), &out)
			var ps Problems
			if !errors.As(err, &ps) || len(ps) != 1 || ps[0].Path != "section.node.node" || !strings.Contains(ps[0].Msg, "required") {
				t.Fatalf("got %v, want one problem: section.node.node: required", err)
			}
		})
	}
}

func TestChecks(t *testing.T) {
	var c Checks
	if err := c.Err("x"); err != nil {
		t.Fatalf("no problems: %v", err)
	}
	c.Add("bucket", "must be letters, got %q", "a b")
	c.Add("replicas", "must be 1 or 3, got %d", 2)
	if got, want := c.Err("inventory").Error(), `inventory config: bucket: must be letters, got "a b"; replicas: must be 1 or 3, got 2`; got != want {
		t.Errorf("Err = %q, want %q", got, want)
	}
	var out struct {
		S checkedSection `yaml:"s"`
	}
	err := NewDecoder(WithoutEnv()).Unmarshal([]byte("s:\n  bucket: a b\n"), &out)
	var ps Problems
	if !errors.As(err, &ps) || len(ps) != 1 || ps[0].Path != "s.bucket" || ps[0].Line != 2 {
		t.Fatalf("Report through a Validator: %v (%#v)", err, ps)
	}
}

type checkedSection struct {
	Bucket string `yaml:"bucket"`
}

func (c *checkedSection) Validate(r Report) {
	var cs Checks
	if strings.Contains(c.Bucket, " ") {
		cs.Add("bucket", "no spaces, got %q", c.Bucket)
	}
	cs.Report(r)
}

// The hub's logger writes durations as text in JSON too (not nanoseconds).
func TestLoggerDurationsAsText(t *testing.T) {
	var b strings.Builder
	Log{Level: "info", Format: "json"}.NewLogger(&b).Info("x", "retry_in", 1500*time.Millisecond)
	if !strings.Contains(b.String(), `"retry_in":"1.5s"`) {
		t.Errorf("log line %s", b.String())
	}
}
