package audit

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/gemba-io/gemba/hub/act"
	"github.com/gemba-io/gemba/hub/decide/rules"
	"github.com/gemba-io/gemba/hub/state/features"
)

// Explain writes the answer to "why did this decision happen": the decision's rule with its
// version and text, what it read (with event times and lineage), the graph paths, the guardrails,
// the approval, the shadow disagreement or canary, each event, and the delivery state (delivery
// nil: not known). recs are a decision's records oldest first (History).
func Explain(w io.Writer, recs []Record, delivery *act.Record) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	if len(recs) == 0 {
		p("no audit record (unknown decision id, or its records expired)")
		return
	}
	first, last := Decided(recs), recs[len(recs)-1]
	p("decision %s: %s", first.DecisionID, last.Outcome)
	where := first.SKU
	if first.Site != "" {
		where += " at " + first.Site
	}
	p("  sku %s, channel %s, mode %s", where, first.Channel, first.Mode)
	p("  action: %s", FormatAction(first.Action))
	rs := first.RuleSet
	label := ""
	if rs.Label != "" {
		label = fmt.Sprintf(" (%s)", rs.Label)
	}
	p("  rule set %s version %s%s, live since rules change #%d", rs.Name, short(rs.Version), label, rs.ChangeSeq)
	p("  rule %q (rule %d, priority %d): when %s", first.Rule.Name, first.Rule.Index, first.Rule.Priority, strings.TrimSpace(first.Rule.When))
	if first.Arm != "" {
		p("  experiment arm: %s", first.Arm)
	}
	if x := first.Experiment; x != nil {
		if h := x.Holdout; h != nil {
			p("  experiment %s: holdout %.0f%%, this unit drew %.4f: %s", x.ID, h.Share*100, h.Bucket, h.Group)
		}
		if b := x.Bandit; b != nil {
			p("  experiment %s: bandit (pool %s, posterior revision %d) chose %g%% (%s) among:", x.ID, b.Pool, b.PoolRevision, b.Discount, b.Reason)
			u := b.Unit
			p("    stock: position %.1f, safety stock %.1f: room for %.1f extra units; baseline %.1f units over the promotion", u.Position, u.SafetyStock, u.Position-u.SafetyStock, u.Baseline)
			for _, a := range b.Arms {
				state := "not eligible: expected extra units exceed the stock above safety"
				switch {
				case a.Eligible:
					state = "eligible"
				case a.AboveMax:
					state = "not eligible: above the guardrails' max discount"
				}
				if a.Drawn {
					state += fmt.Sprintf(", drew lift %.3f, value %.3f", a.Sample, a.Value)
				}
				p("    %g%%: expected lift %.3f (%d outcomes), expected extra units %.1f, %s", a.Discount, a.ExpectedLift, a.PoolN, a.ExpectedExtra, state)
			}
		}
	}

	p("events:")
	for _, r := range recs {
		line := fmt.Sprintf("  %s  %-8s → %s", r.Time.UTC().Format(time.RFC3339), r.Event, r.Outcome)
		if r.Replica != "" {
			line += " (replica " + r.Replica + ")"
		}
		if r.Note != "" {
			line += ": " + oneLine(r.Note)
		}
		p("%s", line)
	}

	if len(first.Inputs) > 0 || first.Inventory != nil {
		p("inputs:")
	}
	for _, in := range first.Inputs {
		var flags []string
		for _, f := range []struct {
			on   bool
			name string
		}{{in.Stale, "stale"}, {in.Historical, "historical"}, {in.Partial, "partial"}, {in.BadQuality, "bad quality"}, {in.Drifting, "drifting"}} {
			if f.on {
				flags = append(flags, f.name)
			}
		}
		flags = append(flags, in.Quality...)
		flag := ""
		if len(flags) > 0 {
			flag = " [" + strings.Join(flags, ", ") + "]"
		}
		p("  %s[%s] = %g at %s (window from %s, age %.1fs)%s", in.Name, in.Key, in.Value, stamp(in.EventTime), stamp(in.WindowStart), in.AgeS, flag)
		l := in.Lineage
		if l != (features.Lineage{}) {
			p("      from agent %s at site %s, signal %s, agent config %s, stream seq %d (buffer seq %d)",
				l.Agent, l.Site, l.Signal, l.ConfigVersion, l.StreamSeq, l.FirstSeq)
		}
	}
	if inv := first.Inventory; inv != nil {
		v := inv.Inventory
		p("  inventory: on hand %g, position %g, days of cover %g (daily rate %g), updated %s, snapshot %s",
			v.OnHand, v.Position, v.DaysOfCover, v.DailyRate, stamp(inv.Updated), stamp(inv.SnapshotTime))
		if fc := inv.Forecast; fc != nil {
			p("      days of cover from model set %s (methods %s, fitted on data to %s): %g, %g to %g in the 80%% interval; moving average %g/day",
				fc.Version, strings.Join(fc.Methods, ", "), stamp(fc.DataTo), v.DaysOfCover, v.DaysOfCoverLow, v.DaysOfCoverHigh, inv.MovingAverage)
			for _, fb := range fc.Fallbacks {
				p("      channel %s", fb)
			}
			if sc := fc.Shadow; sc != nil {
				p("      shadow model set %s (decides nothing): %g days of cover, %g to %g", sc.Version, sc.Cover.DaysOfCover, sc.Cover.DaysOfCoverLow, sc.Cover.DaysOfCoverHigh)
			}
		} else {
			why := "no model set covers this SKU"
			if inv.NotUsed != "" {
				why = inv.NotUsed
			}
			p("      days of cover from the moving average of daily sales (%s)", why)
		}
	}
	if len(first.Paths) > 0 {
		p("graph paths:")
		for _, path := range first.Paths {
			p("  %s", path)
		}
	}
	if len(first.Trace) > 0 {
		p("rules evaluated:")
		for _, s := range first.Trace {
			res := "no match"
			switch {
			case s.Err != "":
				res = "error: " + s.Err
			case s.Matched:
				res = "matched"
			}
			p("  %s: %s", s.Rule, res)
		}
	}
	explainVerdict(p, recs)
	if d := first.Disagreement; d != nil {
		active := "nothing"
		if d.ActiveAction != nil {
			active = FormatAction(*d.ActiveAction)
			if d.ActiveRule != "" {
				active += fmt.Sprintf(" (rule %q)", d.ActiveRule)
			}
		}
		p("shadow: never acted; the active version %s decided %s", short(d.ActiveVersion), active)
	}
	if c := first.Canary; c != nil {
		in := "out of"
		if c.In {
			in = "in"
		}
		p("canary: version %s acts for %.1f%% of %ss; %s %s is %s the canary", short(c.Version), c.Share*100, c.By, c.By, c.Unit, in)
	}
	explainDelivery(p, delivery)
}

func explainVerdict(p func(string, ...any), recs []Record) {
	// The latest verdict holds the approval and any release; the first holds the assessments.
	var v = recs[0].Verdict
	for _, r := range recs {
		if r.Verdict != nil {
			v = r.Verdict
		}
	}
	if v == nil {
		return
	}
	head := fmt.Sprintf("guardrails: %s", v.Outcome)
	if v.Guardrail != "" {
		head += fmt.Sprintf(" by %s", v.Guardrail)
	}
	if v.Reason != "" {
		head += ": " + oneLine(v.Reason)
	}
	p("%s", head)
	for _, a := range v.Assessments {
		mark := "pass"
		if !a.Passed {
			mark = "FAIL"
		}
		line := fmt.Sprintf("  %s %s: %g (limit %g)", mark, a.Guardrail, a.Value, a.Limit)
		if a.Detail != "" {
			line += " " + a.Detail
		}
		p("%s", line)
	}
	if a := v.Approval; a != nil {
		what := "rejected"
		if a.Approved {
			what = "approved"
		}
		line := fmt.Sprintf("approval: %s by %s at %s", what, oneLine(a.By), stamp(a.At))
		if a.Reason != "" {
			line += fmt.Sprintf(": %q", a.Reason)
		}
		p("%s", line)
	}
}

// oneLine is s with its control characters escaped (a line break as \n): a reason or a name a
// person wrote cannot add lines of its own to the text, such as an event nobody recorded.
func oneLine(s string) string {
	if !strings.ContainsFunc(s, unicode.IsControl) {
		return s
	}
	q := strconv.Quote(s)
	return q[1 : len(q)-1]
}

func explainDelivery(p func(string, ...any), d *act.Record) {
	if d == nil {
		p("delivery: not known here (no outbox record)")
		return
	}
	yes := map[bool]string{true: "yes", false: "no"}
	line := fmt.Sprintf("delivery: %s, phase %s, published %s, webhook %s, %d failed attempts", d.State, d.Phase,
		yes[d.Published], yes[d.Hooked], d.Attempts)
	if !d.DoneAt.IsZero() {
		line += ", done at " + stamp(d.DoneAt)
	}
	p("%s", line)
	if d.EndedEarly != "" {
		p("  %s", d.EndedEarly)
	}
	if !d.GivenBack.IsZero() && d.State == act.Cancelled {
		p("  never started: its caps and cooldown given back at %s", stamp(d.GivenBack))
	} else if !d.GivenBack.IsZero() {
		p("  dead before any of it went out: its caps and cooldown given back at %s (a replay reserves them again first)", stamp(d.GivenBack))
	}
	if !d.Reacquired.IsZero() {
		p("  caps and cooldown given back when it was dead-lettered, reserved again at %s for its replay: allowed again", stamp(d.Reacquired))
	}
	if d.LastError != "" {
		p("  last error: %s", d.LastError)
	}
}

// FormatAction prints an action on one line.
func FormatAction(a rules.Action) string {
	ch := strings.Join(a.Channels, ",")
	switch a.Kind {
	case rules.Promote:
		s := fmt.Sprintf("promote on %s: %g%% off for %s", ch, a.Discount, a.Duration)
		if a.Audience != "" {
			s += " to " + a.Audience
		}
		return s
	case rules.Hold:
		return fmt.Sprintf("hold on %s: %s", ch, a.Reason)
	}
	return "none"
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func short(v string) string {
	if len(v) > 12 {
		return v[:12]
	}
	return v
}
