package rules

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"
)

// Input is what a rule sees about one SKU at one site. The hub's wiring fills it from its state
// (features, inventory, graph); the rules package does not read the state itself, so a backtest or
// a test can build inputs by hand. The json names are the names rules use.
type Input struct {
	SKU        SKU                `json:"sku"`
	Site       string             `json:"site"`
	Lines      []Line             `json:"lines"` // the lines that can produce the SKU
	Inventory  Inventory          `json:"inventory"`
	Features   map[string]Feature `json:"features"` // by feature name; absent when there is no value
	Neighbours Neighbours         `json:"neighbours"`
	Now        time.Time          `json:"now"`
}

// SKU names the product being decided on.
type SKU struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// Line is one production line that can make the SKU.
type Line struct {
	ID           string  `json:"id"`
	Availability float64 `json:"availability"` // 0..1, running time over planned time
	State        string  `json:"state"`        // the line's state as its agent reports it (running, idle, down, changeover)
	UnitsPerHour float64 `json:"units_per_hour"`
	Stale        bool    `json:"stale"` // the line's readings are older than their max age
}

// Inventory is the SKU's position at the site (units; days_of_cover is +Inf without demand).
// Days of cover and the daily rate come from the demand forecast when a model set covers the SKU
// (forecast names the set's version; low and high are the cover if demand runs at the top or the
// bottom of the forecast's 80 % interval), else from the moving average of daily sales (forecast
// empty, low = high = days_of_cover).
type Inventory struct {
	OnHand          float64 `json:"on_hand"`
	Position        float64 `json:"position"`
	DaysOfCover     float64 `json:"days_of_cover"`
	DaysOfCoverLow  float64 `json:"days_of_cover_low"`
	DaysOfCoverHigh float64 `json:"days_of_cover_high"`
	DailyRate       float64 `json:"daily_rate"`
	Forecast        string  `json:"forecast"`
	Produced        float64 `json:"produced"`
	Sold            float64 `json:"sold"`
}

// Feature is the latest value of one feature for the input's key. Rules read value only when it
// is fresh: reading the value of a stale feature is an evaluation error, never a number, so a
// rule that forgets to check freshness does not match instead of acting on old data.
type Feature struct {
	Value      float64 `json:"value"`
	Stale      bool    `json:"stale"`
	Historical bool    `json:"historical"` // from a replayed backlog
	Partial    bool    `json:"partial"`    // the window was not complete
	AgeS       float64 `json:"age_s"`      // seconds since the value's window ended
	// The monitor's verdict on the feature's values for this key (false and 0 when not monitored):
	// drifting away from its reference window, fed by an agent stream with missing sequences, or
	// with too many bad values in the current window (bad_share is that share).
	Drifting bool    `json:"drifting"`
	Gap      bool    `json:"gap"`
	Bad      bool    `json:"bad"`
	BadShare float64 `json:"bad_share"`
}

// Neighbours are the SKU's neighbours in the knowledge graph (ids).
type Neighbours struct {
	Substitutes []string `json:"substitutes"`
	Complements []string `json:"complements"`
	Channels    []string `json:"channels"` // the channels the SKU is sold via
}

// MarshalJSON writes a days of cover that is not a finite number (+Inf without demand, NaN when the
// stock is unknown) as a string ("+Inf", "NaN"): JSON numbers cannot hold it, and an audit record or
// a lint witness must still encode.
func (v Inventory) MarshalJSON() ([]byte, error) {
	type plain Inventory
	return json.Marshal(struct {
		plain
		DaysOfCover     any `json:"days_of_cover"`
		DaysOfCoverLow  any `json:"days_of_cover_low"`
		DaysOfCoverHigh any `json:"days_of_cover_high"`
	}{plain(v), days(v.DaysOfCover), days(v.DaysOfCoverLow), days(v.DaysOfCoverHigh)})
}

func days(f float64) any {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return strconv.FormatFloat(f, 'g', -1, 64)
	}
	return f
}

// UnmarshalJSON reads what MarshalJSON writes.
func (v *Inventory) UnmarshalJSON(data []byte) error {
	type plain Inventory
	var aux struct {
		plain
		DaysOfCover     json.RawMessage `json:"days_of_cover"`
		DaysOfCoverLow  json.RawMessage `json:"days_of_cover_low"`
		DaysOfCoverHigh json.RawMessage `json:"days_of_cover_high"`
	}
	if err := json.Unmarshal(data, &aux); err != nil {
		return err
	}
	*v = Inventory(aux.plain)
	for _, f := range []struct {
		name string
		raw  json.RawMessage
		to   *float64
	}{{"days_of_cover", aux.DaysOfCover, &v.DaysOfCover}, {"days_of_cover_low", aux.DaysOfCoverLow, &v.DaysOfCoverLow},
		{"days_of_cover_high", aux.DaysOfCoverHigh, &v.DaysOfCoverHigh}} {
		if len(f.raw) == 0 || string(f.raw) == "null" {
			continue
		}
		var s string
		if json.Unmarshal(f.raw, &s) == nil {
			d, err := strconv.ParseFloat(s, 64)
			if err != nil {
				return fmt.Errorf("%s: %w", f.name, err)
			}
			*f.to = d
			continue
		}
		if err := json.Unmarshal(f.raw, f.to); err != nil {
			return fmt.Errorf("%s: %w", f.name, err)
		}
	}
	return nil
}
