package hubbench

import (
	"context"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub/state/features"
	"github.com/gemba-io/gemba/internal/promtext"
	"github.com/gemba-io/gemba/internal/testutil"
)

// offline runs the store the hub will use (<data_dir>/nats) as a bare server, for fixtures written
// before the hub starts: what agents published while it was down.
func offline(tb testing.TB, dir string, fill func(js jetstream.JetStream)) {
	tb.Helper()
	srv, err := server.NewServer(&server.Options{ServerName: "bench-hub", Host: "127.0.0.1", Port: -1, JetStream: true,
		StoreDir: filepath.Join(dir, "nats"), NoLog: true, NoSigs: true, MaxPayload: 8 << 20})
	if err != nil {
		tb.Fatal(err)
	}
	go srv.Start()
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	if !srv.ReadyForConnections(30 * time.Second) {
		tb.Fatal("fixture server not ready")
	}
	nc, js := connect(tb, srv.ClientURL())
	defer nc.Close()
	fill(js)
}

// publishAll publishes the messages asynchronously and waits for every PubAck.
func publishAll(tb testing.TB, js jetstream.JetStream, p plant, windows int, t0 time.Time) {
	tb.Helper()
	for w := 1; w <= windows; w++ {
		for a := range p.agents {
			if _, err := js.PublishMsgAsync(msg(p.batch(a, w, t0, time.Second, t0.Add(time.Duration(w)*time.Second)))); err != nil {
				tb.Fatal(err)
			}
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(5 * time.Minute):
		tb.Fatal("fixture publishes not acknowledged")
	}
}

// BenchmarkIngest is the throughput target (≥ 200,000 feature records/s per replica, dedup on): a
// backlog of agents' feature messages is in the stream when one hub replica (the real wiring, its
// embedded NATS server in this process) starts; the time from ready to every message acknowledged
// (acked only once deduplicated, applied, flushed to the KV bucket and, for units, moved into the
// inventory) gives records/s. Variants differ in how many agents (and so distinct keys) share the load:
// few agents replaying long backlogs, or many agents with a few windows each. Run with -benchtime 1x.
func BenchmarkIngest(b *testing.B) {
	for _, v := range []struct {
		name    string
		p       plant
		windows int
	}{
		{"10agents-60windows", defaultPlant, 60},
		{"100agents-6windows", plant{agents: 100, lines: 5, machines: 4, fields: 10, skus: 50}, 6},
	} {
		b.Run(v.name, func(b *testing.B) {
			for b.Loop() {
				ingestRound(b, v.p, v.windows)
			}
		})
	}
}

func ingestRound(b *testing.B, p plant, windows int) {
	dir := b.TempDir()
	cfg := hubConfig(b, p, dir, testutil.FreePort(b))
	t0 := time.Now().Add(-time.Duration(windows+60) * time.Second).Truncate(time.Second)
	offline(b, dir, func(js jetstream.JetStream) {
		agentsStream(b, js)
		publishAll(b, js, p, windows, t0)
	})
	records := p.agents * windows * p.perWindow()

	b.StopTimer() // the timed part is the hub's drain, measured by hand (the hub starts in between)
	runtime.GC()
	resetPeak()
	h := startHub(b, cfg)
	start, cpu0 := time.Now(), cpuTime()
	nc, js := connect(b, "nats://"+cfg.NATS.Embedded.Listen)
	drained(b, js, 10*time.Minute)
	el, cpu := time.Since(start), cpuTime()-cpu0
	_, peak := memStatus("self")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(records), "cpu-ns/record")
	b.ReportMetric(peak, "peak-rss-MiB")
	// Also logged: a run that fails its checks below prints no metrics, and the figures matter then too.
	b.Logf("%d records in %d messages: %.0f records/s, %.0f cpu-ns/record, peak RSS %.0f MiB", records, p.agents*windows,
		float64(records)/el.Seconds(), float64(cpu.Nanoseconds())/float64(records), peak)
	b.ReportMetric(float64(records)/el.Seconds(), "records/s")
	b.ReportMetric(float64(p.agents*windows)/el.Seconds(), "msgs/s")
	b.ReportMetric(float64(el.Nanoseconds())/float64(records), "ns/record")

	// Everything landed: the last window of every key, the applied count, the units in the inventory.
	m, err := promtext.Scrape("http://" + h.h.Addr() + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	// Each record feeds one definition, the mean of each press f0 two (mean and press_f0); units and
	// availability share keys across agents (SKU) or not (line); same-window units of one SKU
	// from two agents do not overwrite each other.
	if got := m.Sum("gemba_hub_ingest_records_total", "stream", "features"); got != float64(records) {
		b.Errorf("ingested %v records, want %d", got, records)
	}
	if d := m.Sum("gemba_hub_ingest_duplicates_total"); d != 0 {
		b.Errorf("%v duplicates in a fixture without any", d)
	}
	b.ReportMetric(m.Sum("gemba_hub_features_log_messages_total")/float64(records), "log-messages/record")
	// What another replica loads from the feature log.
	st, err := features.Open(context.Background(), js, features.Config{Bucket: "GEMBA_FEATURES", Definitions: cfg.Features}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	last := p.batch(p.agents-1, windows, t0, time.Second, t0)
	for _, f := range last.Features[:3] {
		v, ok := st.Get(f.Name, f.Signal) // mean, min, max
		if !ok {
			b.Fatalf("feature %s of %s not stored", f.Name, f.Signal)
		}
		if !v.WindowEnd.Equal(f.WindowEnd) || v.Value.Value != f.Value || v.Lineage.FirstSeq != uint64(windows) {
			b.Errorf("%s %s: stored %+v, want window %s value %v", f.Name, f.Signal, v, f.WindowEnd, f.Value)
		}
	}
	st.Close()
	nc.Close()
	h.halt(b)
	b.StartTimer()
}
