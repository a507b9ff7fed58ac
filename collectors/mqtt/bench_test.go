package mqtt

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/gemba-io/gemba/collectors"
	"github.com/gemba-io/gemba/signal"
)

// benchPayload is a ~100-byte telemetry message.
var benchPayload = []byte(`{"ts":1700000000123,"temp":21.53,"pressure":101.325,"rpm":1450,"running":true,"sku":"SKU-00042"}`)

// BenchmarkMosquittoQoS1 compares, in one run against one mosquitto on loopback, how fast QoS 1
// messages queued for a persistent session are consumed by (a) a bare paho subscriber that only
// counts (auto-ack) and (b) the collector mapping each message to 4 samples and acknowledging it
// after a durable Emit (a file emitter that fsyncs every batch). One op is one message; run with
// -benchtime=100000x. cpu-us/msg is this process's user+system CPU over the consume phase only
// (the publisher runs before it); mosquitto's CPU is not included.
func BenchmarkMosquittoQoS1(b *testing.B) {
	for _, inflight := range []int{20, 1000} {
		mq := startMosquittoConf(b, fmt.Sprintf("max_inflight_messages %d\n", inflight))
		b.Run(fmt.Sprintf("inflight=%d/bare-paho", inflight), func(b *testing.B) { benchBare(b, mq) })
		b.Run(fmt.Sprintf("inflight=%d/collector-durable", inflight), func(b *testing.B) { benchCollector(b, mq) })
		mq.kill()
	}
}

// preload publishes n messages for an offline persistent session.
func preload(b *testing.B, url, topic string, n int) {
	b.Helper()
	pub := newPublisher(b, url, "bench-pub-"+strconv.Itoa(n))
	window := make(chan paho.Token, 2000)
	errs := make(chan error, 1)
	go func() {
		for tok := range window {
			if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
				select {
				case errs <- fmt.Errorf("publish: %v", tok.Error()):
				default:
				}
			}
		}
		close(errs)
	}()
	for i := 0; i < n; i++ {
		window <- pub.Publish(topic, 1, false, benchPayload)
	}
	close(window)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	pub.Disconnect(100)
}

type cpuClock struct {
	wall time.Time
	cpu  time.Duration
}

func cpuNow() cpuClock {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return cpuClock{wall: time.Now(), cpu: time.Duration(ru.Utime.Nano() + ru.Stime.Nano())}
}

func report(b *testing.B, start cpuClock, n int) {
	end := cpuNow()
	wall := end.wall.Sub(start.wall)
	b.ReportMetric(float64(n)/wall.Seconds(), "msgs/s")
	b.ReportMetric(float64((end.cpu-start.cpu).Microseconds())/float64(n), "cpu-us/msg")
	b.ReportMetric(rssMiB(), "rss-MiB")
}

// rssMiB is the current resident set of this process (the benchmark binary holds both sides' code).
func rssMiB() float64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
			return float64(kb) / 1024
		}
	}
	return 0
}

func benchBare(b *testing.B, mq *mosquitto) {
	n := b.N
	id := "bench-bare-" + strconv.Itoa(n)
	topic := "bench/bare/" + strconv.Itoa(n)
	var count atomic.Int64
	opts := func() *paho.ClientOptions {
		return paho.NewClientOptions().AddBroker(mq.url()).SetClientID(id).SetCleanSession(false).
			SetDefaultPublishHandler(func(_ paho.Client, _ paho.Message) { count.Add(1) })
	}
	cl := paho.NewClient(opts())
	if tok := cl.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		b.Fatal(tok.Error())
	}
	if tok := cl.Subscribe(topic, 1, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		b.Fatal(tok.Error())
	}
	cl.Disconnect(100)
	preload(b, mq.url(), topic, n)

	b.ResetTimer()
	start := cpuNow()
	cl = paho.NewClient(opts())
	if tok := cl.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		b.Fatal(tok.Error())
	}
	waitFor(b, 5*time.Minute, "all messages", func() bool { return count.Load() >= int64(n) })
	b.StopTimer()
	report(b, start, n)
	cl.Disconnect(100)
}

// countingEmitter counts samples on top of a durable file emitter.
type countingEmitter struct {
	*fileEmitter
	samples atomic.Int64
	calls   atomic.Int64
}

func (e *countingEmitter) Emit(ctx context.Context, s []signal.Sample) error {
	if err := e.fileEmitter.Emit(ctx, s); err != nil {
		return err
	}
	e.samples.Add(int64(len(s)))
	e.calls.Add(1)
	return nil
}

func benchCollector(b *testing.B, mq *mosquitto) {
	n := b.N
	dir := b.TempDir()
	topic := "bench/collector/" + strconv.Itoa(n)
	cfg := testConfig(mq.url(), Subscription{Topic: topic, Format: FormatJSON, Signal: "line1.{field}",
		Fields:    []Field{{Path: "temp"}, {Path: "pressure"}, {Path: "rpm"}, {Path: "running"}},
		TimeField: "ts", TimeFormat: "unix_ms"})
	cfg.ClientID = "bench-collector-" + strconv.Itoa(n)
	fe, err := openFileEmitter(filepath.Join(dir, "samples.jsonl"))
	if err != nil {
		b.Fatal(err)
	}
	defer fe.Close()
	em := &countingEmitter{fileEmitter: fe}
	run := func() (*Collector, func()) {
		c, err := New("bench", cfg, collectors.Deps{Agent: "a", DataDir: dir, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx, em) }()
		return c, func() {
			cancel()
			if err := <-done; err != nil {
				b.Error(err)
			}
		}
	}
	c, stop := run()
	waitFor(b, 10*time.Second, "collector subscribed", connectedState(c))
	stop()
	preload(b, mq.url(), topic, n)

	b.ResetTimer()
	start := cpuNow()
	_, stop = run()
	waitFor(b, 5*time.Minute, "all samples durable", func() bool { return em.samples.Load() >= 4*int64(n) })
	b.StopTimer()
	report(b, start, n)
	b.ReportMetric(float64(n)/float64(em.calls.Load()), "msgs/emit")
	stop()
}
