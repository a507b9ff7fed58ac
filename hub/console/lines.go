package console

import (
	"strconv"
	"time"

	"github.com/gemba-io/gemba/hub/state/features"
	"github.com/gemba-io/gemba/hub/state/graph"
)

// lineRow is one production line as the rules see it: its availability and the state derived from it
// (the same thresholds as decisions), units per hour, each with its freshness, and a timeline of its
// state over what the quality monitor keeps (a day and more by default).
type lineRow struct {
	ID, Site     string
	State        string // running, degraded, down, unknown
	Availability *features.Reading
	UnitsPerHour float64
	Units        *features.Reading
	Timeline     []cell
	TimelineFrom time.Time
	TimelineTo   time.Time
}

// cell is one slice of a line's state timeline, placed on a 0..1000 wide strip.
type cell struct {
	X, W  float64
	State string
	Title string
}

func (c *Console) lineRows(fs *features.Store, lines []graph.Node) []lineRow {
	lc := c.src.Lines
	if lc.Availability == "" {
		return nil
	}
	rows := make([]lineRow, 0, len(lines))
	for _, l := range lines {
		row := lineRow{ID: l.ID, Site: l.Parent, State: "unknown"}
		if r, ok := fs.Get(lc.Availability, l.ID); ok {
			row.Availability = &r
			if !r.Stale {
				row.State = lc.State(r.Value.Value)
			}
		}
		if lc.Units != "" {
			if u, ok := fs.Get(lc.Units, l.ID); ok {
				row.Units = &u
				if h := u.WindowEnd.Sub(u.WindowStart).Hours(); h > 0 {
					row.UnitsPerHour = u.Value.Value / h
				}
			}
		}
		if c.src.Timeline != nil {
			if spans, ok := c.src.Timeline(lc.Availability, l.ID); ok && len(spans) > 0 {
				from, to := spans[0].Start, spans[len(spans)-1].Start.Add(spans[len(spans)-1].Width)
				row.TimelineFrom, row.TimelineTo = from, to
				scale := 1000 / to.Sub(from).Seconds()
				for _, sp := range spans {
					st := lc.State(sp.Mean)
					row.Timeline = append(row.Timeline, cell{X: sp.Start.Sub(from).Seconds() * scale, W: sp.Width.Seconds() * scale,
						State: st, Title: sp.Start.Format("15:04") + " " + st + " (availability " + strconv.FormatFloat(sp.Mean, 'f', 2, 64) + ")"})
				}
			}
		}
		rows = append(rows, row)
	}
	return rows
}
