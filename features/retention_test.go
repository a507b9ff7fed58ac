package features

import (
	"bytes"
	"encoding/gob"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gemba-io/gemba/signal"
)

func cnt(sig string, ts time.Time, v float64) signal.Sample {
	return signal.Sample{Signal: sig, Time: ts, Value: signal.Float(v), Quality: signal.Good}
}

// ckSeries returns the series in the checkpoint Checkpoint writes now, and its size.
func (h *harness) ckSeries() (sigs []string, size int) {
	h.t.Helper()
	if err := h.e.Checkpoint(); err != nil {
		h.t.Fatal(err)
	}
	data, _, _ := h.store.GetMeta(CheckpointKey)
	var ck checkpoint
	if err := gob.NewDecoder(bytes.NewReader(data)).Decode(&ck); err != nil {
		h.t.Fatal(err)
	}
	for _, cs := range ck.Series {
		sigs = append(sigs, cs.Sig)
	}
	return sigs, len(data)
}

// Signals matched by a glob whose names keep changing (a batch id in an MQTT topic, an OPC UA
// browse that renames) each get a series; a series whose signal sent nothing for the retention
// (default 168h) is dropped, from memory and from the checkpoint, and a dropped counter emits no
// more delta-0 windows. The stable signals are untouched, also across a restart after the drop.
func TestChurningSignalsDropped(t *testing.T) {
	h := newHarness(t, parseConfig(t, `
features:
  - {signal: press.parts, kind: counter, window: 1h, compute: [delta]}
  - {signal: "*.*.temperature", window: 1m, compute: [mean]}
  - {signal: "job.*.parts", kind: counter, window: 1h, compute: [delta]}
`))
	parts := 0.0
	stable := func() {
		now := h.clock.Now()
		h.add(gauge("line1.press.temperature", now, 20), cnt("press.parts", now, parts))
		parts += 3
	}
	stable()
	base, baseSize := h.ckSeries()
	if len(base) != 2 {
		t.Fatalf("checkpoint holds %v, want the 2 stable series", base)
	}
	const n = 100
	for i := range n {
		now := h.clock.Now()
		h.add(gauge(fmt.Sprintf("batch%d.oven.temperature", i), now, 180), cnt(fmt.Sprintf("job.%d.parts", i), now, float64(i)))
	}
	if got := h.e.Stats().Series; got != 2+2*n {
		t.Fatalf("series = %d, want %d", got, 2+2*n)
	}
	if sigs, size := h.ckSeries(); len(sigs) != 2+2*n || size < 10*baseSize {
		t.Fatalf("checkpoint with the churned series: %d series, %d bytes (base %d)", len(sigs), size, baseSize)
	}
	for range 170 {
		h.clock.Add(time.Hour)
		stable()
		h.e.Tick()
	}
	if got := h.e.Stats().Series; got != 2 {
		t.Fatalf("series = %d after %d series were silent for 170h, want 2", got, 2*n)
	}
	sigs, size := h.ckSeries()
	if len(sigs) != 2 || size > baseSize+256 {
		t.Fatalf("checkpoint after the drop: %d series %v, %d bytes, want the 2 stable ones in about %d bytes", len(sigs), sigs, size, baseSize)
	}
	before := len(h.features())
	for range 5 {
		h.clock.Add(time.Hour)
		stable()
		h.e.Tick()
	}
	for _, f := range h.features()[before:] {
		if strings.HasPrefix(f.Signal, "job.") || strings.HasPrefix(f.Signal, "batch") {
			t.Fatalf("a dropped series still emits: %+v", f)
		}
	}
	// The checkpoint without them restores; the stable counter continues exactly.
	h.restart(true)
	if got := h.e.Stats().Series; got != 2 {
		t.Fatalf("series after restart = %d, want 2", got)
	}
	h.clock.Add(time.Hour)
	stable()
	h.clock.Add(time.Hour)
	stable()
	fs := h.features()
	last := fs[len(fs)-1]
	if last.Signal != "press.parts" || last.Value != 3 || last.Count != 1 || last.Partial {
		t.Fatalf("stable counter after the restart: %+v, want delta 3 from 1 sample, complete", last)
	}
	// A dropped signal that comes back starts afresh (its baseline is gone: no increment yet).
	now := h.clock.Now()
	h.add(cnt("job.7.parts", now, 50))
	if got := h.e.Stats().Series; got != 3 {
		t.Fatalf("series = %d after a dropped signal came back, want 3", got)
	}
}

// A counter that reports by exception holds its value while the machine stands: within the
// retention it keeps its baseline (delta-0 windows, not partial, also across a clean restart) and
// resumes exactly.
func TestQuietCounterWithinRetention(t *testing.T) {
	h := newHarness(t, parseConfig(t, `
features:
  - {signal: press.parts, kind: counter, window: 1h, compute: [delta]}
`))
	h.add(cnt("press.parts", h.clock.Now(), 100))
	for i := range 160 {
		h.clock.Add(time.Hour)
		h.e.Tick()
		if i == 80 {
			h.restart(true)
		}
	}
	if got := h.e.Stats().Series; got != 1 {
		t.Fatalf("series = %d after 160h of standstill, want 1", got)
	}
	h.clock.Add(30 * time.Minute)
	h.add(cnt("press.parts", h.clock.Now(), 107))
	h.clock.Add(time.Hour)
	h.add(cnt("press.parts", h.clock.Now(), 108))
	fs := h.features()
	end := t0.Add(161 * time.Hour)
	var got *signal.Feature
	for i := range fs {
		if fs[i].WindowEnd.Equal(end) {
			got = &fs[i]
			continue
		}
		// (The window of the first sample after the standstill is partial after a restart: a
		// clean restart takes an event-time gap longer than a window for downtime.)
		if fs[i].Count != 0 && !fs[i].WindowStart.Equal(t0) || fs[i].Value != 0 || fs[i].Partial {
			t.Fatalf("quiet window: %+v, want delta 0, n 0, complete", fs[i])
		}
	}
	if got == nil || got.Value != 7 || got.Count != 1 {
		t.Fatalf("window ending %s: %+v, want delta 7 from the baseline kept over the standstill", end, got)
	}
}
