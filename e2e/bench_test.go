package e2e

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/buffer"
	gsig "github.com/gemba-io/gemba/signal"
	"github.com/gemba-io/gemba/uplink"
)

// Benchmark workload: 100-byte samples, 100 per buffer record (one NATS message of ~10 KiB).
const (
	benchChunk   = 100
	benchRecords = 3000 // 300,000 samples per backlog run
)

func benchSamples(first, n int, ts time.Time) []byte {
	ss := make([]gsig.Sample, n)
	for i := range ss {
		// ~100 bytes of JSON each: {"sig":"line1.press.temperature","ts":"...","i":N,"src":"..."}
		ss[i] = gsig.Sample{Signal: "line1.press.temperature", Time: ts, Value: gsig.Int(int64(first + i)), Source: "press/ns=2;s=T"}
	}
	return gsig.AppendSamplesJSON(nil, ss)
}

func benchChunkBytes(first, n int, ts time.Time) []byte {
	return gsig.AppendChunk(nil, &gsig.Chunk{Stream: gsig.StreamSamples, ConfigVersion: "bench", Count: n,
		Oldest: ts, Newest: ts, Records: benchSamples(first, n, ts)})
}

func resetStream(b *testing.B, js jetstream.JetStream) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := js.DeleteStream(ctx, "GEMBA"); err != nil && err != jetstream.ErrStreamNotFound {
		b.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "GEMBA", Subjects: []string{"gemba.*.*.samples", "gemba.*.*.features", "gemba.*.*.status"},
		Duplicates: 20 * time.Minute, Storage: jetstream.FileStorage}); err != nil {
		b.Fatal(err)
	}
}

func benchUplinkConfig(url string) uplink.Config {
	c := uplink.DefaultConfig()
	c.NATS.Servers = []string{url}
	c.Heartbeat = 0
	if v, err := strconv.Atoi(os.Getenv("GEMBA_BENCH_INFLIGHT")); err == nil {
		c.MaxInflight = v // for sizing the default
	}
	if v, err := strconv.Atoi(os.Getenv("GEMBA_BENCH_READ_BATCH")); err == nil {
		c.ReadBatch = v
	}
	return c
}

// BenchmarkSideBySide runs against one embedded JetStream server (file storage):
//   - backlog_vs_raw: the ceiling (js.PublishMsgAsync of pre-encoded envelopes with Msg-Ids, no
//     buffer) against the uplink replaying a full Badger or in-memory buffer (records of 100
//     samples, 300,000 samples per run), interleaved, 5 rounds, medians;
//   - live_10k: an agent process capturing 10,000 samples/s through the Badger buffer and the
//     uplink; latency is capture -> delivered from the stream, CPU is the agent process's.
func BenchmarkSideBySide(b *testing.B) {
	dir := b.TempDir()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true})
	if err != nil {
		b.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		b.Fatal("nats not ready")
	}
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	url := ns.ClientURL()
	nc, err := nats.Connect(url)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)

	// Raw ceiling and uplink backlog replay, interleaved round by round so that load from other
	// processes hits all three alike; medians and ratios to the raw ceiling are reported.
	b.Run("backlog_vs_raw", func(b *testing.B) {
		const rounds = 5
		for b.Loop() {
			var raw, badger, memory []time.Duration
			for range rounds {
				raw = append(raw, rawPublish(b, url, js))
				badger = append(badger, forwardBacklog(b, url, js, openBadger(b)))
				memory = append(memory, forwardBacklog(b, url, js, openMemory()))
			}
			rate := func(ds []time.Duration) float64 {
				slices.Sort(ds)
				return benchRecords * benchChunk / ds[len(ds)/2].Seconds()
			}
			r, bd, m := rate(raw), rate(badger), rate(memory)
			b.ReportMetric(r, "raw_samples/s")
			b.ReportMetric(bd, "badger_samples/s")
			b.ReportMetric(m, "memory_samples/s")
			b.ReportMetric(bd/r, "badger/raw")
			b.ReportMetric(m/r, "memory/raw")
		}
	})

	b.Run("live_10k", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			resetStream(b, js)
			idle := runLiveAgent(b, url, 0, nil)
			resetStream(b, js)
			b.StartTimer()
			lat := &latencies{}
			live := runLiveAgent(b, url, 10000, lat)
			b.StopTimer()
			lat.mu.Lock()
			defer lat.mu.Unlock()
			l := lat.d
			if len(l) == 0 {
				b.Fatal("no samples delivered")
			}
			slices.Sort(l)
			q := func(p float64) float64 { return float64(l[int(p*float64(len(l)-1))].Microseconds()) / 1000 }
			b.ReportMetric(q(0.5), "p50_ms")
			b.ReportMetric(q(0.99), "p99_ms")
			b.ReportMetric(float64(l[len(l)-1].Microseconds())/1000, "max_ms")
			b.ReportMetric(float64(live-idle)/float64(time.Microsecond)/float64(len(l)), "cpu_us/sample")
			b.ReportMetric(float64(live)/float64(time.Microsecond)/float64(len(l)), "cpu_us/sample_gross")
			b.ReportMetric(float64(len(l)), "samples")
			b.StartTimer()
		}
	})
}

// rawPublish is the ceiling: pre-encoded envelopes with Msg-Ids published with
// js.PublishMsgAsync, no buffer, no window (the pending limit is above the message count).
func rawPublish(b *testing.B, url string, js jetstream.JetStream) time.Duration {
	b.Helper()
	old := time.Now().Add(-time.Hour)
	msgs := make([]*nats.Msg, benchRecords)
	for i := range msgs {
		h := gsig.Header{Schema: gsig.SchemaVersion, Agent: "gw1", Site: "plant1", Incarnation: "bench", Stream: gsig.StreamSamples, FirstSeq: uint64(i + 1), LastSeq: uint64(i + 1), Count: benchChunk, Oldest: old, Newest: old, Sent: time.Now()}
		m := nats.NewMsg("gemba.plant1.gw1.samples")
		m.Data = gsig.AppendEnvelope(nil, &h, benchSamples(i*benchChunk, benchChunk, old))
		m.Header.Set(jetstream.MsgIDHeader, gsig.MsgID("gw1", gsig.StreamSamples, "bench", uint64(i+1)))
		msgs[i] = m
	}
	pnc, err := nats.Connect(url)
	if err != nil {
		b.Fatal(err)
	}
	defer pnc.Close()
	pjs, _ := jetstream.New(pnc, jetstream.WithPublishAsyncMaxPending(2*len(msgs)))
	resetStream(b, js)
	start := time.Now()
	for _, m := range msgs {
		if _, err := pjs.PublishMsgAsync(m); err != nil {
			b.Fatal(err)
		}
	}
	<-pjs.PublishAsyncComplete()
	return time.Since(start)
}

func openBadger(b *testing.B) buffer.Buffer {
	c := buffer.DefaultConfig()
	c.Dir, c.MaxBytes = b.TempDir(), 1<<30
	s, err := buffer.Open(c, buffer.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

func openMemory() buffer.Buffer {
	c := buffer.DefaultConfig()
	c.MaxBytes = 1 << 30
	return buffer.NewMemory(c)
}

// forwardBacklog fills buf with benchRecords historical records (untimed), then times the uplink
// from Run until the buffer has every record acked.
func forwardBacklog(b *testing.B, url string, js jetstream.JetStream, buf buffer.Buffer) time.Duration {
	b.Helper()
	defer buf.Close()
	resetStream(b, js)
	old := time.Now().Add(-time.Hour)
	recs := make([][]byte, 0, 100)
	for i := 0; i < benchRecords; i += 100 {
		recs = recs[:0]
		for j := i; j < i+100; j++ {
			recs = append(recs, benchChunkBytes(j*benchChunk, benchChunk, old))
		}
		if _, err := buf.Append(context.Background(), gsig.StreamSamples, recs...); err != nil {
			b.Fatal(err)
		}
	}
	u, err := uplink.New(benchUplinkConfig(url), uplink.Identity{Agent: "gw1", Site: "plant1"}, buf, uplink.Options{})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- u.Run(ctx) }()
	for buf.Stats().Streams[gsig.StreamSamples].Acked < benchRecords {
		time.Sleep(time.Millisecond) // polling for completion
	}
	elapsed := time.Since(start)
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	return elapsed
}

const liveSeconds = 4

type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.d)
}

// runLiveAgent runs an agent process capturing rate samples/s for liveSeconds and returns its CPU
// time; with lat set it also collects each sample's capture -> delivered-from-stream latency.
func runLiveAgent(b *testing.B, url string, rate int, lat *latencies) time.Duration {
	b.Helper()
	if lat != nil {
		nc, err := nats.Connect(url)
		if err != nil {
			b.Fatal(err)
		}
		defer nc.Close()
		// An ordered push consumer: messages arrive once JetStream has stored them.
		js, _ := jetstream.New(nc)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cons, err := js.OrderedConsumer(ctx, "GEMBA", jetstream.OrderedConsumerConfig{})
		if err != nil {
			b.Fatal(err)
		}
		cc, err := cons.Consume(func(m jetstream.Msg) {
			now := time.Now()
			bt, err := gsig.DecodeBatch(m.Data())
			if err != nil {
				return
			}
			lat.mu.Lock()
			for _, s := range bt.Samples {
				lat.d = append(lat.d, now.Sub(s.Time))
			}
			lat.mu.Unlock()
		})
		if err != nil {
			b.Fatal(err)
		}
		defer cc.Stop()
	}
	p := startAgent(b, b.TempDir(), url, "live", "live",
		"GEMBA_E2E_RATE="+strconv.Itoa(rate), "GEMBA_E2E_SECONDS="+strconv.Itoa(liveSeconds))
	p.waitExit(b, 60*time.Second)
	if lat != nil {
		want := rate * liveSeconds
		deadline := time.Now().Add(10 * time.Second)
		for lat.len() < want && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond) // the consumer catching up
		}
		if n := lat.len(); n < want*99/100 {
			fmt.Fprintf(os.Stderr, "live: %d of %d samples delivered (stream holds %d messages)\n", n, want, streamMsgs(url))
		}
	}
	for {
		select {
		case line := <-p.lines:
			for _, kv := range strings.Fields(strings.TrimPrefix(line, "STAT ")) {
				k, v, _ := strings.Cut(kv, "=")
				if us, err := strconv.Atoi(v); err == nil && strings.HasPrefix(k, "append_") && lat != nil {
					b.ReportMetric(float64(us)/1000, strings.TrimSuffix(k, "_us")+"_ms")
				}
			}
			continue
		default:
		}
		break
	}
	st := p.cmd.ProcessState
	return st.UserTime() + st.SystemTime()
}
