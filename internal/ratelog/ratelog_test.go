package ratelog

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestOneLinePerKeyAndInterval(t *testing.T) {
	var out bytes.Buffer
	r := New(slog.New(slog.NewTextHandler(&out, nil)), time.Minute)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r.now = func() time.Time { return now }
	for range 5 {
		r.Warn("a", "problem", "k", "a")
	}
	r.Warn("b", "problem", "k", "b")
	now = now.Add(time.Minute)
	r.Warn("a", "problem", "k", "a")
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines, want 3:\n%s", len(lines), out.String())
	}
	if !strings.Contains(lines[0], "k=a") || strings.Contains(lines[0], "suppressed") ||
		!strings.Contains(lines[1], "k=b") || !strings.Contains(lines[2], "suppressed=4") {
		t.Errorf("lines:\n%s", out.String())
	}
}

func TestKeysBounded(t *testing.T) {
	r := New(slog.New(slog.DiscardHandler), time.Hour)
	for i := range 3 * maxKeys {
		r.Warn(strings.Repeat("x", i%50)+string(rune(i)), "m")
	}
	if n := len(r.keys); n > maxKeys {
		t.Fatalf("%d keys kept, limit %d", n, maxKeys)
	}
}
