package rules

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub/state/graph"
)

// The example rule sets in configs/ load strictly against the features their hub config
// defines, and lint without warnings: docs/rules.md points at them.
func TestExampleConfigs(t *testing.T) {
	for _, path := range []string{"../../../configs/rules.example.yaml", "../../../configs/demo/rules.yaml"} {
		t.Run(path, func(t *testing.T) {
			s, err := LoadFile(path, KnownFeatures("units", "availability", "temperature"))
			if err != nil {
				t.Fatal(err)
			}
			if err := AsErrors(s.Lint(), Warning); err != nil {
				t.Errorf("lint:\n%v", err)
			}
			if _, err := LoadFile(path, KnownFeatures("units")); !strings.Contains(path, "demo") && err == nil {
				t.Error("a feature the hub does not define was accepted")
			}
		})
	}
}

// The demo rules decide what the mission says on the demo plant's own SKUs and channels:
// promote what is over-stocked and being produced, hold what a stopped line cannot supply.
func TestDemoRules(t *testing.T) {
	g, err := graph.LoadFile("../../../configs/demo/graph.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s, err := LoadFile("../../../configs/demo/rules.yaml", KnownFeatures("units", "availability", "temperature"))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range s.Rules() {
		for _, ch := range r.Action.Channels {
			if n, ok := g.Node(ch); ch != AllChannels && (!ok || n.Kind != graph.KindChannel) {
				t.Errorf("rule %s: channel %s is not in the demo graph", r.Name, ch)
			}
		}
		if a := r.Action.Audience; a != "" {
			if n, ok := g.Node(a); !ok || n.Kind != graph.KindSegment {
				t.Errorf("rule %s: audience %s is not a segment of the demo graph", r.Name, a)
			}
		}
	}
	// The sampling lint finds the one overlap of the demo: the bundle and the general promote
	// (a conjunction of two exact ids, a weekday, and production), info under first.
	var overlaps []string
	for _, f := range s.Lint() {
		if f.Code == "overlap" {
			overlaps = append(overlaps, f.Other+"+"+f.Rule+"/"+string(f.Severity))
		}
	}
	if !slices.Contains(overlaps, "promote-overstock+bundle-b-c-wholesale/info") {
		t.Errorf("overlaps %v", overlaps)
	}
	input := func(sku string, state string, cover float64, units *Feature, now time.Time) *Input {
		in := &Input{SKU: SKU{ID: sku}, Site: "demo-plant", Now: now, Features: map[string]Feature{},
			Inventory: Inventory{DaysOfCover: cover, OnHand: 100, Position: 100, DailyRate: 100 / cover}}
		if units != nil {
			in.Features["units"] = *units
		}
		for _, q := range []struct {
			f    func(string) ([]graph.Result, error)
			into *[]string
		}{{g.ChannelsOf, &in.Neighbours.Channels}, {g.Substitutes, &in.Neighbours.Substitutes}, {g.Complements, &in.Neighbours.Complements}} {
			rs, err := q.f(sku)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range rs {
				*q.into = append(*q.into, r.ID)
			}
		}
		producers, err := g.ProducersOf(sku)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range producers {
			in.Lines = append(in.Lines, Line{ID: p.ID, State: state, Availability: 0.9, UnitsPerHour: 60})
		}
		return in
	}
	fresh := &Feature{Value: 14, AgeS: 20}
	stale := &Feature{Value: 14, Stale: true, AgeS: 400}
	thursday := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	saturday := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		in   *Input
		want []string // channel=kind/rule/discount
	}{
		{"overstocked and produced", input("A-100", "running", 45, fresh, thursday), []string{"retail=promote/promote-overstock/10", "web=promote/promote-overstock/10"}},
		{"deeply overstocked", input("A-200", "running", 90, fresh, thursday), []string{"retail=promote/clear-deep-overstock/15", "web=promote/clear-deep-overstock/15"}},
		{"overstocked, count stale", input("A-100", "running", 45, stale, thursday), nil},
		{"overstocked, no count", input("C-220", "running", 45, nil, thursday), nil},
		{"overstocked, line idle", input("A-100", "idle", 45, fresh, thursday), nil},
		{"line down, stock short", input("B-210", "down", 3, fresh, thursday), []string{"retail=hold/hold-stopped-supply/0"}},
		{"line down, stock plenty", input("B-210", "down", 20, fresh, thursday), nil},
		{"bundle on saturday", input("B-110", "running", 25, fresh, saturday), []string{"wholesale=promote/bundle-b-c-wholesale/5"}},
		{"bundle not on thursday", input("B-110", "running", 25, fresh, thursday), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := s.Evaluate(tc.in)
			var got []string
			for _, d := range res.PerChannel() {
				got = append(got, strings.Join([]string{d.Channel + "=" + string(d.Action.Kind), d.Rule, ftoa(d.Action.Discount)}, "/"))
			}
			if !slices.Equal(got, tc.want) || res.Errors != 0 {
				t.Errorf("got %v (errors %d, trace %+v), want %v", got, res.Errors, res.Trace, tc.want)
			}
		})
	}
}

func ftoa(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }
