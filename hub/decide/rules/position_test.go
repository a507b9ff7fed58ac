package rules

import (
	"fmt"
	"testing"
	"unicode"

	"go.yaml.in/yaml/v3"
)

// Every character of an expression, in every YAML style the encoder writes it in, maps to the
// place in the file that holds it (or, for an escaped character, the backslash that starts it).
func TestPositionsAllStyles(t *testing.T) {
	exprs := []string{
		`inventory.on_hand > 3`,
		`sku.id == "A-100" && sku.name != 'x'`,
		"lines.exists(l,\n  l.state == \"down\")\n&& true",
		`sku.name == "é→ü" && site == "a\tb"`,
		`"it's" == sku.id || sku.id == '"q"'`,
		"  leading && trailing  ",
		"a == 'x\\ny' # not a comment in an expression",
		"tab\tinside",
	}
	styles := map[string]yaml.Style{"plain": 0, "single": yaml.SingleQuotedStyle, "double": yaml.DoubleQuotedStyle,
		"literal": yaml.LiteralStyle, "folded": yaml.FoldedStyle}
	checked := 0
	for _, e := range exprs {
		for sname, style := range styles {
			t.Run(fmt.Sprintf("%s/%q", sname, e), func(t *testing.T) {
				doc := &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{
					{Kind: yaml.ScalarNode, Value: "rules"},
					{Kind: yaml.SequenceNode, Content: []*yaml.Node{{Kind: yaml.MappingNode, Content: []*yaml.Node{
						{Kind: yaml.ScalarNode, Value: "when"},
						{Kind: yaml.ScalarNode, Value: e, Style: style},
					}}}},
				}}
				data, err := yaml.Marshal(doc)
				if err != nil {
					t.Fatal(err)
				}
				var root yaml.Node
				if err := yaml.Unmarshal(data, &root); err != nil {
					t.Fatalf("%v\n%s", err, data)
				}
				n := root.Content[0].Content[1].Content[0].Content[1]
				if n.Value != e {
					// The encoder cannot write this value in this style (a folded block
					// with more-indented lines): nothing to map.
					t.Logf("the encoder changed the value: %q", n.Value)
					return
				}
				checked++
				src := newSource(data)
				pos := src.positions(n)
				for i, v := range []rune(e) {
					if unicode.IsSpace(v) {
						continue
					}
					p := pos[i]
					got := src[p.Line-1][p.Col-1]
					ok := got == v || (n.Style&yaml.DoubleQuotedStyle != 0 && got == '\\') ||
						(n.Style&yaml.SingleQuotedStyle != 0 && v == '\'' && got == '\'')
					if !ok {
						t.Fatalf("character %d %q maps to %d:%d %q in\n%s", i, v, p.Line, p.Col, got, data)
					}
				}
			})
		}
	}
	if want := len(exprs)*len(styles) - 1; checked < want {
		t.Errorf("checked %d cases, want at least %d", checked, want)
	}
}
