package rules

import (
	"cel.dev/cel-go/common/cost"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
)

// Bounds on an input's sizes under which a condition's worst-case cost is known at compile time.
// An input within them runs the condition without runtime cost tracking, which costs about as
// much as the condition itself; an input beyond them (a SKU with hundreds of substitutes) runs
// with tracking and the limit. Either way no evaluation costs more than the limit.
const (
	maxBoundedList   = 64  // elements of a list or map of the input
	maxBoundedString = 256 // bytes of a string of the input (CEL counts characters: fewer)
)

// sizeBounds tells CEL's cost estimator the sizes above for every list, map and string reachable
// from the input; sizes computed inside the expression are left to the estimator.
type sizeBounds struct{}

func (sizeBounds) EstimateCallCost(_, overloadID string, _ *cost.AstNode, _ []cost.AstNode) *cost.CallEstimate {
	if overloadID == formatOverload {
		// What format writes is not known from its arguments' estimates: never untracked.
		return &cost.CallEstimate{CostEstimate: cost.UnknownCostEstimate()}
	}
	return nil
}

// formatOverload is the strings extension's format(), whose cost CEL leaves at one unit whatever
// it writes: formatting input-sized lists builds megabytes of text for "one operation".
const formatOverload = "string_format"

// callCosts charges format what it writes, one unit per byte, so the limit stops it (the call's
// result is built before it is charged: one call can still write up to what its arguments hold).
type callCosts struct{}

func (callCosts) CallCost(_, overloadID string, _ []ref.Val, result ref.Val) *uint64 {
	if overloadID != formatOverload {
		return nil // CEL's own models
	}
	n := uint64(1)
	if s, ok := result.(types.String); ok {
		n += uint64(len(s))
	}
	return &n
}

func (sizeBounds) EstimateSize(n cost.AstNode) *cost.SizeEstimate {
	if n.Path() == nil || n.Type() == nil {
		return nil
	}
	switch n.Type().Kind() {
	case types.ListKind, types.MapKind:
		return &cost.SizeEstimate{Min: 0, Max: maxBoundedList}
	case types.StringKind, types.BytesKind:
		return &cost.SizeEstimate{Min: 0, Max: maxBoundedString}
	}
	return nil
}

// bounded reports whether every list, map and string of in is within the bounds the static
// cost estimate assumed.
func bounded(in *Input) bool {
	short := func(ss ...string) bool {
		for _, s := range ss {
			if len(s) > maxBoundedString {
				return false
			}
		}
		return true
	}
	if !short(in.SKU.ID, in.SKU.Name, in.Site) || len(in.Lines) > maxBoundedList || len(in.Features) > maxBoundedList {
		return false
	}
	for i := range in.Lines {
		if !short(in.Lines[i].ID, in.Lines[i].State) {
			return false
		}
	}
	for k := range in.Features {
		if !short(k) {
			return false
		}
	}
	for _, l := range [][]string{in.Neighbours.Substitutes, in.Neighbours.Complements, in.Neighbours.Channels} {
		if len(l) > maxBoundedList || !short(l...) {
			return false
		}
	}
	return true
}
