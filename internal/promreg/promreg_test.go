package promreg

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestRegister(t *testing.T) {
	reg := prometheus.NewRegistry()
	var err error
	a := Register(reg, prometheus.NewCounter(prometheus.CounterOpts{Name: "x_total", Help: "x"}), &err)
	b := Register(reg, prometheus.NewCounter(prometheus.CounterOpts{Name: "x_total", Help: "x"}), &err)
	if err != nil || a != b {
		t.Fatalf("second registration: err %v, same collector %v", err, a == b)
	}
	// Same name, other label set: a real conflict, reported.
	Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x_total", Help: "x"}, []string{"l"}), &err)
	if err == nil {
		t.Fatal("conflicting registration not reported")
	}
}
