package doccheck

import (
	"fmt"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// CheckConfigReference fails t for every disagreement between a configuration reference and the
// config it describes: a key the code has that the doc does not name, a key the doc names that the
// code does not have, and a default the doc states that the code does not give. defaults are the
// configs an empty file gives: as decoded (a replicas of 0 meaning "nats.replicas"), and as used
// (such values filled in); a documented default must be one of them. undocumented lists keys
// knowingly left out of the reference, each with why; a key ending in "." excuses every key under it.
func CheckConfigReference(t testing.TB, doc string, keys Keys, undocumented map[string]string, defaults ...any) {
	t.Helper()
	md, err := os.ReadFile(doc)
	if err != nil {
		t.Fatal(err)
	}
	ref := ReadReference(string(md), keys)
	for _, u := range ref.Unknown {
		t.Errorf("%s:%s", doc, u)
	}
	for _, p := range keys.Sorted() {
		node := keys[p]
		if !node.Leaf && !strings.HasSuffix(p, "*") {
			continue // a section: its keys are checked one by one
		}
		if ref.Covers(p) || excused(undocumented, p) {
			continue
		}
		t.Errorf("config key `%s` (%s) is not documented in %s", p, node.Type, doc)
	}
	for _, d := range ref.Defaults {
		if strings.Contains(d.Path, "*") {
			continue
		}
		var gots []string
		matched := false
		for _, def := range defaults {
			v, ok := ValueAt(reflect.ValueOf(def), d.Path)
			if !ok {
				continue
			}
			same, comparable, got := SameValue(v, d.Text)
			if _, isKey := keys[d.Text]; isKey && IsKeyRef(d.Text) {
				// `hub.id`, `nats.replicas`: the value of that key.
				w, ok := ValueAt(reflect.ValueOf(def), d.Text)
				same, comparable = ok && reflect.DeepEqual(v.Interface(), w.Interface()), ok
				got = fmt.Sprint(v.Interface())
			}
			if comparable && !slices.Contains(gots, strconv.Quote(got)) {
				gots = append(gots, strconv.Quote(got))
			}
			matched = matched || same
		}
		if !matched && len(gots) > 0 {
			t.Errorf("%s:%d: `%s` is documented with default %q; the code's default is %s", doc, d.Line, d.Path, d.Text, strings.Join(gots, " or "))
		}
	}
}

func excused(undocumented map[string]string, p string) bool {
	for k := range undocumented {
		if k == p || (strings.HasSuffix(k, ".") && strings.HasPrefix(p, k)) {
			return true
		}
	}
	return false
}

// CheckExampleUsesEveryKey fails t for each key of the config that an example file (the one its
// reference says uses every option) neither sets nor names in a comment ("# creds_file: ...").
// absent lists the keys knowingly left out, each with why; a key ending in "." excuses every key
// under it.
func CheckExampleUsesEveryKey(t testing.TB, example string, keys Keys, absent map[string]string) {
	t.Helper()
	text, err := os.ReadFile(example)
	if err != nil {
		t.Fatal(err)
	}
	used, unknown := ExampleKeys(string(text), keys)
	for _, u := range unknown {
		t.Errorf("%s:%s", example, u)
	}
	ref := Reference{Documented: used}
	for _, p := range keys.Sorted() {
		if keys[p].Leaf && !ref.Covers(p) && !excused(absent, p) {
			t.Errorf("%s does not use config key `%s` (nor name it in a comment)", example, p)
		}
	}
}
