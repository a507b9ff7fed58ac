package buffer

import (
	"io"
	"log/slog"
	"os"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/gemba-io/gemba/internal/testutil"
)

func TestMain(m *testing.M) {
	if os.Getenv(crashChildEnv) != "" {
		crashChild() // re-executed test binary: the crash test's victim
		return
	}
	if os.Getenv(fullChildEnv) != "" {
		fullChild() // re-executed test binary: the full-disk test's store
		return
	}
	if os.Getenv(damageChildEnv) != "" {
		damageChild() // re-executed test binary: opens a damaged store
		return
	}
	if os.Getenv(rssChildEnv) != "" {
		rssChild() // re-executed test binary: BenchmarkRSS's measured process
		return
	}
	goleak.VerifyTestMain(m)
}

// testLogger logs to the test at Warn and above (Badger's routine output is Debug).
func testLogger(t testing.TB) *slog.Logger {
	return testutil.Logger(t, slog.LevelWarn)
}

func slogTo(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// gauge returns the value of the metric name with labels (nil: no labels) from reg.
func gauge(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	var pairs []string
	for k, v := range labels {
		pairs = append(pairs, k, v)
	}
	return testutil.Metric(t, reg, name, pairs...)
}
