package hub

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
)

// The acceptance of monitoring end to end, through a running hub: an oven's temperature drifts (its
// last hour 10σ above the hour two hours earlier); the quality monitor raises a drift event on the
// decision log; then a promotion of what the line makes, by a rule that reads the temperature, is
// suppressed by the guard, and its record says which input drifted and why.
func TestDriftingSensorSuppressesPromotion(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"graph.yaml": `version: drift
sites: [{id: s1}]
lines: [{id: l1, site: s1}]
machines: [{id: l1.oven, line: l1}, {id: l1.pack, line: l1}]
signals: [{id: l1.oven.temp, machine: l1.oven}, {id: l1.pack.parts, machine: l1.pack}]
skus: [{id: A}]
channels: [{id: web}]
edges:
  - {kind: produces, from: l1, to: A}
  - {kind: sold_via, from: A, to: web}
`,
		"rules.yaml": `name: drift
hit_policy: first
rules:
  - name: promote-if-oven-ok
    when: has(features.units) && !features.units.stale && features.units.value > 0.0 && has(features.oven) && !features.oven.stale && features.oven.value < 500.0
    promote: {channels: [web], discount: 10, duration: 24h}
`,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := testConfig(t, fmt.Sprintf(`
hub: {id: t1, data_dir: "${DIR}", log: {level: error}}
http: {listen: "127.0.0.1:${HTTP_PORT}"}
nats: {embedded: {listen: "127.0.0.1:${NATS_PORT}"}}
commerce: {channels: [web]}
features:
  - {name: oven, signal: "*.oven.temp", feature: mean, key: line, max_age: 2h}
  - {name: units, signal: "*.pack.parts", feature: units, key: sku, max_age: 1h}
graph: {file: %[1]s/graph.yaml}
decide: {rules: %[1]s/rules.yaml, timer: 1h}
guard: {max_discount: 20}
monitor: {window: 1h, reference_lag: 2h, slices: 4, every: 50ms, max_ahead: 0s}
`, dir))
	r := start(t, cfg)
	var nc *nats.Conn
	testutil.WaitFor(t, 20*time.Second, "the embedded NATS server", func() bool {
		c, err := nats.Connect("nats://" + cfg.NATS.Embedded.Listen)
		if err == nil {
			nc = c
		}
		return err == nil
	})
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "GEMBA", Subjects: []string{"gemba.*.*.features", "gemba.*.*.status"}}); err != nil {
		t.Fatal(err)
	}
	var seq uint64
	send := func(fs ...signal.Feature) {
		seq++
		b := &signal.Batch{Header: signal.Header{Schema: signal.SchemaVersion, Agent: "gw1", Site: "s1", Incarnation: "i1",
			Stream: signal.StreamFeatures, FirstSeq: seq, LastSeq: seq, Count: len(fs), Sent: time.Now().UTC()}, Features: fs}
		m := nats.NewMsg("gemba.s1.gw1.features")
		m.Data = signal.AppendBatch(nil, b)
		m.Header.Set(jetstream.MsgIDHeader, b.MsgID())
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	// A minute's mean per message: the reference hour (three to two hours ago) around 180, the last
	// hour around 190, both with σ 1.
	now := time.Now().UTC().Truncate(time.Minute)
	rng := rand.New(rand.NewPCG(7, 7))
	for _, p := range []struct {
		from time.Duration
		mean float64
	}{{-3 * time.Hour, 180}, {-time.Hour, 190}} {
		for i := range 60 {
			end := now.Add(p.from + time.Duration(i+1)*time.Minute)
			send(signal.Feature{Signal: "l1.oven.temp", Name: "mean", WindowStart: end.Add(-time.Minute), WindowEnd: end,
				Value: p.mean + rng.NormFloat64(), Count: 60})
		}
	}
	testutil.WaitFor(t, 30*time.Second, "the decision room open", func() bool { return r.h.dec.Load() != nil })
	testutil.WaitFor(t, 30*time.Second, "the drift event on the decision log", func() bool {
		evs, err := r.h.dec.Load().log.MonitorEvents(ctx, "oven", "l1", 10)
		if err != nil {
			return false
		}
		for _, e := range evs {
			if e.Kind == "drift" && e.State == "breach" {
				return true
			}
		}
		return false
	})
	// Now the line makes A: the rule matches, and reads a drifting input.
	send(signal.Feature{Signal: "l1.pack.parts", Name: "units", WindowStart: now.Add(-time.Minute), WindowEnd: now,
		Value: 40, Count: 40, Labels: signal.Labels{{Key: "sku", Value: "A"}}})
	var rec audit.Record
	testutil.WaitFor(t, 30*time.Second, "A's promotion decided", func() bool {
		recs, err := r.h.dec.Load().log.Recent(ctx, audit.Filter{SKU: "A"})
		if err != nil || len(recs) == 0 {
			return false
		}
		rec = recs[0]
		return true
	})
	if rec.Outcome != audit.OutcomeSuppressed || rec.Verdict == nil || !strings.Contains(rec.Verdict.Reason, "feature:oven@l1 (drifting)") {
		t.Fatalf("A's decision: outcome %s, verdict %+v", rec.Outcome, rec.Verdict)
	}
	var oven *audit.Input
	for i := range rec.Inputs {
		if rec.Inputs[i].Name == "oven" {
			oven = &rec.Inputs[i]
		}
	}
	if oven == nil || !oven.Drifting || len(oven.Quality) == 0 {
		t.Fatalf("the record's oven input does not say it drifted: %+v", rec.Inputs)
	}
	var why strings.Builder
	audit.Explain(&why, []audit.Record{rec}, nil)
	if !strings.Contains(why.String(), "drifting") {
		t.Errorf("the why does not say the oven drifted:\n%s", why.String())
	}
}
