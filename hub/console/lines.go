package console

import (
	"cmp"
	"slices"
	"strconv"
	"time"

	"github.com/gemba-io/gemba/hub/state/features"
	"github.com/gemba-io/gemba/hub/state/graph"
)

// lineRow is one production line as the rules see it: its availability and the state derived from it
// (the same thresholds as decisions), units per hour, each with its freshness, the SKUs it makes with
// their units per hour, and a timeline of its state over what the quality monitor keeps (a day and
// more by default).
type lineRow struct {
	ID, Site     string
	State        string // running, degraded, down, unknown
	Availability *features.Reading
	UnitsPerHour float64
	Units        *features.Reading
	SKUs         []skuRate
	MoreSKUs     int // SKUs of the line not shown (past maxLineSKUs)
	Timeline     []cell
	TimelineFrom time.Time
	TimelineTo   time.Time
}

// skuRate is one SKU of a line: whether the graph says the line produces it, and its units per hour
// from the SKU's units reading when that reading is this line's.
type skuRate struct {
	SKU      string
	Produces bool              // the graph's produces edge
	Units    *features.Reading // nil: no reading of this SKU made here
	PerHour  float64
	// Elsewhere is the line whose signal brought the SKU's latest reading, when not this one: the
	// value is kept per SKU, so the line that reported last is the one it belongs to.
	Elsewhere string
	// Running: a fresh reading with units made here, whether or not the graph lists the SKU.
	Running bool
}

// maxLineSKUs bounds the SKUs listed per line: the running ones come first, the rest are counted.
const maxLineSKUs = 12

// cell is one slice of a line's state timeline, placed on a 0..1000 wide strip.
type cell struct {
	X, W  float64
	State string
	Title string
}

// featureReader is what the Lines table reads of the feature store (*features.Store).
type featureReader interface {
	Get(name, key string) (features.Reading, bool)
	List(name string) []features.Reading
	Definitions() (features.Definitions, string)
}

// skuUnits checks that the console's sku_units names a feature keyed by SKU; the reason when not.
func skuUnits(fs featureReader, name string) (ok bool, why string) {
	defs, _ := fs.Definitions()
	i := slices.IndexFunc(defs, func(d features.Definition) bool { return d.Name == name })
	switch {
	case i < 0:
		return false, "no feature " + strconv.Quote(name) + " is defined (console.sku_units names the feature of units made per SKU)"
	case defs[i].Key != features.BySKU:
		return false, "feature " + strconv.Quote(name) + " (console.sku_units) is keyed by " + string(defs[i].Key) + ", not by sku"
	}
	return true, ""
}

func (c *Console) lineRows(fs featureReader, g *graph.Graph) (rows []lineRow, skuNote string) {
	lc := c.src.Lines
	if lc.Availability == "" || g == nil {
		return nil, ""
	}
	lines := g.Lines()
	// Each SKU's latest units reading and the line whose signal brought it ("" when the graph does
	// not place the signal: then it is taken as made by the lines the graph says produce the SKU).
	// Pointers into the list: no copy of each reading per SKU.
	var units map[string]skuReading
	ok, skuNote := skuUnits(fs, c.cfg.SKUUnits)
	here := map[string][]string{} // line → SKUs whose latest reading came from it
	if ok {
		list := fs.List(c.cfg.SKUUnits)
		units = make(map[string]skuReading, len(list))
		placed := map[string]string{}
		for i := range list {
			r := &list[i]
			sig := r.Lineage.Signal
			l, seen := placed[sig]
			if !seen {
				if res, err := g.LineOfSignal(sig); err == nil {
					l = res.ID
				}
				placed[sig] = l
			}
			units[r.Key] = skuReading{r, l}
			if l != "" {
				here[l] = append(here[l], r.Key)
			}
		}
	}
	rows = make([]lineRow, 0, len(lines))
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
				row.UnitsPerHour = u.PerHour()
			}
		}
		if ok {
			row.SKUs, row.MoreSKUs = lineSKUs(g, l.ID, here[l.ID], units)
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
	return rows, skuNote
}

// lineSKUs lists the SKUs of line: those the graph says it produces and those whose latest units
// reading came from its signals (made here though the graph does not say so). The running ones
// come first, fastest first; then those with a reading (stale, or none made), then those without,
// each by id; at most maxLineSKUs, the others counted.
func lineSKUs(g *graph.Graph, line string, madeHere []string, units map[string]skuReading) ([]skuRate, int) {
	prod, err := g.SKUsOf(line)
	if err != nil {
		prod = nil
	}
	out := make([]skuRate, 0, len(prod)+len(madeHere))
	seen := make(map[string]bool, cap(out))
	add := func(sku string, produces bool) {
		if seen[sku] {
			return
		}
		seen[sku] = true
		s := skuRate{SKU: sku, Produces: produces}
		if u, ok := units[sku]; ok {
			switch {
			case u.line == line || (u.line == "" && produces):
				s.Units, s.PerHour = u.r, u.r.PerHour()
				s.Running = !u.r.Stale && u.r.Value.Value > 0
			case u.line != "":
				s.Elsewhere = u.line
			}
		}
		out = append(out, s)
	}
	for _, p := range prod {
		add(p.ID, true)
	}
	for _, sku := range madeHere {
		add(sku, false)
	}
	rank := func(s *skuRate) int {
		switch {
		case s.Running:
			return 0
		case s.Units != nil: // stale, or none made in its window
			return 1
		}
		return 2
	}
	slices.SortFunc(out, func(a, b skuRate) int {
		if c := cmp.Compare(rank(&a), rank(&b)); c != 0 {
			return c
		}
		if a.Running {
			if c := cmp.Compare(b.PerHour, a.PerHour); c != 0 {
				return c
			}
		}
		return cmp.Compare(a.SKU, b.SKU)
	})
	if len(out) > maxLineSKUs {
		return out[:maxLineSKUs:maxLineSKUs], len(out) - maxLineSKUs
	}
	return out, 0
}

// skuReading is a SKU's latest units reading and the line its signal is placed on ("": none).
type skuReading struct {
	r    *features.Reading
	line string
}
