package rules

import (
	"fmt"
	"reflect"
	"sync"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/ext"
	"cel.dev/cel-go/interpreter"
)

// The CEL type names of the input's objects (ext.NativeTypes names them package.Type).
const (
	typeSKU        = "rules.SKU"
	typeLine       = "rules.Line"
	typeInventory  = "rules.Inventory"
	typeFeature    = "rules.Feature"
	typeNeighbours = "rules.Neighbours"
)

// maxExprRunes bounds one expression: a rule is a condition, not a program, and the parser's cost
// grows with the text.
const maxExprRunes = 4096

// baseOptions declare the input. Every field is declared, so a typo in a field name is a compile
// error at its column rather than a runtime miss.
func baseOptions() []cel.EnvOption {
	return []cel.EnvOption{
		ext.NativeTypes(
			reflect.TypeFor[SKU](), reflect.TypeFor[Line](), reflect.TypeFor[Inventory](),
			reflect.TypeFor[Feature](), reflect.TypeFor[Neighbours](),
			ext.ParseStructTag("json"),
		),
		cel.Variable("sku", cel.ObjectType(typeSKU)),
		cel.Variable("site", cel.StringType),
		cel.Variable("lines", cel.ListType(cel.ObjectType(typeLine))),
		cel.Variable("inventory", cel.ObjectType(typeInventory)),
		cel.Variable("features", cel.MapType(cel.StringType, cel.ObjectType(typeFeature))),
		cel.Variable("neighbours", cel.ObjectType(typeNeighbours)),
		cel.Variable("now", cel.TimestampType),
		// days_of_cover > 30 must not need 30.0.
		cel.CrossTypeNumericComparisons(true),
		cel.OptionalTypes(),
		ext.Strings(),
		ext.Sets(),
		ext.Math(),
		cel.ParserExpressionSizeLimit(maxExprRunes),
		cel.ParserRecursionLimit(100),
		// Last: options after it that register types (cel.Types) need the provider they know.
		freshFeatureValues,
	}
}

// Two environments, as Kubernetes does for its CEL (STYLE.md §8): the strict one validates new
// or changed rule sets (Load); the permissive one compiles stored versions (LoadStored), so that
// a version that was valid when it was activated still runs (and can be rolled back to) after the
// strict checks grow. Tightening goes to strictOptions only; the permissive environment never
// loses a function or a type a stored rule may use.
var (
	permissiveEnv = sync.OnceValues(func() (*cel.Env, error) {
		return cel.NewEnv(baseOptions()...)
	})
	strictEnv = sync.OnceValues(func() (*cel.Env, error) {
		return cel.NewEnv(append(strictOptions(), baseOptions()...)...)
	})
)

// strictOptions are the checks only new expressions get: literal regular expressions, durations
// and timestamps are checked at compile time, and list and map literals are homogeneous.
func strictOptions() []cel.EnvOption {
	return []cel.EnvOption{cel.ExtendedValidations()}
}

// freshFeatureValues makes features.<name>.value an error when the feature is stale. The
// checker gives field selection on a declared type a direct getter (FieldType.GetFrom), so the
// check sits in the getter that CEL calls for every read of the field; stale, historical and
// partial stay readable as plain fields.
func freshFeatureValues(env *cel.Env) (*cel.Env, error) {
	return cel.CustomTypeProvider(freshProvider{env.CELTypeProvider()})(env)
}

type freshProvider struct{ types.Provider }

func (p freshProvider) FindStructFieldType(structType, field string) (*types.FieldType, bool) {
	ft, ok := p.Provider.FindStructFieldType(structType, field)
	if !ok || structType != typeFeature || field != "value" {
		return ft, ok
	}
	get := ft.GetFrom
	fresh := *ft
	fresh.GetFrom = func(obj any) (any, error) {
		var f *Feature
		switch v := obj.(type) {
		case Feature:
			f = &v
		case *Feature:
			f = v
		}
		if f != nil && f.Stale {
			return nil, fmt.Errorf("%w (age %.0fs): check .stale before reading .value", ErrStaleFeature, f.AgeS)
		}
		return get(obj)
	}
	return &fresh, true
}

// activation hands the input's parts to CEL without copying them into a map. Each part is
// turned into a CEL value once per input, on first use, and shared by every rule of the set.
type activation struct {
	in      *Input
	adapter types.Adapter
	vals    [numVars]ref.Val
	bounded bool // the input is within the bounds of the static cost estimate
}

const (
	varSKU = iota
	varSite
	varLines
	varInventory
	varFeatures
	varNeighbours
	varNow
	numVars
)

func newActivation(in *Input, adapter types.Adapter) *activation {
	return &activation{in: in, adapter: adapter, bounded: bounded(in)}
}

func (a *activation) ResolveName(name string) (any, bool) {
	var i int
	switch name {
	case "sku":
		i = varSKU
	case "site":
		i = varSite
	case "lines":
		i = varLines
	case "inventory":
		i = varInventory
	case "features":
		i = varFeatures
	case "neighbours":
		i = varNeighbours
	case "now":
		i = varNow
	default:
		return nil, false
	}
	if a.vals[i] == nil {
		switch i {
		case varFeatures:
			a.vals[i] = a.features()
		case varLines:
			ls := make([]ref.Val, len(a.in.Lines))
			for j := range a.in.Lines {
				ls[j] = a.adapter.NativeToValue(a.in.Lines[j])
			}
			a.vals[i] = types.NewRefValList(a.adapter, ls)
		default:
			a.vals[i] = a.adapter.NativeToValue(a.native(i))
		}
	}
	return a.vals[i], true
}

func (a *activation) native(i int) any {
	in := a.in
	switch i {
	case varSKU:
		return in.SKU
	case varSite:
		return in.Site
	case varLines:
		return in.Lines
	case varInventory:
		return in.Inventory
	case varFeatures:
		return in.Features
	case varNeighbours:
		return in.Neighbours
	}
	return in.Now
}

// features converts the map once: CEL's view of a Go map looks every key up by reflection, and
// its view of a Go slice (lines) converts an element at every access.
func (a *activation) features() ref.Val {
	m := make(map[ref.Val]ref.Val, len(a.in.Features))
	for k, f := range a.in.Features {
		m[types.String(k)] = a.adapter.NativeToValue(f)
	}
	return types.NewRefValMap(a.adapter, m)
}

func (*activation) Parent() interpreter.Activation { return nil }
