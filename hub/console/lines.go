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
	read    bool // a reading of units made here (Units, once kept)
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
	Groups(name string, limit int, group func(*features.Reading) string, cmp func(a, b *features.Reading) int) map[string]*features.Group
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
	// The line a signal is placed on ("": none), once per signal.
	placed := map[string]string{}
	lineOf := func(sig string) string {
		l, seen := placed[sig]
		if !seen {
			if res, err := g.LineOfSignal(sig); err == nil {
				l = res.ID
			}
			placed[sig] = l
		}
		return l
	}
	// The SKUs each line produces (the graph's edges), and per line the first of the SKUs whose latest
	// units reading came from its signals though the graph does not say it produces them (made here),
	// as the store goes through the readings: no copy of them all per view.
	prods := make(map[string][]graph.Result, len(lines))
	produces := map[[2]string]bool{}
	for _, l := range lines {
		if prod, err := g.SKUsOf(l.ID); err == nil {
			prods[l.ID] = prod
			for _, p := range prod {
				produces[[2]string{l.ID, p.ID}] = true
			}
		}
	}
	var made map[string]*features.Group
	ok, skuNote := skuUnits(fs, c.cfg.SKUUnits)
	if ok {
		made = fs.Groups(c.cfg.SKUUnits, maxLineSKUs, func(r *features.Reading) string {
			if l := lineOf(r.Lineage.Signal); l != "" && !produces[[2]string{l, r.Key}] {
				return l
			}
			return ""
		}, compareMade)
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
			row.SKUs, row.MoreSKUs = lineSKUs(l.ID, prods[l.ID], made[l.ID], func(sku string) (features.Reading, string, bool) {
				r, ok := fs.Get(c.cfg.SKUUnits, sku)
				return r, lineOf(r.Lineage.Signal), ok
			})
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

// lineSKUs lists the SKUs of line: those the graph says it produces (prod; units reads a SKU's
// latest reading and the line it came from) and those whose latest units reading came from its
// signals though the graph does not say so (made: the first of them, and their count). The running
// ones come first, fastest first; then those with a reading (stale, or none made), then those
// without, each by id; at most maxLineSKUs, the others counted. It keeps those alone as it goes.
func lineSKUs(line string, prod []graph.Result, made *features.Group, units func(sku string) (features.Reading, string, bool)) ([]skuRate, int) {
	out := make([]skuRate, 0, maxLineSKUs)
	n := 0
	keep := func(s skuRate, r *features.Reading) {
		n++
		if len(out) == maxLineSKUs {
			if compareSKUs(&s, &out[maxLineSKUs-1]) >= 0 {
				return
			}
			out = out[:maxLineSKUs-1]
		}
		if r != nil {
			s.Units = new(features.Reading)
			*s.Units = *r // a copy only of those kept
		}
		i, _ := slices.BinarySearchFunc(out, &s, func(a skuRate, b *skuRate) int { return compareSKUs(&a, b) })
		out = slices.Insert(out, i, s)
	}
	seen := make(map[string]bool, len(prod))
	for _, p := range prod {
		if seen[p.ID] {
			continue
		}
		seen[p.ID] = true
		s := skuRate{SKU: p.ID, Produces: true}
		r, l, ok := units(p.ID)
		switch {
		case !ok:
		case l == line || l == "": // a signal the graph does not place counts for the SKU's producers
			rateOf(&s, &r)
			keep(s, &r)
			continue
		default:
			s.Elsewhere = l
		}
		keep(s, nil)
	}
	if made != nil {
		for i := range made.First {
			r := &made.First[i]
			s := skuRate{SKU: r.Key}
			rateOf(&s, r)
			keep(s, r)
		}
		n += made.Count - len(made.First)
	}
	return out, n - len(out)
}

// rateOf puts the rate of the units reading r, made on the SKU's line, in s (not r itself: that is
// copied for the SKUs kept).
func rateOf(s *skuRate, r *features.Reading) {
	s.read, s.PerHour = true, r.PerHour()
	s.Running = !r.Stale && r.Value.Value > 0
}

// compareMade orders readings of units made on their SKU's line as the table does.
func compareMade(a, b *features.Reading) int {
	sa, sb := skuRate{SKU: a.Key}, skuRate{SKU: b.Key}
	rateOf(&sa, a)
	rateOf(&sb, b)
	return compareSKUs(&sa, &sb)
}

// compareSKUs orders the SKUs of a line: running first, fastest first; then with a reading; then
// without; each by id.
func compareSKUs(a, b *skuRate) int {
	rank := func(s *skuRate) int {
		switch {
		case s.Running:
			return 0
		case s.read: // stale, or none made in its window
			return 1
		}
		return 2
	}
	if c := cmp.Compare(rank(a), rank(b)); c != 0 {
		return c
	}
	if a.Running {
		if c := cmp.Compare(b.PerHour, a.PerHour); c != 0 {
			return c
		}
	}
	return cmp.Compare(a.SKU, b.SKU)
}
