package decide

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/decide/guard"
	"github.com/gemba-io/gemba/hub/decide/rules"
	"github.com/gemba-io/gemba/hub/learn/registry"
	"github.com/gemba-io/gemba/hub/state/features"
	"github.com/gemba-io/gemba/hub/state/graph"
	"github.com/gemba-io/gemba/hub/state/inventory"
)

// State is what a rule input is built from: the hub's stores when live, the replayed streams in a
// backtest.
type State interface {
	// Feature returns the value of feature name for key, with its freshness at the reader's clock.
	Feature(name, key string) (features.Reading, bool)
	// Position returns the inventory position of a SKU at a site.
	Position(sku, site string) (inventory.Position, bool)
}

// Forecasts project a SKU's days of cover from its demand forecast (the active model set); ok=false
// when no set covers the SKU at the site, and the inventory's moving average is used instead.
type Forecasts interface {
	Cover(sku, site string, position float64, now time.Time) (registry.Cover, bool)
}

// Quality is the monitor's verdict on a feature's values for one key; ok=false when it has none.
type Quality interface {
	Quality(feature, key string) (FeatureQuality, bool)
}

// FeatureQuality is what the decision needs of the monitor's state of one feature × key.
type FeatureQuality struct {
	Drifting, Gap, Bad bool
	BadShare           float64
	Reasons            []string // what is wrong, in words, for the record
}

// Unit is what one evaluation decides for: one SKU at one site.
type Unit struct{ SKU, Site string }

// topology is the graph's answers a decision needs, computed once per graph: which lines make a
// SKU (and where), what it is sold via, its neighbours, and the reverse (a line's or site's SKUs).
type topology struct {
	skus     map[string]*skuTopo
	lineSKUs map[string][]string
	siteSKUs map[string][]string
	units    []Unit
}

type skuTopo struct {
	name        string
	lines       []graph.Result // producing lines, each with its site and path
	channels    []graph.Result
	substitutes []string
	complements []string
	sites       []string
	// Computed once per graph, shared read-only by every input of the SKU: the channel ids, and
	// per site the lines there and the graph paths an audit record shows.
	channelIDs []string
	bySite     map[string]siteTopo
}

type siteTopo struct {
	lines []string
	paths []string
}

func newTopology(g *graph.Graph) *topology {
	t := &topology{skus: map[string]*skuTopo{}, lineSKUs: map[string][]string{}, siteSKUs: map[string][]string{}}
	if g == nil {
		return t
	}
	ids := func(rs []graph.Result, _ error) []string {
		out := make([]string, 0, len(rs))
		for _, r := range rs {
			out = append(out, r.ID)
		}
		return out
	}
	for _, n := range g.SKUs() {
		st := &skuTopo{name: n.Name}
		st.lines, _ = g.ProducersOf(n.ID)
		st.channels, _ = g.ChannelsOf(n.ID)
		st.substitutes = ids(g.Substitutes(n.ID))
		st.complements = ids(g.Complements(n.ID))
		for _, l := range st.lines {
			t.lineSKUs[l.ID] = append(t.lineSKUs[l.ID], n.ID)
			if l.Site != "" && !slices.Contains(st.sites, l.Site) {
				st.sites = append(st.sites, l.Site)
				t.siteSKUs[l.Site] = append(t.siteSKUs[l.Site], n.ID)
			}
		}
		sort.Strings(st.sites)
		for _, site := range st.sites {
			t.units = append(t.units, Unit{n.ID, site})
		}
		var chPaths []string
		for _, c := range st.channels {
			st.channelIDs = append(st.channelIDs, c.ID)
			chPaths = append(chPaths, c.String())
		}
		st.bySite = map[string]siteTopo{}
		for _, site := range st.sites {
			ss := siteTopo{paths: slices.Clip(slices.Clone(chPaths))}
			for _, l := range st.lines {
				if l.Site == site {
					ss.lines = append(ss.lines, l.ID)
					ss.paths = append(ss.paths, l.String())
				}
			}
			st.bySite[site] = ss
		}
		t.skus[n.ID] = st
	}
	return t
}

// explained is a rule input with what the audit says about it: every value with its event time
// and lineage, and the graph paths it came through.
type explained struct {
	in       rules.Input
	inputs   []audit.Input
	lineIn   []int // indexes into inputs of each line's availability reading (-1: none)
	inv      *audit.InventoryInput
	invFound bool
	paths    []string
}

// builder makes rule inputs from the state.
type builder struct {
	cfg   Lines
	topo  *topology
	state State
	fc    Forecasts // nil: days of cover from the moving average
	q     Quality   // nil: no monitoring
	defs  map[string]features.Definition
}

// reading is the audit's view of a value, with the monitor's verdict on it. A bad share above its
// threshold makes the value bad quality, as a bad source status would; drifting is its own flag.
func (b *builder) reading(name, key string, r features.Reading) (audit.Input, FeatureQuality) {
	in := audit.Input{
		Name: name, Key: key, Value: r.Value.Value, WindowStart: r.WindowStart, EventTime: r.WindowEnd,
		AgeS: r.AgeSeconds, Stale: r.Stale, Historical: r.Historical, Partial: r.Partial, Lineage: r.Lineage,
	}
	var q FeatureQuality
	if b.q != nil {
		if fq, ok := b.q.Quality(name, key); ok {
			q = fq
			in.Drifting, in.BadQuality, in.Quality = fq.Drifting, fq.Bad, fq.Reasons
		}
	}
	return in, q
}

// input builds the rule input of u at now.
func (b *builder) input(u Unit, now time.Time) *explained {
	ex := &explained{in: rules.Input{SKU: rules.SKU{ID: u.SKU}, Site: u.Site, Now: now, Features: make(map[string]rules.Feature, len(b.defs))}}
	st := b.topo.skus[u.SKU]
	if st == nil {
		st = &skuTopo{}
	}
	ex.in.SKU.Name = st.name
	ex.in.Neighbours = rules.Neighbours{Substitutes: st.substitutes, Complements: st.complements, Channels: st.channelIDs}
	ss, ok := st.bySite[u.Site]
	if !ok {
		ss.paths = st.channelIDs[:0:0]
	}
	ex.paths = ss.paths // shared: never appended to
	lineIDs := ss.lines
	if len(lineIDs) > 0 {
		ex.in.Lines = make([]rules.Line, 0, len(lineIDs))
	}
	// Sized once: an audit reading is ~300 bytes, and growing the slice reading by reading was
	// most of what building an input allocated (10,000 SKUs re-evaluated at every rules change).
	ex.inputs = make([]audit.Input, 0, len(b.defs)+2*len(lineIDs))
	for _, l := range lineIDs {
		ex.in.Lines = append(ex.in.Lines, b.line(ex, l))
	}
	if p, ok := b.state.Position(u.SKU, u.Site); ok {
		ex.invFound = true
		ex.in.Inventory = rules.Inventory{
			OnHand: p.OnHand, Position: p.Position, DaysOfCover: p.DaysOfCover, DailyRate: p.DailyRate,
			DaysOfCoverLow: p.DaysOfCover, DaysOfCoverHigh: p.DaysOfCover, Produced: p.Produced, Sold: p.Sold,
		}
		ex.inv = &audit.InventoryInput{Updated: p.Updated, SnapshotTime: p.SnapshotTime, MovingAverage: p.DailyRate}
		if b.fc != nil {
			// A forecast past its horizon is an extrapolation of a set nobody refitted, and an
			// incomplete one leaves a channel's demand out: the moving average of what actually
			// sold is the better guess then.
			c, ok := b.fc.Cover(u.SKU, u.Site, p.Position, now)
			switch {
			case ok && c.Stale:
				ex.inv.NotUsed = fmt.Sprintf("model set %s is past its horizon (data to %s)", c.Version, c.DataTo.Format(time.RFC3339))
			case ok && c.Incomplete:
				var missing []string
				for _, fb := range c.Fallbacks {
					if fb.Missing {
						missing = append(missing, fmt.Sprintf("%s (fit failed: %s)", fb.Channel, fb.Err))
					}
				}
				ex.inv.NotUsed = fmt.Sprintf("model set %s is incomplete: no forecast nor moving average of channel %s", c.Version,
					strings.Join(missing, ", "))
			}
			if ok && !c.Stale && !c.Incomplete {
				inv := &ex.in.Inventory
				inv.DaysOfCover, inv.DaysOfCoverLow, inv.DaysOfCoverHigh = c.Days, c.LowDays, c.HighDays
				inv.DailyRate, inv.Forecast = c.DailyMean, c.Version
				ms := make([]string, len(c.Methods))
				for i, m := range c.Methods {
					ms[i] = string(m)
				}
				ex.inv.Forecast = &audit.ForecastRef{Version: c.Version, Methods: ms, DataTo: c.DataTo, HasInterval: c.HasInterval}
				for _, fb := range c.Fallbacks {
					ex.inv.Forecast.Fallbacks = append(ex.inv.Forecast.Fallbacks,
						fmt.Sprintf("%s: moving average %g/day over %d days (fit failed: %s)", fb.Channel, fb.Mean, fb.Days, fb.Err))
				}
				if sc := c.Shadow; sc != nil {
					ex.inv.Forecast.Shadow = &audit.ShadowCover{Version: sc.Version, Cover: rules.Inventory{DaysOfCover: sc.Days,
						DaysOfCoverLow: sc.LowDays, DaysOfCoverHigh: sc.HighDays, DailyRate: sc.DailyMean, Forecast: sc.Version}}
				}
			}
		}
		ex.inv.Inventory = ex.in.Inventory
	} else {
		// Nothing known of the stock: neither plenty nor none. The guardrails refuse to act on a
		// rule that reads it (see guardInputs).
		ex.in.Inventory = rules.Inventory{DaysOfCover: math.NaN()}
		ex.inv = nil
	}
	for name, d := range b.defs {
		var key string
		var r features.Reading
		var ok bool
		switch d.Key {
		case features.BySKU:
			key = u.SKU
			r, ok = b.state.Feature(name, key)
		case features.BySite:
			key = u.Site
			r, ok = b.state.Feature(name, key)
		case features.ByLine:
			// The freshest reading among the lines that make the SKU here.
			for _, l := range lineIDs {
				if lr, lok := b.state.Feature(name, l); lok && (!ok || lr.AgeSeconds < r.AgeSeconds) {
					key, r, ok = l, lr, true
				}
			}
		}
		if !ok {
			continue
		}
		in, q := b.reading(name, key, r)
		ex.in.Features[name] = rules.Feature{
			Value: r.Value.Value, Stale: r.Stale, Historical: r.Historical, Partial: r.Partial, AgeS: r.AgeSeconds,
			Drifting: q.Drifting, Gap: q.Gap, Bad: q.Bad, BadShare: q.BadShare,
		}
		ex.inputs = append(ex.inputs, in)
	}
	slices.SortFunc(ex.inputs, func(a, b audit.Input) int {
		if a.Name != b.Name {
			return cmpStr(a.Name, b.Name)
		}
		return cmpStr(a.Key, b.Key)
	})
	// A line's availability can also be the SKU's feature of that name: list it once.
	ex.inputs = slices.CompactFunc(ex.inputs, func(a, b audit.Input) bool { return a.Name == b.Name && a.Key == b.Key })
	// inputs were sorted: find the lines' readings again.
	ex.lineIn = ex.lineIn[:0]
	for _, l := range ex.in.Lines {
		i := slices.IndexFunc(ex.inputs, func(in audit.Input) bool { return in.Name == b.cfg.Availability && in.Key == l.ID })
		ex.lineIn = append(ex.lineIn, i)
	}
	return ex
}

func cmpStr(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// line reads one line's features and adds its readings to ex.inputs.
func (b *builder) line(ex *explained, id string) rules.Line {
	l := rules.Line{ID: id, State: "unknown", Stale: true}
	r, ok := b.state.Feature(b.cfg.Availability, id)
	if ok {
		l.Availability, l.Stale, l.State = r.Value.Value, r.Stale, b.cfg.State(r.Value.Value)
		in, _ := b.reading(b.cfg.Availability, id, r)
		ex.inputs = append(ex.inputs, in)
	}
	if b.cfg.Units != "" {
		if u, ok := b.state.Feature(b.cfg.Units, id); ok && !u.Stale {
			l.UnitsPerHour = u.PerHour()
			in, _ := b.reading(b.cfg.Units, id, u)
			ex.inputs = append(ex.inputs, in)
		}
	}
	return l
}

// guardInputs lists the inputs the deciding rule read, with their quality, for the guardrails: a
// rule is stopped by a stale, historical or partial value it read, not by one it never looks at.
// A rule that reads the stock of a SKU without a known position reads a stale input; one that
// reads the lines reads each line's availability (a line without a reading is stale).
func guardInputs(ex *explained, reads rules.Reads, erroredBefore []string) []guard.Input {
	var out []guard.Input
	for _, in := range ex.inputs {
		if reads.AllFeatures || slices.Contains(reads.Features, in.Name) {
			out = append(out, guard.Input{Name: "feature:" + in.Name + "@" + in.Key, Stale: in.Stale, Historical: in.Historical,
				Partial: in.Partial, BadQuality: in.BadQuality, Drifting: in.Drifting})
		}
	}
	if reads.Lines {
		for i, l := range ex.in.Lines {
			gi := guard.Input{Name: "line:" + l.ID, Stale: l.Stale}
			if j := ex.lineIn[i]; j >= 0 {
				in := ex.inputs[j]
				gi.Historical, gi.Partial, gi.BadQuality, gi.Drifting = in.Historical, in.Partial, in.BadQuality, in.Drifting
			}
			out = append(out, gi)
		}
	}
	if reads.Inventory {
		out = append(out, guard.Input{Name: "inventory:" + ex.in.SKU.ID + "@" + ex.in.Site, Stale: !ex.invFound})
	}
	for _, r := range erroredBefore {
		// An earlier rule could not be evaluated and might have decided instead.
		out = append(out, guard.Input{Name: "rule:" + r, BadQuality: true})
	}
	return out
}

// affected lists the units a new value of feature name for key is an input of: the SKU's own
// (keyed by SKU), those a line makes (keyed by line, and the lines' availability and units), those
// made at a site (keyed by site). Features keyed by machine or signal are not a SKU's input.
func (b *builder) affected(name, key string) []Unit {
	def, ok := b.defs[name]
	if name == b.cfg.Availability || (b.cfg.Units != "" && name == b.cfg.Units) {
		def.Key, ok = features.ByLine, true
	}
	if !ok {
		return nil
	}
	t := b.topo
	var us []Unit
	switch def.Key {
	case features.BySKU:
		if st := t.skus[key]; st != nil {
			for _, site := range st.sites {
				us = append(us, Unit{key, site})
			}
		}
	case features.ByLine:
		for _, sku := range t.lineSKUs[key] {
			for _, l := range t.skus[sku].lines {
				if l.ID == key {
					us = append(us, Unit{sku, l.Site})
				}
			}
		}
	case features.BySite:
		for _, sku := range t.siteSKUs[key] {
			us = append(us, Unit{sku, key})
		}
	}
	return us
}
