package rules

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/gemba-io/gemba/config"
)

const hold = "\n    hold: {channels: [web], reason: line down}\n"

// Several broken rules at once: every one is reported, at the line of the expression and the
// column of the problem in the file, whatever YAML style the expression is written in.
func TestCompileErrorsAtLineAndColumn(t *testing.T) {
	src := "name: broken\nhit_policy: first\nrules:\n" +
		"  - name: plain\n    when: inventory.on_hnd > 3" + hold + // line 4-6
		"  - name: literal\n    when: |\n      inventory.on_hand > 3 &&\n        lines.exists(l, l.stat == \"down\")" + hold + // 7-11
		"  - name: double\n    when: \"features.x.value > 1 && \\\"a\\\" == sku.nme\"" + hold + // 12-14
		"  - name: single\n    when: 'sku.id == ''x'' && sku.nam == \"y\"'" + hold + // 15-17
		"  - name: folded\n    when: >\n      sku.id == 'x' &&\n      sku.nam == \"y\"" + hold + // 18-22
		"  - name: syntax\n    when: 1 +" + hold + // 23-25
		"  - name: notbool\n    when: sku.id" + hold + // 26-28
		"  - name: ok\n    when: inventory.on_hand > 3" + hold + // 29-31
		"  - name: crlf\r\n    when: \"lines.size() > 0 &&\\\n      sku.idd == 'x'\"" + hold + // 32-35
		"  - name: no-reason\n    when: sku.nmae == 'x'\n    hold: {channels: [web]}\n" + // 36-38
		"  - name: map\n    when: {a: b}" + hold // 39-41
	_, err := Load([]byte(src))
	want := []string{
		"rules.yaml:5:21: rules[0].when: undefined field 'on_hnd'",
		"rules.yaml:10:27: rules[1].when: undefined field 'stat'",
		"rules.yaml:13:49: rules[2].when: undefined field 'nme'",
		"rules.yaml:16:35: rules[3].when: undefined field 'nam'",
		"rules.yaml:21:11: rules[4].when: undefined field 'nam'",
		"rules.yaml:24:14: rules[5].when: Syntax error: mismatched input '<EOF>'",
		"rules.yaml:27:11: rules[6].when: a condition must be true or false, this one gives string",
		"rules.yaml:34:11: rules[8].when: undefined field 'idd'",
		"rules.yaml:37:15: rules[9].when: undefined field 'nmae'", // with the problem of another field
		"rules.yaml:38:11: rules[9].hold.reason: reason is required",
		"rules.yaml:40:11: rules[10].when: expected a single value, got a mapping",
	}
	got := Describe("rules.yaml", err)
	if len(got) != len(want) {
		t.Fatalf("got %d problems, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("problem %d:\n got %s\nwant %s...", i, got[i], want[i])
		}
	}
}

func TestValidationProblems(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		want      []string // substrings of Describe's lines, in order
	}{
		{"empty", "", []string{"name: the rule set's name is required", "hit_policy is required", "at least one rule"}},
		{"policy", "name: x\nhit_policy: best\nrules:\n  - {name: a, when: 'true', hold: {channels: [web], reason: r}}\n",
			[]string{`x:2:13: hit_policy: unknown hit policy "best"`}},
		{"unknown field", "name: x\nhit_policy: first\nrules:\n  - name: a\n    wen: 'true'\n    hold: {channels: [web], reason: r}\n",
			[]string{`x:5:5: rules[0].wen: unknown field "wen" (did you mean "when"?)`, "x:4:5: rules[0].when: when is required"}},
		{"actions", "name: x\nhit_policy: first\nrules:\n" +
			"  - {name: a, when: 'true'}\n" +
			"  - {name: b, when: 'true', hold: {channels: [web], reason: r}, promote: {channels: [web], discount: 5, duration: 1h}}\n" +
			"  - {name: a, when: 'true', promote: {channels: [], discount: 120, duration: 0s, audience: 'b 2 c'}}\n" +
			"  - {name: d, when: 'true', hold: {channels: [web, web, '*'], reason: ''}}\n",
			[]string{"x:4:5: rules[0]: a rule needs an action", "x:5:35: rules[1].hold: a rule has one action",
				`x:6:12: rules[2].name: duplicate rule name "a"`, "x:6:49: rules[2].promote.channels: channels is required",
				"x:6:63: rules[2].promote.discount: discount 120", "x:6:78: rules[2].promote.duration: duration is required",
				`x:6:92: rules[2].promote.audience: audience "b 2 c"`,
				`x:7:52: rules[3].hold.channels[1]: channel "web" is listed twice`, `x:7:46: rules[3].hold.channels: "*" already means`,
				"x:7:71: rules[3].hold.reason: reason is required"}},
		{"channel too long", "name: x\nhit_policy: first\nrules:\n  - {name: a, when: 'true', hold: {channels: [" + strings.Repeat("c", 65) + "], reason: r}}\n",
			[]string{`x:4:47: rules[0].hold.channels[0]: channel "` + strings.Repeat("c", 65) + `": at most 64 bytes`}},
		{"shared experiment id", "name: x\nhit_policy: collect\nrules:\n" +
			"  - {name: a, when: 'true', promote: {channels: [web], discount: 5, duration: 1h}, experiment: {id: e1, holdout: 0.1}}\n" +
			"  - {name: b, when: 'true', promote: {channels: [app], discount: 5, duration: 1h}, experiment: {id: e1, holdout: 0.2}}\n" +
			"  - {name: e2, when: 'true', promote: {channels: [app], discount: 5, duration: 1h}, experiment: {holdout: 0.2}}\n" +
			"  - {name: c, when: 'true', promote: {channels: [app], discount: 5, duration: 1h}, experiment: {id: e2, holdout: 0.2}}\n",
			[]string{`x:5:101: rules[1].experiment.id: experiment id "e1" is rules[0]'s too`,
				`x:7:101: rules[3].experiment.id: experiment id "e2" is rules[2]'s too`}},
		{"two documents", "name: x\nhit_policy: first\nrules: []\n---\nname: y\n", []string{"x:4: a second YAML document"}},
		{"syntax", "name: x\nhit_policy: [first\n", []string{"x:"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load([]byte(tc.src))
			if err == nil {
				t.Fatal("loaded")
			}
			if tc.name == "shared experiment id" { // a check newer than stored versions: they still load
				if _, err := LoadStored([]byte(tc.src)); err != nil {
					t.Errorf("stored version refused: %v", err)
				}
			}
			var ps config.Problems
			if !errors.As(err, &ps) {
				t.Fatalf("error %T %v is not config.Problems", err, err)
			}
			got := strings.Join(Describe("x", err), "\n")
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("missing %q in\n%s", w, got)
				}
			}
		})
	}
}

// New rule sets are checked strictly; stored versions load with the permissive environment, so
// a version that ran once still runs after a feature is renamed or the checks grow.
func TestStrictAndStoredEnvironments(t *testing.T) {
	src := "name: x\nhit_policy: collect\nrules:\n" +
		"  - name: a\n    when: features.units.value > 1 && features.tempo.value < 3" + hold +
		"  - name: b\n    when: sku.id.matches('[a-')" + hold +
		"  - name: c\n    when: sku.id == 'y' || dyn(sku).id == 'x'" + hold +
		"  - name: d\n    when: 'features.units == rules.Feature{value: 2.0} || rules.Feature{} in features.map(k, features[k])'" + hold
	_, err := Load([]byte(src), KnownFeatures("units", "temperature"))
	want := []string{
		`x:5:48: rules[0].when: unknown feature "tempo" (defined: units, temperature)`,
		"x:8:26: rules[1].when: invalid matches argument", // the bad regular expression (cel.ExtendedValidations)
		"x:11:28: rules[2].when: dyn() is not allowed",
		"x:14:27: rules[3].when: features are compared by their fields",
		"x:14:75: rules[3].when: features are compared by their fields",
	}
	got := Describe("x", err)
	if len(got) != len(want) {
		t.Fatalf("got\n%s", strings.Join(got, "\n"))
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("got %s, want %s...", got[i], want[i])
		}
	}
	s, err := LoadStored([]byte(src), KnownFeatures("units", "temperature"))
	if err != nil {
		t.Fatalf("stored version refused: %v", err)
	}
	// It runs: the bad pattern is an evaluation error of rule b, not a panic.
	res := s.Evaluate(&Input{SKU: SKU{ID: "x"}, Features: map[string]Feature{"units": {Value: 2}, "tempo": {Value: 1}}})
	// The whole-feature comparison a stored version may hold still runs.
	if len(res.Matches) != 3 || res.Matches[0].Rule != "a" || res.Matches[1].Rule != "c" || res.Matches[2].Rule != "d" ||
		res.Errors != 1 || res.Trace[1].Err == "" {
		t.Errorf("result %+v", res)
	}
}

// A feature named through optional field selection (features.?name) is checked like the other
// forms: a misspelt name is an error at its column, and the rule reads that feature only (a stale
// feature it never names does not stop it).
func TestOptionalSelectOfFeature(t *testing.T) {
	src := "name: x\nhit_policy: collect\nrules:\n" +
		"  - name: a\n    when: features.?tempo.hasValue()" + hold +
		"  - name: b\n    when: features.?units.orValue(rules.Feature{}).value > 1.0" + hold
	_, err := Load([]byte(src), KnownFeatures("units", "temperature"))
	if err == nil {
		t.Fatal("a rule naming the undefined feature tempo loaded")
	}
	got := Describe("x", err)
	if want := `x:5:21: rules[0].when: unknown feature "tempo" (defined: units, temperature)`; len(got) != 1 || got[0] != want {
		t.Errorf("got\n%s\nwant %s", strings.Join(got, "\n"), want)
	}
	s, err := Load([]byte(src), KnownFeatures("units", "tempo"))
	if err != nil {
		t.Fatal(err)
	}
	if r := s.Rules()[1].Reads; !slices.Equal(r.Features, []string{"units"}) || r.AllFeatures {
		t.Errorf("reads %+v, want the units feature only", r)
	}
}

func TestVersion(t *testing.T) {
	a := "name: x\nlabel: first try\nhit_policy: first\nrules:\n  - name: a\n    when: inventory.on_hand > 3\n    hold: {channels: [web], reason: r}\n"
	// The same content: another layout, comments, a block scalar, another label.
	b := "# comment\nname: x\nhit_policy: first\nlabel: second try\nrules:\n  - hold:\n      reason: r\n      channels:\n        - web\n    when: |\n      inventory.on_hand > 3\n    name: a\n"
	c := strings.Replace(a, "> 3", ">= 3", 1)
	sa, sb, sc := mustLoad(t, a), mustLoad(t, b), mustLoad(t, c)
	if sa.Version() != sb.Version() || len(sa.Version()) != 64 {
		t.Errorf("same content, versions %s and %s", sa.Version(), sb.Version())
	}
	if sa.Version() == sc.Version() {
		t.Error("a changed condition kept the version")
	}
	if sa.Label() != "first try" || sb.Label() != "second try" {
		t.Errorf("labels %q %q", sa.Label(), sb.Label())
	}
	if names := ruleNames(sa.Rules()); !slices.Equal(names, []string{"a"}) {
		t.Errorf("rules %v", names)
	}
	// The set cannot be changed through what Rules returns.
	rs := sa.Rules()
	rs[0].Action.Channels[0] = "retail"
	if sa.Rules()[0].Action.Channels[0] != "web" {
		t.Error("a rule's channels changed through Rules()")
	}
	// An empty list of known features refuses every feature.
	if _, err := Load([]byte(strings.Replace(a, "inventory.on_hand > 3", "features.x.value > 3", 1)), KnownFeatures()); err == nil {
		t.Error("a feature accepted with no feature defined")
	}
}

func mustLoad(t testing.TB, src string, opts ...Option) *Set {
	t.Helper()
	s, err := Load([]byte(src), opts...)
	if err != nil {
		t.Fatalf("load: %s", strings.Join(Describe("rules.yaml", err), "\n"))
	}
	return s
}

func ruleNames(rs []Rule) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Name)
	}
	return out
}
