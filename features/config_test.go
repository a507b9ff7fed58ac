package features

import (
	"errors"
	"strings"
	"testing"

	"github.com/gemba-io/gemba/config"
)

// checkedDoc is what the agent does: decode, then CheckSignals with the statically known signals.
type checkedDoc struct {
	Features Config `yaml:"features"`
	known    map[string]bool
}

func (d *checkedDoc) Validate(r config.Report) {
	d.Features.CheckSignals(r.Sub("features"), func(s string) bool { return d.known[s] })
}

func TestConfigInvalid(t *testing.T) {
	cases := []struct {
		name, yaml string
		want       []string // each must appear in the error text, with path (and line)
	}{
		{"unknown feature", `
features:
  - {signal: a, window: 1m, compute: [mean, median]}`, []string{`line 3: features[0].compute[1]: unknown feature "median" for kind gauge`}},
		{"window zero", `
features:
  - {signal: a, window: 0s, compute: [mean]}`, []string{"features[0].window: must be > 0"}},
		{"window missing", `
features:
  - {signal: a, compute: [mean]}`, []string{"features[0].window: must be > 0"}},
		{"window negative", `
features:
  - {signal: a, window: -5s, compute: [mean]}`, []string{"features[0].window: must be > 0"}},
		{"by unknown signal", `
features:
  - {signal: parts, kind: counter, window: 1m, compute: [delta], by: line1.nope}`, []string{`features[0].by: unknown signal "line1.nope"`}},
		{"hop not dividing window", `
features:
  - {signal: a, window: 1m, hop: 7s, compute: [mean]}`, []string{"features[0].hop: window 1m0s must be a multiple of hop 7s"}},
		{"unknown kind", `
features:
  - {signal: a, kind: histogram, window: 1m, compute: [mean]}`, []string{`features[0].kind: unknown kind "histogram"`}},
		{"counter feature on gauge", `
features:
  - {signal: a, window: 1m, compute: [time_in_state]}`, []string{`features[0].compute[0]: unknown feature "time_in_state" for kind gauge`}},
		{"by on a gauge", `
features:
  - {signal: a, window: 1m, compute: [mean], by: sku}`, []string{"features[0].by: grouping is supported for kind counter only", `features[0].by: unknown signal "sku"`}},
		{"bad uncertain policy", `
features:
  - {signal: a, window: 1m, compute: [mean], uncertain: maybe}`, []string{`features[0].uncertain: unknown policy "maybe"`}},
		{"typo in key", `
features:
  - {signal: a, windw: 1m, compute: [mean]}`, []string{`features[0].windw: unknown field "windw" (did you mean "window"?)`, "features[0].window: must be > 0"}},
		{"availability without running states", `
features:
  - {signal: st, kind: state, window: 1m, compute: [availability]}`, []string{"features[0].states.running: availability needs the running states"}},
		{"rename of uncomputed", `
features:
  - {signal: c, kind: counter, window: 1m, compute: [delta], rename: {rate: r}}`, []string{`features[0].rename.rate: renames "rate"`}},
		{"bad glob", `
features:
  - {signal: "line1.[", window: 1m, compute: [mean]}`, []string{`features[0].signal: bad pattern "line1.["`}},
		{"negative lateness and empty compute", `
features:
  - {signal: a, window: 1m, compute: [mean]}
  - {signal: b, window: 1m, allowed_lateness: -1s, compute: []}`, []string{"features[1].allowed_lateness: must be >= 0", "features[1].compute: must list at least one feature"}},
		{"counter_max on gauge", `
features:
  - {signal: a, window: 1m, compute: [mean], counter_max: 100}`, []string{"features[0].counter_max: applies to kind counter only"}},
		{"running not planned", `
features:
  - {signal: st, kind: state, window: 1m, compute: [availability], states: {running: [run], planned: [idle]}}`, []string{`features[0].states.running[0]: running state "run" is not in planned`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			doc := checkedDoc{known: map[string]bool{"line1.press.sku": true}}
			err := config.NewDecoder().Unmarshal([]byte(c.yaml), &doc)
			var ps config.Problems
			if !errors.As(err, &ps) {
				t.Fatalf("want config problems, got %v", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
			if len(ps) != len(c.want) {
				t.Errorf("got %d problems, want %d: %v", len(ps), len(c.want), err)
			}
		})
	}
}

func TestConfigValid(t *testing.T) {
	doc := checkedDoc{known: map[string]bool{"line1.press.sku": true}}
	yml := `
features:
  - {signal: line1.press.temperature, window: 1m, compute: [mean, min, max, stddev, p95]}
  - {signal: line1.press.parts, kind: counter, window: 1m, compute: [delta, rate], by: line1.press.sku, rename: {delta: units_produced}}
  - signal: line1.press.state
    kind: state
    window: 5m
    compute: [time_in_state, availability]
    states: {running: [running], planned: [running, idle, down]}
  - {signal: "line1.*", window: 10s, hop: 5s, compute: [count, ewma, twa], ewma_alpha: 0.3, forward_raw: false, idle_timeout: -1s}
`
	if err := config.NewDecoder().Unmarshal([]byte(yml), &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Features) != 4 || doc.Features[3].Hop.Seconds() != 5 || *doc.Features[3].ForwardRaw {
		t.Fatalf("decoded %+v", doc.Features)
	}
	if _, err := New(doc.Features, Options{}); err != nil {
		t.Fatal(err)
	}
}

func TestNewRejectsUnvalidatedWindow(t *testing.T) {
	if _, err := New(Config{{Signal: "a", Compute: []string{"mean"}}}, Options{}); err == nil {
		t.Fatal("New accepted a zero window")
	}
}
