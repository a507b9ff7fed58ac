package buffer

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gemba-io/gemba/signal"
)

// TestMetrics: drops, depth, fullness and disk size are exposed, and agree with Stats.
func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := capConfig(t, DropNewest)
	s, err := Open(cfg, Options{Logger: testLogger(t), Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	refused := 0
	for i := range 300 {
		if _, err := s.Append(context.Background(), signal.StreamSamples, bigRec(i)); errors.Is(err, ErrFull) {
			refused++
		} else if err != nil {
			t.Fatal(err)
		}
	}
	st := s.Stats()
	samples := map[string]string{"stream": "samples"}
	if got := gauge(t, reg, "gemba_buffer_dropped_records_total", map[string]string{"stream": "samples", "reason": "full"}); refused == 0 || got != float64(refused) {
		t.Fatalf("dropped{full} = %v, refused %d", got, refused)
	}
	if got := gauge(t, reg, "gemba_buffer_records", samples); got != float64(st.Streams[signal.StreamSamples].Records) || got == 0 {
		t.Fatalf("records = %v, stats %d", got, st.Streams[signal.StreamSamples].Records)
	}
	if got := gauge(t, reg, "gemba_buffer_full", nil); got != 1 {
		t.Fatalf("full = %v", got)
	}
	if got := gauge(t, reg, "gemba_buffer_disk_bytes", nil); got <= 0 || got > float64(cfg.MaxBytes) {
		t.Fatalf("disk_bytes = %v", got)
	}
	if got := gauge(t, reg, "gemba_buffer_oldest_age_seconds", samples); got <= 0 {
		t.Fatalf("oldest_age_seconds = %v", got)
	}
	// A second store cannot register the same metrics in the same registry: a clear error.
	cfg2 := testConfig(t)
	if _, err := Open(cfg2, Options{Metrics: reg}); err == nil || !strings.Contains(err.Error(), "register metrics") {
		t.Fatalf("second registration = %v", err)
	}
}

// TestBadgerLogsThroughSlog: Badger's own messages arrive at the injected logger.
func TestBadgerLogsThroughSlog(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := Open(testConfig(t), Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "msg=badger lib=badger") {
		t.Fatalf("no Badger line in the slog output:\n%.2000s", buf.String())
	}
}
