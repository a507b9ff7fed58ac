package mqtt

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/gemba-io/gemba/buffer"
	"github.com/gemba-io/gemba/collectors"
	"github.com/gemba-io/gemba/signal"
)

// benchPayload is a ~100-byte telemetry message.
var benchPayload = []byte(`{"ts":1700000000123,"temp":21.53,"pressure":101.325,"rpm":1450,"running":true,"sku":"SKU-00042"}`)

// BenchmarkMosquittoSideBySide compares, in one run against one mosquitto on loopback (default
// settings: max_inflight_messages 20), how fast 100k QoS 1 messages queued for a persistent session
// are consumed by
//   - bare: a paho subscriber that only counts (auto-ack), and
//   - collector: the collector mapping each message to 4 samples (+ time field) and acknowledging
//     it only after its samples are in the durable buffer (buffer.Store with the agent's defaults,
//     sync: batch; encoded into chunks as the agent's writer does).
//
// Each side runs in its own child process, so its CPU (user+system) and peak RSS are its own; the
// wall time runs from process start to the last message. Rounds alternate the order to spread the
// noise of a shared machine; medians are reported. -short uses 20k messages.
func BenchmarkMosquittoSideBySide(b *testing.B) {
	n, rounds := 100_000, 3
	if testing.Short() {
		n, rounds = 20_000, 1
	}
	mq := startMosquittoConf(b, "")
	var bare, coll []benchRun
	for i := 0; i < b.N; i++ {
		for r := 0; r < rounds; r++ {
			if r%2 == 0 {
				bare = append(bare, benchChild(b, mq, "bare", i*rounds+r, n))
				coll = append(coll, benchChild(b, mq, "collector", i*rounds+r, n))
			} else {
				coll = append(coll, benchChild(b, mq, "collector", i*rounds+r, n))
				bare = append(bare, benchChild(b, mq, "bare", i*rounds+r, n))
			}
		}
	}
	mb, mc := median(bare), median(coll)
	b.ReportMetric(mb.rate, "bare-msgs/s")
	b.ReportMetric(mc.rate, "collector-msgs/s")
	b.ReportMetric(mc.rate/mb.rate, "throughput-ratio")
	b.ReportMetric(mb.cpuPerMsg, "bare-cpu-us/msg")
	b.ReportMetric(mc.cpuPerMsg, "collector-cpu-us/msg")
	b.ReportMetric(mb.rssMiB, "bare-maxrss-MiB")
	b.ReportMetric(mc.rssMiB, "collector-maxrss-MiB")
	for i := range bare {
		b.Logf("round %d: bare %.0f msgs/s %.2f us/msg %.1f MiB | collector %.0f msgs/s %.2f us/msg %.1f MiB",
			i, bare[i].rate, bare[i].cpuPerMsg, bare[i].rssMiB, coll[i].rate, coll[i].cpuPerMsg, coll[i].rssMiB)
	}
}

type benchRun struct{ rate, cpuPerMsg, rssMiB float64 }

// median takes each figure's median independently.
func median(rs []benchRun) benchRun {
	pick := func(f func(benchRun) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	return benchRun{
		rate:      pick(func(r benchRun) float64 { return r.rate }),
		cpuPerMsg: pick(func(r benchRun) float64 { return r.cpuPerMsg }),
		rssMiB:    pick(func(r benchRun) float64 { return r.rssMiB }),
	}
}

// benchChild prepares a persistent session with n queued messages and times a child consuming them.
func benchChild(b *testing.B, mq *mosquitto, kind string, round, n int) benchRun {
	b.Helper()
	id := fmt.Sprintf("bench-%s-%d", kind, round)
	topic := "bench/" + id
	cl := paho.NewClient(paho.NewClientOptions().AddBroker(mq.url()).SetClientID(id).SetCleanSession(false))
	if tok := cl.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		b.Fatal(tok.Error())
	}
	if tok := cl.Subscribe(topic, 1, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		b.Fatal(tok.Error())
	}
	cl.Disconnect(100)
	preload(b, mq.url(), topic, n)

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=bench-"+kind, "GEMBA_MQTT_BROKER="+mq.url(), "GEMBA_MQTT_ID="+id,
		"GEMBA_MQTT_TOPIC="+topic, "GEMBA_MQTT_N="+strconv.Itoa(n), "GEMBA_MQTT_OUT="+filepath.Join(b.TempDir(), "samples.jsonl"))
	cmd.Stderr = os.Stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		b.Fatalf("%s child: %v", kind, err)
	}
	wall := time.Since(start)
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	cpu := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return benchRun{
		rate:      float64(n) / wall.Seconds(),
		cpuPerMsg: float64(cpu.Microseconds()) / float64(n),
		rssMiB:    float64(ru.Maxrss) / 1024,
	}
}

// preload publishes n messages for an offline persistent session.
func preload(b *testing.B, url, topic string, n int) {
	b.Helper()
	pub := newPublisher(b, url, "bench-pub")
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

// runBenchBare is the bare child: count GEMBA_MQTT_N messages with paho's defaults, then exit.
func runBenchBare() int {
	n, _ := strconv.ParseInt(os.Getenv("GEMBA_MQTT_N"), 10, 64)
	var count atomic.Int64
	done := make(chan struct{})
	cl := paho.NewClient(paho.NewClientOptions().AddBroker(os.Getenv("GEMBA_MQTT_BROKER")).
		SetClientID(os.Getenv("GEMBA_MQTT_ID")).SetCleanSession(false).
		SetDefaultPublishHandler(func(_ paho.Client, _ paho.Message) {
			if count.Add(1) == n {
				close(done)
			}
		}))
	if tok := cl.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		fmt.Fprintln(os.Stderr, "bare connect:", tok.Error())
		return 1
	}
	select {
	case <-done:
		return 0
	case <-time.After(5 * time.Minute):
		fmt.Fprintln(os.Stderr, "bare: timeout at", count.Load())
		return 1
	}
}

// bufferEmitter appends samples to the Badger buffer as the agent's writer does: JSON records in
// chunks of at most 256 KiB, one Append per Emit.
type bufferEmitter struct {
	st  *buffer.Store
	enc []byte
}

func (e *bufferEmitter) Emit(ctx context.Context, samples []signal.Sample) error {
	var chunks [][]byte
	var c signal.Chunk
	cut := func() {
		e.enc = append(e.enc, ']')
		c.Stream, c.Records = signal.StreamSamples, e.enc
		chunks = append(chunks, signal.AppendChunk(make([]byte, 0, len(e.enc)+32), &c))
		c, e.enc = signal.Chunk{}, e.enc[:0]
	}
	for i := range samples {
		if c.Count == 0 {
			e.enc = append(e.enc[:0], '[')
			c.Oldest, c.Newest = samples[i].Time, samples[i].Time
		} else {
			e.enc = append(e.enc, ',')
		}
		e.enc = signal.AppendSampleJSON(e.enc, &samples[i])
		c.Newest = samples[i].Time
		if c.Count++; len(e.enc) >= 256<<10 {
			cut()
		}
	}
	if c.Count > 0 {
		cut()
	}
	_, err := e.st.Append(ctx, signal.StreamSamples, chunks...)
	return err
}

// countingEmitter counts samples on top of the buffer emitter.
type countingEmitter struct {
	bufferEmitter
	samples atomic.Int64
	target  int64
	done    chan struct{}
}

func (e *countingEmitter) Emit(ctx context.Context, s []signal.Sample) error {
	if err := e.bufferEmitter.Emit(ctx, s); err != nil {
		return err
	}
	if e.samples.Add(int64(len(s))) >= e.target && e.target > 0 {
		select {
		case <-e.done:
		default:
			close(e.done)
		}
	}
	return nil
}

// runBenchCollector is the collector child: the collector with a durable file emitter until
// every message's 4 samples are in the buffer.
func runBenchCollector() int {
	n, _ := strconv.ParseInt(os.Getenv("GEMBA_MQTT_N"), 10, 64)
	bc := buffer.DefaultConfig()
	bc.Dir = os.Getenv("GEMBA_MQTT_OUT") + ".buffer"
	st, err := buffer.Open(bc, buffer.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer st.Close()
	em := &countingEmitter{bufferEmitter: bufferEmitter{st: st}, target: 4 * n, done: make(chan struct{})}
	cfg := NewConfig()
	cfg.Broker = os.Getenv("GEMBA_MQTT_BROKER")
	cfg.ClientID = os.Getenv("GEMBA_MQTT_ID")
	cfg.Subscriptions = []Subscription{{Topic: os.Getenv("GEMBA_MQTT_TOPIC"), Format: FormatJSON, Signal: "line1.{field}",
		Fields:    []Field{{Path: "temp"}, {Path: "pressure"}, {Path: "rpm"}, {Path: "running"}},
		TimeField: "ts", TimeFormat: "unix_ms"}}
	c, err := New("bench", cfg, collectors.Deps{Agent: "a", DataDir: filepath.Dir(os.Getenv("GEMBA_MQTT_OUT")),
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = c.Run(ctx, em) }()
	select {
	case <-em.done:
		return 0
	case <-time.After(5 * time.Minute):
		fmt.Fprintln(os.Stderr, "collector: timeout at", em.samples.Load())
		return 1
	}
}
