package main

import (
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/decide/guard"
)

// launched is when the process started: the first promotion is measured from it too.
var launched = time.Now()

// verbose prints every suppressed decision too (-v).
var verbose bool

// moment is the first decision of one kind the demo waits for.
type moment struct {
	At       time.Duration // since the plant started; 0: not seen
	Decision string
	Line     string
}

// moments follows the hub's decision log through its API (as the console does) and prints each
// decision that acted, waits for a person, or was stopped for reading replayed data, once.
type moments struct {
	base  string
	start time.Time
	seen  map[string]bool

	Promotion, Hold, Approval moment
	// Historical counts the decisions the guard suppressed because they read replayed (historical)
	// values; ActedOnHistorical lists acted decisions that read one: it must stay empty.
	Historical        int
	ActedOnHistorical []string
	Acted             int
}

func newMoments(base string, start time.Time) *moments {
	return &moments{base: base, start: start, seen: map[string]bool{}}
}

// poll reads the newest decisions of each outcome the demo shows and prints what is new.
func (m *moments) poll() error {
	for _, outcome := range []string{audit.OutcomeFired, audit.OutcomeHeld, audit.OutcomeAwaitingApproval, audit.OutcomeSuppressed} {
		var ds struct {
			Decisions []audit.Record `json:"decisions"`
		}
		if err := getJSON(m.base+"/api/v1/decisions?limit=200&outcome="+url.QueryEscape(outcome), &ds); err != nil {
			return err
		}
		for i := len(ds.Decisions) - 1; i >= 0; i-- { // oldest first
			m.take(&ds.Decisions[i])
		}
	}
	return nil
}

// packed reports whether the decision read units of its SKU packed in the window (a rule that
// promotes what is being made, not a calendar offer).
func packed(r *audit.Record) bool {
	for _, in := range r.Inputs {
		if in.Name == "units" && in.Key == r.SKU && in.Value > 0 {
			return true
		}
	}
	return false
}

func historicalInputs(r *audit.Record) []string {
	var out []string
	for _, in := range r.Inputs {
		if in.Historical {
			out = append(out, in.Name+"["+in.Key+"]")
		}
	}
	return out
}

func (m *moments) take(r *audit.Record) {
	id := r.DecisionID + ":" + r.Event
	if m.seen[id] || r.Mode == audit.ModeShadow {
		return
	}
	m.seen[id] = true
	el := max(r.Time.Sub(m.start).Round(time.Second), 0) // a calendar rule may act before the plant starts
	cover := ""
	if r.Inventory != nil {
		cover = fmt.Sprintf(", cover %.1f days", r.Inventory.Inventory.DaysOfCover)
	}
	hist := historicalInputs(r)
	switch r.Outcome {
	case audit.OutcomeFired, audit.OutcomeHeld:
		m.Acted++
		if len(hist) > 0 {
			m.ActedOnHistorical = append(m.ActedOnHistorical, r.DecisionID)
		}
	case audit.OutcomeSuppressed:
		if verbose {
			fmt.Printf("    %4.0fs  suppressed %s on %s, rule %s: %s %s\n", el.Seconds(), r.SKU, r.Channel, r.Rule.Name, r.Verdict.Guardrail, r.Verdict.Reason)
		}
		if r.Verdict != nil && r.Verdict.Guardrail == guard.GInputs && strings.Contains(r.Verdict.Reason, "historical") || len(hist) > 0 {
			m.Historical++
			if m.Historical <= 3 {
				fmt.Printf(">>> %4.0fs  NOT ACTED  %s on %s: rule %s read replayed data (%s): deferred until the inputs are live\n",
					el.Seconds(), r.SKU, r.Channel, r.Rule.Name, strings.Join(hist, ", "))
			}
		}
		return
	}
	var line string
	var first *moment
	switch r.Outcome {
	case audit.OutcomeFired:
		line = fmt.Sprintf("PROMOTION  %s on %s: %g%% off for %s (rule %s%s)", r.SKU, r.Channel, r.Action.Discount, r.Action.Duration, r.Rule.Name, cover)
		if packed(r) {
			first = &m.Promotion // the moment is a SKU promoted while it is being made
		}
	case audit.OutcomeHeld:
		line = fmt.Sprintf("HOLD       %s on %s: %s (rule %s%s)", r.SKU, r.Channel, r.Action.Reason, r.Rule.Name, cover)
		first = &m.Hold
	case audit.OutcomeAwaitingApproval:
		line = fmt.Sprintf("APPROVAL   %s on %s: %g%% off waits for a person (rule %s%s): approve or reject it in the console's Approvals",
			r.SKU, r.Channel, r.Action.Discount, r.Rule.Name, cover)
		first = &m.Approval
	default:
		return
	}
	if first != nil && first.At == 0 {
		*first = moment{At: max(el, time.Second), Decision: r.DecisionID, Line: line}
	}
	// A hold is decided again every bucket while its line stays down: print it once.
	unit := r.Outcome + "/" + r.Rule.Name + "/" + r.SKU + "/" + r.Channel
	if m.seen[unit] {
		return
	}
	m.seen[unit] = true
	fmt.Printf(">>> %4.0fs  %s\n", el.Seconds(), line)
}

// summary prints the four moments and returns what is missing or wrong.
func (m *moments) summary(replayed uint64) []string {
	var bad []string
	fmt.Println("\nthe four moments:")
	show := func(name string, mo moment) {
		if mo.At == 0 {
			fmt.Printf("  %-46s not seen\n", name)
			bad = append(bad, name+": not seen")
			return
		}
		fmt.Printf("  %-46s at %3.0fs  decision %s\n", name, mo.At.Seconds(), mo.Decision)
	}
	show("an over-stocked SKU being packed is promoted", m.Promotion)
	if m.Promotion.At > 0 {
		fmt.Printf("  %-46s %.0fs after the demo started (the plant started %.0fs after it)\n", "",
			m.start.Add(m.Promotion.At).Sub(launched).Seconds(), m.start.Sub(launched).Seconds())
	}
	show("a stopped line's low-cover SKU is held", m.Hold)
	show("a deep clearance waits for approval", m.Approval)
	fmt.Printf("  %-46s %d replayed messages; %d decisions on them suppressed, %d of %d acted decisions read one\n",
		"the uplink outage, no decision on replayed data", replayed, m.Historical, len(m.ActedOnHistorical), m.Acted)
	if replayed == 0 {
		bad = append(bad, "outage: nothing was replayed")
	}
	if len(m.ActedOnHistorical) > 0 {
		bad = append(bad, "acted on replayed data: "+strings.Join(m.ActedOnHistorical, ", "))
	}
	return bad
}
