package rules

import (
	"fmt"
	"slices"
	"strings"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/operators"
	"cel.dev/cel-go/common/types"
)

// exprFacts is what a condition mentions: the constants and feature names the overlap lint
// builds its sample inputs from, and the places strict checks report.
type exprFacts struct {
	strings  []string
	numbers  []float64
	features []featureRef
	dyns     []int32 // offsets of dyn() calls
	wholes   []int32 // offsets of comparisons of whole features
}

type featureRef struct {
	name   string
	offset int32
}

func factsOf(a *cel.Ast) exprFacts {
	var f exprFacts
	if a == nil {
		return f
	}
	native := a.NativeRep()
	info := native.SourceInfo()
	offset := func(id int64) int32 {
		r, _ := info.GetOffsetRange(id)
		return r.Start
	}
	ast.PreOrderVisit(native.Expr(), ast.NewExprVisitor(func(e ast.Expr) {
		switch e.Kind() {
		case ast.LiteralKind:
			switch v := e.AsLiteral().(type) {
			case types.String:
				f.strings = append(f.strings, string(v))
			case types.Int:
				f.numbers = append(f.numbers, float64(v))
			case types.Uint:
				f.numbers = append(f.numbers, float64(v))
			case types.Double:
				f.numbers = append(f.numbers, float64(v))
			}
		case ast.SelectKind:
			s := e.AsSelect()
			if isFeatures(s.Operand()) {
				f.features = append(f.features, featureRef{s.FieldName(), offset(e.ID()) + 1}) // the name, after the dot
			}
		case ast.CallKind:
			c := e.AsCall()
			switch c.FunctionName() {
			case operators.Index, operators.OptIndex, operators.OptSelect: // features["x"], features[?"x"], features.?x
				args := c.Args()
				if len(args) == 2 && isFeatures(args[0]) && args[1].Kind() == ast.LiteralKind {
					if s, ok := args[1].AsLiteral().(types.String); ok {
						f.features = append(f.features, featureRef{string(s), offset(args[1].ID())})
					}
				}
			case "dyn":
				f.dyns = append(f.dyns, max(offset(e.ID())-int32(len("dyn")), 0)) // CEL places a call at its "("
			case operators.Equals, operators.NotEquals, operators.In, operators.OldIn:
				for _, arg := range c.Args() {
					if t := native.GetType(arg.ID()); t != nil && mentionsFeature(t) {
						f.wholes = append(f.wholes, offset(e.ID()))
						break
					}
				}
			}
		}
	}))
	return f
}

// Reads is what a condition mentions of its input.
type Reads struct {
	// Features are the features read by name; AllFeatures is set when the condition reaches
	// features another way (features.exists(...), features[name] with a computed name).
	Features    []string `json:"features,omitempty"`
	AllFeatures bool     `json:"all_features,omitempty"`
	Lines       bool     `json:"lines,omitempty"`
	Inventory   bool     `json:"inventory,omitempty"`
}

// readsOf lists what a compiled condition mentions.
func readsOf(a *cel.Ast) Reads {
	var r Reads
	if a == nil {
		return r
	}
	f := factsOf(a)
	for _, ref := range f.features {
		if !slices.Contains(r.Features, ref.name) {
			r.Features = append(r.Features, ref.name)
		}
	}
	slices.Sort(r.Features)
	named := 0 // features identifiers that are the operand of a select or a literal index
	ast.PreOrderVisit(a.NativeRep().Expr(), ast.NewExprVisitor(func(e ast.Expr) {
		switch e.Kind() {
		case ast.IdentKind:
			switch e.AsIdent() {
			case "lines":
				r.Lines = true
			case "inventory":
				r.Inventory = true
			case "features":
				named--
			}
		case ast.SelectKind:
			if isFeatures(e.AsSelect().Operand()) {
				named++
			}
		case ast.CallKind:
			c := e.AsCall()
			if fn := c.FunctionName(); fn == operators.Index || fn == operators.OptIndex || fn == operators.OptSelect {
				if args := c.Args(); len(args) == 2 && isFeatures(args[0]) && args[1].Kind() == ast.LiteralKind {
					named++
				}
			}
		}
	}))
	r.AllFeatures = named < 0
	return r
}

func isFeatures(e ast.Expr) bool { return e.Kind() == ast.IdentKind && e.AsIdent() == "features" }

type strictProblem struct {
	offset int32
	msg    string
}

// strictChecks are the checks of new conditions beyond CEL's type check: a feature name that
// no definition has (when the caller says which exist), and dyn(), which would hide a value's
// type from the checker and so read a stale feature's value without the freshness check.
func strictChecks(a *cel.Ast, known []string, checkFeatures bool) []strictProblem {
	f := factsOf(a)
	var out []strictProblem
	if checkFeatures {
		for _, r := range f.features {
			if !slices.Contains(known, r.name) {
				out = append(out, strictProblem{r.offset, fmt.Sprintf("unknown feature %q (defined: %s)", r.name, strings.Join(known, ", "))})
			}
		}
	}
	for _, off := range f.dyns {
		out = append(out, strictProblem{off, "dyn() is not allowed in rules: it hides types from the checker"})
	}
	for _, off := range f.wholes {
		out = append(out, strictProblem{off, "features are compared by their fields (features.x.value, .stale), not whole: a whole comparison would read a stale value"})
	}
	slices.SortFunc(out, func(a, b strictProblem) int { return int(a.offset - b.offset) })
	return out
}

// mentionsFeature reports whether t is rules.Feature or holds it (a list or map of features).
func mentionsFeature(t *types.Type) bool {
	if t.TypeName() == typeFeature {
		return true
	}
	for _, p := range t.Parameters() {
		if mentionsFeature(p) {
			return true
		}
	}
	return false
}
