package mqtt

import (
	"strings"
	"testing"
	"time"

	"github.com/gemba-io/gemba/signal"
)

// BenchmarkMapJSON is the per-message mapping cost of the benchmark's payload (4 fields + time),
// without network or durable write.
func BenchmarkMapJSON(b *testing.B) {
	s := Subscription{Topic: "bench/x", Format: FormatJSON, Signal: "line1.{field}",
		Fields:    []Field{{Path: "temp"}, {Path: "pressure"}, {Path: "rpm"}, {Path: "running"}},
		TimeField: "ts", TimeFormat: "unix_ms"}
	c, err := compileSubscription(&s)
	if err != nil {
		b.Fatal(err)
	}
	var dst []signal.Sample
	b.ReportAllocs()
	for b.Loop() {
		m := msgCtx{source: "bench:bench/x", topic: "bench/x", levels: strings.Split("bench/x", "/"), recv: time.Now()}
		dst = c.parseJSON(dst[:0], &m, benchPayload)
	}
	if len(dst) != 4 {
		b.Fatalf("%d samples", len(dst))
	}
}
