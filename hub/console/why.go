package console

import (
	"math"
	"time"

	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/decide/experiment"
)

// experimentView is a decision's experiment as the why page shows it: the holdout draw, or the
// bandit's choice with its posterior and arms, and which arms the safety cap left eligible.
type experimentView struct {
	ID      string
	Holdout *experiment.Assignment
	Bandit  *experiment.Choice
	// Eligible and Capped are the bandit's arms (discounts) whose expected extra units fit the stock
	// above the safety stock, and those that did not; NoArm: none fitted (the decision was suppressed).
	Eligible, Capped []float64
	NoArm            bool
	// Position is the stock the cap was measured against and SafetyStock what had to remain (nil:
	// not recorded; older records keep only the inventory input's position).
	Position, SafetyStock *float64
}

func experimentOf(rec audit.Record) *experimentView {
	x := rec.Experiment
	if x == nil || (x.Holdout == nil && x.Bandit == nil) {
		return nil
	}
	v := &experimentView{ID: x.ID, Holdout: x.Holdout, Bandit: x.Bandit}
	if b := x.Bandit; b != nil {
		for _, a := range b.Arms {
			if a.Eligible {
				v.Eligible = append(v.Eligible, a.Discount)
			} else if !a.AboveMax { // capped by the stock; above the max discount is said per arm
				v.Capped = append(v.Capped, a.Discount)
			}
		}
		v.NoArm = b.Reason == ""
		if u := b.Unit; u.SKU != "" {
			v.Position, v.SafetyStock = &u.Position, &u.SafetyStock
		} else if rec.Inventory != nil {
			p := rec.Inventory.Inventory.Position
			v.Position = &p
		}
	}
	return v
}

// coverRow is one source of days of cover at the decision: the model set in force, the shadow set
// (decides nothing), or the moving average of daily sales (the fallback).
type coverRow struct {
	Source, Version, Role string
	Days, Low, High, Rate float64
	Interval              bool // Low and High are an 80 % interval
}

// forecastView is where a decision's days of cover came from: the model set and the alternatives
// beside it. Only for a decision a model set covered (otherwise the inventory line says the moving
// average gave the days).
type forecastView struct {
	Version   string
	Methods   []string
	DataTo    time.Time
	Fallbacks []string
	Rows      []coverRow
}

func forecastOf(rec audit.Record) *forecastView {
	inv := rec.Inventory
	if inv == nil || inv.Forecast == nil {
		return nil
	}
	fc, c := inv.Forecast, inv.Inventory
	v := &forecastView{Version: fc.Version, Methods: fc.Methods, DataTo: fc.DataTo, Fallbacks: fc.Fallbacks}
	v.Rows = append(v.Rows, coverRow{Source: "model set", Version: fc.Version, Role: "in force: gave the decision's days of cover",
		Days: c.DaysOfCover, Low: c.DaysOfCoverLow, High: c.DaysOfCoverHigh, Rate: c.DailyRate, Interval: fc.HasInterval})
	if sc := fc.Shadow; sc != nil {
		v.Rows = append(v.Rows, coverRow{Source: "shadow model set", Version: sc.Version, Role: "decides nothing",
			Days: sc.Cover.DaysOfCover, Low: sc.Cover.DaysOfCoverLow, High: sc.Cover.DaysOfCoverHigh, Rate: sc.Cover.DailyRate,
			Interval: sc.Cover.DaysOfCoverLow != sc.Cover.DaysOfCoverHigh})
	}
	v.Rows = append(v.Rows, coverRow{Source: "moving average", Role: "the fallback (no set covers the SKU, or the set is past its horizon)",
		Days: movingCover(c.Position, inv.MovingAverage), Rate: inv.MovingAverage})
	return v
}

// movingCover is the days of cover the moving average gives, by the inventory's rule (Position /
// DailyRate; 0 when nothing is left, no demand when the rate is 0): the record keeps the rate,
// and the days only of the forecast that was used.
func movingCover(position, rate float64) float64 {
	switch {
	case position <= 0:
		return 0
	case rate <= 0:
		return math.Inf(1)
	}
	return position / rate
}
