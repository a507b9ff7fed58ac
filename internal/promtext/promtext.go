// Package promtext reads Prometheus metrics, from an agent's /metrics endpoint (the benchmark and
// chaos tools) or straight from a registry (tests).
package promtext

import (
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Metrics are the metric families of one scrape, by name.
type Metrics map[string]*dto.MetricFamily

// Scrape fetches and parses the text exposition at url.
func Scrape(url string) (Metrics, error) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	return fams, nil
}

// Gather collects the metric families of g, by name.
func Gather(g prometheus.Gatherer) (Metrics, error) {
	fams, err := g.Gather()
	if err != nil {
		return nil, err
	}
	m := make(Metrics, len(fams))
	for _, f := range fams {
		m[f.GetName()] = f
	}
	return m, nil
}

// Sum adds the counter, gauge and untyped values of every series of name whose labels include all
// the given key/value pairs (Sum("gemba_buffer_records", "stream", "samples")).
func (m Metrics) Sum(name string, labels ...string) float64 {
	f, ok := m[name]
	if !ok {
		return 0
	}
	var s float64
series:
	for _, x := range f.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, l := range x.GetLabel() {
				if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue series
			}
		}
		switch {
		case x.Counter != nil:
			s += x.Counter.GetValue()
		case x.Gauge != nil:
			s += x.Gauge.GetValue()
		case x.Untyped != nil:
			s += x.Untyped.GetValue()
		}
	}
	return s
}
