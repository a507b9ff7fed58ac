package doccheck

import (
	"regexp"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// metricName is a metric name in the docs: gemba_..., with gemba_x_{a,b}_total standing for two.
// A name followed by "." is a subject (gemba_monitor.<stream>), one ending in "_" a family
// (gemba_hub_kpi_*), neither a metric.
var metricName = regexp.MustCompile(`gemba_[a-z0-9_]+(?:\{[a-z0-9_,]+\}[a-z0-9_]+)?`)

// family is a family of metrics the docs name as a whole: `gemba_hub_kpi_*`.
var family = regexp.MustCompile(`(gemba_[a-z0-9_]*_)\*([^a-z0-9_]|$)`)

// Families returns the prefixes of the metric families the corpus names as a whole
// (`gemba_hub_kpi_*`; not `gemba_hub_decide_*_total`, which goes with a list, nor a whole
// component's `gemba_hub_*` or `gemba_opcua_*`, which documents none of them).
func (c Corpus) Families() []string {
	var out []string
	for _, f := range c.Sorted() {
		for _, m := range family.FindAllStringSubmatch(c[f], -1) {
			if strings.Count(m[1], "_") >= 3 {
				out = append(out, m[1])
			}
		}
	}
	return out
}

// MetricMention is where the docs first name a metric.
type MetricMention struct {
	File string
	Line int
}

// Metrics returns the metric names the corpus mentions, each with where it is first mentioned.
func (c Corpus) Metrics() map[string]MetricMention {
	out := map[string]MetricMention{}
	for _, f := range c.Sorted() {
		for i, line := range strings.Split(c[f], "\n") {
			for _, loc := range metricName.FindAllStringIndex(line, -1) {
				name := line[loc[0]:loc[1]]
				if loc[1] < len(line) && line[loc[1]] == '.' || strings.HasSuffix(name, "_") {
					continue
				}
				for _, n := range normalize(name) {
					if _, seen := out[n]; !seen {
						out[n] = MetricMention{f, i + 1}
					}
				}
			}
		}
	}
	return out
}

// Registered reports whether any of regs has a metric of that name (a histogram's _bucket, _sum
// and _count series count as its name), also a vector without series yet, which Gather does not
// show: a registry refuses a second collector describing a name it has, so a probe that registers
// finds out (and is unregistered at once).
func Registered(name string, regs ...*prometheus.Registry) bool {
	names := []string{name}
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suf); ok {
			names = append(names, base)
		}
	}
	for _, reg := range regs {
		for _, n := range names {
			probe := prometheus.NewGauge(prometheus.GaugeOpts{Name: n, Help: "doccheck probe"})
			if err := reg.Register(probe); err != nil {
				return true
			}
			reg.Unregister(probe)
		}
	}
	return false
}
