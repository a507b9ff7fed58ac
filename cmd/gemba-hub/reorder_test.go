package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub/ingest/commerce"
	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/signal"
)

// --reorder 0 is no reorder window: an input read after later ones is applied late, as the hub
// applies it when it arrives. It used to mean the 1-minute default, silently.
//
// The agents' stream holds l1 running and l2 up to 10:09:30, then l2 alone to 10:10:10 (1024
// records: the replay's first read), then l1 stopping at 10:09:40, stored last. With the default
// window the stop is applied in event-time order and A is held at 10:09:40; with none it is applied
// after 10:10:10, and A is held then.
func TestBacktestReorderZeroIsNoWindow(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	createAgentStream(t, n.URL(), 1)
	ctx := context.Background()
	var evs []commerce.Event
	for d := 7; d >= 1; d-- {
		evs = append(evs, commerce.Sale{OrderID: fmt.Sprintf("o%d", d), Line: 1, SKU: "A", Site: "s1", Channel: "web",
			Quantity: 100, UnitPrice: 1, Currency: "EUR", Time: btAt(12, 0).AddDate(0, 0, -d)})
	}
	evs = append(evs, commerce.Snapshot{SnapshotID: "erp", SKU: "A", Site: "s1", OnHand: 300, Time: btAt(9, 40)})
	publishSales(t, js, []string{"web"}, evs)

	seq := uint64(0)
	publish := func(fs []signal.Feature) {
		t.Helper()
		b := signal.Batch{Header: signal.Header{Schema: signal.SchemaVersion, Agent: "a1", Site: "s1", Stream: signal.StreamFeatures,
			ConfigVersion: "c1", Incarnation: "i1", FirstSeq: seq + 1, LastSeq: seq + uint64(len(fs)), Count: len(fs),
			Oldest: fs[0].WindowEnd, Newest: fs[len(fs)-1].WindowEnd, Sent: fs[len(fs)-1].WindowEnd}, Features: fs}
		seq += uint64(len(fs))
		if _, err := js.Publish(ctx, signal.Subject("gemba", "s1", "a1", signal.StreamFeatures), signal.AppendBatch(nil, &b)); err != nil {
			t.Fatal(err)
		}
	}
	avail := func(sig string, end time.Time, v float64) signal.Feature {
		return signal.Feature{Signal: sig, Name: "availability", WindowStart: end.Add(-10 * time.Second), WindowEnd: end, Value: v, Count: 1}
	}
	// 255 messages of two windows of l1 and l2 (1020 records), the last window ending at 10:09:30.
	end := btAt(10, 9).Add(30*time.Second - 509*10*time.Second)
	for range 255 {
		var fs []signal.Feature
		for range 2 {
			fs = append(fs, avail("l1.pack.state", end, 0.9), avail("l2.pack.state", end, 0.9))
			end = end.Add(10 * time.Second)
		}
		publish(fs)
	}
	if want := btAt(10, 9).Add(40 * time.Second); !end.Equal(want) {
		t.Fatalf("script: next window ends at %s, want %s", end, want)
	}
	publish([]signal.Feature{avail("l2.pack.state", btAt(10, 9).Add(40*time.Second), 0.9), avail("l2.pack.state", btAt(10, 9).Add(50*time.Second), 0.9),
		avail("l2.pack.state", btAt(10, 10), 0.9), avail("l2.pack.state", btAt(10, 10).Add(10*time.Second), 0.9)})
	publish([]signal.Feature{avail("l1.pack.state", btAt(10, 9).Add(40*time.Second), 0)}) // 30 s late

	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "graph.yaml"), btGraph)
	rulesFile := writeFile(t, filepath.Join(dir, "rules.yaml"), `name: stop
hit_policy: first
rules:
  - name: hold-short
    when: lines.size() > 0 && !lines.exists(l, l.state == "running" && !l.stale) && inventory.days_of_cover < 7.0
    hold: {channels: ["*"], reason: line down and short}
`)
	cfg := writeFile(t, filepath.Join(dir, "hub.yaml"), fmt.Sprintf(`hub: {id: bt, data_dir: %s/data}
nats: {servers: [%q]}
commerce: {channels: [web]}
features:
  - {name: availability, signal: "*.pack.state", feature: availability, key: line, max_age: 1m}
graph: {file: graph.yaml}
decide: {bucket: 1h, timer: 5m}
guard: {max_discount: 20}
`, dir, n.URL()))
	from, to := btAt(10, 0).Format(time.RFC3339), btAt(10, 20).Format(time.RFC3339)
	for _, c := range []struct{ reorder, at, window string }{{"1m", "10:09:40", "1m0s"}, {"0", "10:10:10", "0s"}, {"0s", "10:10:10", "0s"}} {
		out, errOut, code := runBacktestCmd(t, "-c", cfg, "--rules", rulesFile, "--from", from, "--to", to, "--reorder", c.reorder)
		want := "2026-11-20T" + c.at + "Z  A                s1           web        hold-short"
		if code != 0 || !strings.Contains(out, want) || strings.Count(out, "hold-short  ") != 1 || !strings.Contains(out, "reorder window "+c.window+"\n") {
			t.Errorf("--reorder %s: exit %d; want A held once, at %s:\n%s%s", c.reorder, code, c.at, out, errOut)
		}
	}
	if _, errOut, code := runBacktestCmd(t, "-c", cfg, "--rules", rulesFile, "--from", from, "--to", to, "--reorder", "-1s"); code != 2 ||
		!strings.Contains(errOut, "--reorder") {
		t.Errorf("--reorder -1s: exit %d, %s; want exit 2 naming --reorder", code, errOut)
	}
}
