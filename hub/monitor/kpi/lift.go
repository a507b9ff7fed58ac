package kpi

import "github.com/gemba-io/gemba/hub/decide/experiment"

// FromHoldout turns a holdout experiment's measurement into one Lift of rule and arm (a LiftSource
// over the experiments builds its answer with it). Lift, Low and High are the ratio of treated to
// held-out response and its interval, as experiment.Lift computes them.
func FromHoldout(rule, arm string, r experiment.LiftResult) Lift {
	return Lift{Rule: rule, Arm: arm, Lift: r.Lift, Low: r.LiftLo, High: r.LiftHi, Level: r.Level, Treated: r.Treated,
		Held: r.Held, SRM: r.SRM.Mismatch}
}
