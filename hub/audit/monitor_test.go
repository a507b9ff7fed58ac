package audit

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/gemba-io/gemba/internal/natstest"
)

func TestMonitorEvents(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	l := openLog(t, js, 1)
	ctx := context.Background()
	at := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	ev := MonitorEvent{ID: "quality:drift:breach:temp:line1:1", Kind: "drift", State: "breach", Feature: "temp", Key: "line1",
		Time: at, PSI: 0.4, Why: "PSI 0.4"}
	seq, err := l.RecordMonitor(ctx, ev)
	if err != nil {
		t.Fatal(err)
	}
	// Every replica raises the same event: it is stored once.
	if again, err := l.RecordMonitor(ctx, ev); err != nil || again != seq {
		t.Fatalf("second replica's copy: seq %d err %v, want %d", again, err, seq)
	}
	gap := MonitorEvent{ID: "quality:gap:breach:a1:features:i1:7", Kind: "gap", State: "breach", Agent: "a1", From: 7, To: 8, Time: at, Why: "gap"}
	if _, err := l.RecordMonitor(ctx, gap); err != nil {
		t.Fatal(err)
	}
	// A stuck sensor (quality.KindStuck) is an event of its own.
	stuck := MonitorEvent{ID: "quality:stuck:breach:temp:line2:2", Kind: "stuck", State: "breach", Feature: "temp", Key: "line2", Time: at,
		Why: "value 11.5 unchanged for 6h0m0s"}
	if _, err := l.RecordMonitor(ctx, stuck); err != nil {
		t.Fatalf("stuck event: %v", err)
	}
	if _, err := l.Publish(ctx, record(1, EventDecided, OutcomeFired), 0); err != nil {
		t.Fatal(err)
	}
	got, err := l.MonitorEvents(ctx, "temp", "line1", 10)
	if err != nil || len(got) != 1 || got[0].PSI != 0.4 || got[0].Seq != seq {
		t.Fatalf("events of temp/line1: %+v %v", got, err)
	}
	if all, _ := l.MonitorEvents(ctx, "", "", 10); len(all) != 3 {
		t.Fatalf("all events: %d, want 3", len(all))
	}
	// Decision reads skip monitor events rather than counting them as malformed records.
	recs, err := l.Recent(ctx, Filter{})
	if err != nil || len(recs) != 1 || l.Stats.Malformed.Load() != 0 {
		t.Fatalf("recent: %d records, err %v, malformed %d", len(recs), err, l.Stats.Malformed.Load())
	}
	for _, bad := range []struct {
		ev   MonitorEvent
		want string
	}{
		{MonitorEvent{Kind: "drift"}, "id required"},
		{MonitorEvent{ID: "x", Kind: "weather", State: "breach", Time: at}, `unknown kind "weather"`},
		{MonitorEvent{ID: "x", Kind: "drift", State: "maybe", Time: at}, `unknown state "maybe"`},
		{MonitorEvent{ID: "x", Kind: "drift", State: "breach", Time: at}, "names its feature and key"},
		{MonitorEvent{ID: "x", Kind: "gap", State: "breach", Time: at}, "names its agent"},
		{MonitorEvent{ID: "x", Kind: "stale", State: "breach", Feature: "f", Key: "k"}, "time required"},
	} {
		if _, err := l.RecordMonitor(ctx, bad.ev); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%+v: got %v, want %q", bad.ev, err, bad.want)
		}
	}
}
