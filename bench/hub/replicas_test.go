package hubbench

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub"
	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/promtext"
	"github.com/gemba-io/gemba/internal/testutil"
)

// BenchmarkIngestCluster is the scaling target of issue 17 (3 replicas on a 3-node cluster ≥ 2× the
// feature ingest rate of one replica on the same cluster): a 3-node cluster in this process, the
// agents' stream and every hub store at R3, and 1 or 3 replicas (in this process too: on 2 cores a
// replica per process would share the same CPU). A backlog is in the stream when the replicas start
// (all at once, on stores created before); the time from their start to every message acknowledged
// gives records/s. 1replica-embedded is BenchmarkIngest's round on the same backlog (one replica,
// its embedded server, R1), for the side-by-side of issue 17. Run with -benchtime 1x.
func BenchmarkIngestCluster(b *testing.B) {
	p := plant{agents: 10, lines: 5, machines: 4, fields: 10, skus: 50}
	const windows = 40
	b.Run("1replica-embedded", func(b *testing.B) {
		for b.Loop() {
			b.Logf("load average %s at the start", loadAvg())
			ingestRound(b, p, windows)
		}
	})
	for _, n := range []int{1, 3} {
		b.Run(fmt.Sprintf("%dreplicas-3nodes", n), func(b *testing.B) {
			for b.Loop() {
				clusterRound(b, p, windows, n)
			}
		})
	}
}

func clusterRound(b *testing.B, p plant, windows, replicas int) {
	b.StopTimer() // timed by hand: from the first publish to the last ack
	load0 := loadAvg()
	nodes := natstest.Cluster(b, 3)
	urls := natstest.URLs(nodes...)
	nc, js := connect(b, urls)
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	agentsStreamR3(b, js)
	dir := b.TempDir()
	var cfgs []*hub.Config
	var servers []string
	for _, nd := range nodes {
		servers = append(servers, fmt.Sprintf("%q", nd.URL()))
	}
	for i := range replicas {
		rdir := filepath.Join(dir, fmt.Sprintf("hub-%d", i))
		if err := os.MkdirAll(rdir, 0o755); err != nil {
			b.Fatal(err)
		}
		base := hubConfig(b, p, rdir, 0) // only for the graph file it writes
		y := fmt.Sprintf(hubYAML, rdir, "127.0.0.1:0", base.Graph.File)
		y = strings.Replace(y, `nats: {embedded: {listen: "127.0.0.1:0"}}`, "nats: {servers: ["+strings.Join(servers, ", ")+"], replicas: 3}", 1)
		y = strings.Replace(y, "id: bench-hub", fmt.Sprintf("id: bench-hub-%d", i), 1)
		cfg, err := hub.Parse([]byte(y), os.LookupEnv)
		if err != nil {
			b.Fatal(err)
		}
		cfgs = append(cfgs, cfg)
	}
	// Once, one at a time, to create the R3 streams and buckets (replicas creating the same ones at
	// once take far longer to start); then stopped, the backlog published, and every replica
	// started at once on stores that exist: the timed part is their drain.
	// The shared consumer is bound in the background once a replica is ready: waited for (with a
	// leader: until one is elected its info reads all zeros), or the timed replicas would create
	// it. A stopped replica's last pull request could also outlive it on the consumer's leader
	// and take part of the backlog until the ack wait: published once none is waiting.
	consumerReady := func(what string) {
		var last string
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) { // polling with a deadline
			// Each request bounded: the API has gone unanswered for minutes here (a consumer
			// without a leader does not answer its info requests).
			rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
			c, err := js.Consumer(rctx, "GEMBA", "gemba-hub")
			if err == nil {
				var info *jetstream.ConsumerInfo
				if info, err = c.Info(rctx); err == nil {
					if info.Cluster != nil && info.Cluster.Leader != "" && info.NumWaiting == 0 {
						rcancel()
						return
					}
					last = fmt.Sprintf("%d waiting pulls, cluster %+v", info.NumWaiting, info.Cluster)
				}
			}
			rcancel()
			if err != nil {
				last = err.Error()
			}
			if time.Now().After(deadline) {
				b.Fatalf("%s: not within 1 min; last: %s", what, last)
			}
		}
	}
	for i, cfg := range cfgs {
		h := startHub(b, cfg)
		if i == 0 {
			testutil.WaitFor(b, time.Minute, "the replica's consumer created", func() bool {
				rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
				defer rcancel()
				_, err := js.Consumer(rctx, "GEMBA", "gemba-hub")
				return err == nil
			})
		}
		h.halt(b)
	}
	consumerReady("the consumer with a leader and no pull request of the stopped replicas waiting")
	t0 := time.Now().Add(-time.Duration(windows+60) * time.Second).Truncate(time.Second)
	records := p.agents * windows * p.perWindow()
	publishAll(b, js, p, windows, t0)
	runtime.GC()
	start, cpu0 := time.Now(), cpuTime()
	hubs := make([]*running, len(cfgs))
	errs := make(chan error, len(cfgs))
	for i, cfg := range cfgs {
		go func() {
			var err error
			hubs[i], err = launch(cfg)
			errs <- err
		}()
	}
	for range cfgs {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	defer func() {
		t := time.Now()
		for _, h := range hubs {
			h.halt(b)
		}
		if d := time.Since(t); d > 10*time.Second {
			b.Logf("the replicas took %s to stop", d.Round(time.Millisecond))
		}
	}()
	// Drained: the consumer's ack floor reached the stream's last message (its pending count, read
	// right after the publishes on a cluster, could still say 0).
	si, err := js.Stream(ctx, "GEMBA")
	if err != nil {
		b.Fatal(err)
	}
	last := si.CachedInfo().State.LastSeq
	// Bounded at 3 min (a round takes 2–15 s): a replica that stops acknowledging is a failure to
	// show, with where the consumer and each replica stand, not a wait.
	var info *jetstream.ConsumerInfo
	for deadline := time.Now().Add(3 * time.Minute); ; time.Sleep(50 * time.Millisecond) { // polling with a deadline
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		if c, err := js.Consumer(rctx, "GEMBA", "gemba-hub"); err == nil {
			if i, err := c.Info(rctx); err == nil {
				info = i
				if i.AckFloor.Stream >= last && i.NumAckPending == 0 {
					rcancel()
					break
				}
			}
		}
		rcancel()
		if time.Now().After(deadline) {
			if info != nil {
				b.Logf("consumer (created %s): delivered stream seq %d, ack floor %d of %d, %d pending, %d ack pending, %d redelivered, %d waiting pulls; cluster %+v",
					info.Created.Format(time.RFC3339Nano), info.Delivered.Stream, info.AckFloor.Stream, last, info.NumPending, info.NumAckPending,
					info.NumRedelivered, info.NumWaiting, info.Cluster)
				if info.Cluster != nil {
					for _, r := range info.Cluster.Replicas {
						b.Logf("consumer replica %+v", *r)
					}
				}
			}
			for i, h := range hubs {
				if m, err := promtext.Scrape("http://" + h.h.Addr() + "/metrics"); err == nil {
					b.Logf("replica %d: %v messages, %v records, %v duplicates, %v redelivered, %v errors", i,
						m.Sum("gemba_hub_ingest_messages_total"), m.Sum("gemba_hub_ingest_records_total"),
						m.Sum("gemba_hub_ingest_duplicates_total"), m.Sum("gemba_hub_ingest_redelivered_total"),
						m.Sum("gemba_hub_ingest_errors_total"))
				}
			}
			b.Fatalf("the backlog not acknowledged within 3 min")
		}
	}
	el, cpu := time.Since(start), cpuTime()-cpu0
	var applied float64
	for _, h := range hubs {
		m, err := promtext.Scrape("http://" + h.h.Addr() + "/metrics")
		if err != nil {
			b.Fatal(err)
		}
		applied += m.Sum("gemba_hub_ingest_records_total", "stream", "features")
	}
	if applied < float64(records) {
		b.Errorf("the replicas applied %v records, want %d", applied, records)
	}
	b.Logf("load average %s at the start, %s at the end; %d replica(s) on 3 nodes: %d records in %d messages in %v: %.0f records/s, %.0f cpu-ns/record (the whole process: nodes and replicas)",
		load0, loadAvg(), replicas, records, p.agents*windows, el.Round(time.Millisecond), float64(records)/el.Seconds(), float64(cpu.Nanoseconds())/float64(records))
	b.ReportMetric(float64(records)/el.Seconds(), "records/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(records), "cpu-ns/record")
	b.StartTimer()
}

// agentsStreamR3 is agentsStream at R3 on a cluster (natstest.Cluster hands it over once it has
// placed a stream at R3).
func agentsStreamR3(tb testing.TB, js jetstream.JetStream) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "GEMBA",
		Subjects: []string{"gemba.*.*.samples", "gemba.*.*.features", "gemba.*.*.status"}, Retention: jetstream.LimitsPolicy,
		MaxAge: 7 * 24 * time.Hour, Duplicates: 20 * time.Minute, Storage: jetstream.FileStorage, Replicas: 3}); err != nil {
		tb.Fatalf("agents' stream at R3: %v", err)
	}
}

// launch starts a replica in this process and waits until it runs (startHub without the test's
// FailNow, for goroutines).
func launch(cfg *hub.Config) (*running, error) {
	ready := make(chan string, 1)
	h, err := hub.New(cfg, hub.Options{Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})), Ready: ready})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{h: h, stop: cancel, done: make(chan error, 1)}
	go func() { r.done <- h.Run(ctx) }()
	select {
	case <-ready:
		return r, nil
	case err := <-r.done:
		cancel()
		return nil, fmt.Errorf("hub stopped while starting: %v", err)
	case <-time.After(60 * time.Second):
		cancel()
		<-r.done
		return nil, fmt.Errorf("hub not ready within 60s")
	}
}
