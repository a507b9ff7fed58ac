package testutil

import (
	"io"
	"log/slog"
	"sync"
	"testing"
)

// Logger logs at level and above to the test's output, shown when it fails: what a component
// warned about is then in the report.
func Logger(t testing.TB, level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(Writer(t), &slog.HandlerOptions{Level: level}))
}

// Writer writes each line to the test's output. Lines written after the test's cleanups (a
// goroutine that outlived it) are dropped rather than panicking the test binary.
func Writer(t testing.TB) io.Writer {
	w := &testWriter{t: t}
	t.Cleanup(w.close) // registered first, so it runs after the cleanups that stop the components
	return w
}

type testWriter struct {
	mu     sync.Mutex
	t      testing.TB
	closed bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.t.Log(string(p[:len(p)-min(len(p), 1)]))
	}
	return len(p), nil
}

func (w *testWriter) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
}
