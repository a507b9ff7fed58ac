// Package promreg registers Prometheus collectors the way every gemba component wants: a
// component built again on the same registry (a restarted collector, a second engine in a test)
// keeps counting on the series already there instead of failing.
package promreg

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Register registers c and returns it, or returns the collector of the same type already
// registered under its name. Any other failure is stored in *errp if that is still nil, so a
// constructor can register everything and check once.
func Register[T prometheus.Collector](reg prometheus.Registerer, c T, errp *error) T {
	err := reg.Register(c)
	if err == nil {
		return c
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(T); ok {
			return existing
		}
	}
	if *errp == nil {
		*errp = err
	}
	return c
}
