package promtext

import (
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestScrapeAndSum(t *testing.T) {
	reg := prometheus.NewRegistry()
	rec := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "gemba_buffer_records"}, []string{"stream"})
	in := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gemba_collector_samples_total"}, []string{"collector"})
	reg.MustRegister(rec, in)
	rec.WithLabelValues("samples").Set(3)
	rec.WithLabelValues("features").Set(4)
	in.WithLabelValues("sim-mqtt").Add(10)
	in.WithLabelValues("sim-opcua").Add(5)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()

	m, err := Scrape(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"gemba_buffer_records", nil, 7},
		{"gemba_buffer_records", []string{"stream", "samples"}, 3},
		{"gemba_collector_samples_total", []string{"collector", "sim-opcua"}, 5},
		{"gemba_collector_samples_total", nil, 15},
		{"gemba_collector_samples_total", []string{"collector", "nope"}, 0},
		{"no_such_metric", nil, 0},
	} {
		if got := m.Sum(c.name, c.labels...); got != c.want {
			t.Errorf("Sum(%s, %v) = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	srv.Close()
	if _, err := Scrape(srv.URL); err == nil {
		t.Error("scraping a closed server succeeded")
	}
}
