package mqtt

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/gemba-io/gemba/buffer"
	"github.com/gemba-io/gemba/collectors"
	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(runChild())
	}
	goleak.VerifyTestMain(m)
}

// mochiBroker is an embedded broker on a fixed port that can be restarted.
type mochiBroker struct {
	t    testing.TB
	port int
	srv  *mochi.Server
}

func startMochi(t testing.TB) *mochiBroker {
	b := &mochiBroker{t: t, port: testutil.FreePort(t)}
	b.start()
	t.Cleanup(b.stop)
	return b
}

func (b *mochiBroker) url() string { return fmt.Sprintf("tcp://127.0.0.1:%d", b.port) }

func (b *mochiBroker) start() { b.startWith(new(auth.AllowHook), nil) }

// startWith serves the broker's port with hook (given config) deciding who may do what.
func (b *mochiBroker) startWith(hook mochi.Hook, config any) {
	b.t.Helper()
	srv := mochi.New(&mochi.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	if err := srv.AddHook(hook, config); err != nil {
		b.t.Fatal(err)
	}
	if err := srv.AddListener(listeners.NewTCP(listeners.Config{ID: "t", Address: fmt.Sprintf("127.0.0.1:%d", b.port)})); err != nil {
		b.t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		b.t.Fatal(err)
	}
	b.srv = srv
}

func (b *mochiBroker) stop() {
	if b.srv != nil {
		_ = b.srv.Close()
		b.srv = nil
	}
}

// subscriptions returns the filters the broker holds for a client.
func (b *mochiBroker) subscriptions(clientID string) []string {
	cl, ok := b.srv.Clients.Get(clientID)
	if !ok {
		return nil
	}
	var out []string
	for f := range cl.State.Subscriptions.GetAll() {
		out = append(out, f)
	}
	slices.Sort(out)
	return out
}

// memEmitter keeps samples in memory; failNext makes the next Emit calls fail.
type memEmitter struct {
	mu       sync.Mutex
	samples  []signal.Sample
	calls    int
	failNext int
}

func (e *memEmitter) Emit(ctx context.Context, s []signal.Sample) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.calls++
	if e.failNext > 0 {
		e.failNext--
		return fmt.Errorf("test: buffer full")
	}
	e.samples = append(e.samples, s...)
	return nil
}

func (e *memEmitter) all() []signal.Sample {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.samples)
}

func (e *memEmitter) count() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.samples)
}

// fileEmitter is a durable Emitter for tests: one JSON line per sample, fsync per Emit, so
// "Emit returned" means "on disk" as with the real buffer.
type fileEmitter struct {
	mu   sync.Mutex
	path string
	f    *os.File
	buf  []byte
}

func openFileEmitter(path string) (*fileEmitter, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	return &fileEmitter{path: path, f: f}, nil
}

type fileRecord struct {
	Signal  string `json:"s"`
	Value   string `json:"v"`
	Quality string `json:"q"`
	Time    int64  `json:"t"`
}

func (e *fileEmitter) Emit(ctx context.Context, s []signal.Sample) error {
	return e.EmitMeta(ctx, s, nil)
}

// EmitMeta writes the meta keys as lines after the samples, in the same write(2): a SIGKILL keeps
// both or neither, as the buffer's transaction does.
func (e *fileEmitter) EmitMeta(ctx context.Context, s []signal.Sample, meta []buffer.Meta) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.buf = e.buf[:0]
	for _, x := range s {
		// Same JSON as fileRecord, appended by hand: this stands in for the buffer's encoder and
		// should not dominate the benchmark's CPU figure.
		e.buf = append(e.buf, `{"s":`...)
		e.buf = strconv.AppendQuote(e.buf, x.Signal)
		e.buf = append(e.buf, `,"v":`...)
		e.buf = strconv.AppendQuote(e.buf, x.Value.Text())
		e.buf = append(e.buf, `,"q":"`...)
		e.buf = append(e.buf, x.Quality.String()...)
		e.buf = append(e.buf, `","t":`...)
		e.buf = strconv.AppendInt(e.buf, x.Time.UnixNano(), 10)
		e.buf = append(e.buf, "}\n"...)
	}
	for _, m := range meta {
		e.buf = append(e.buf, `{"m":`...)
		e.buf = strconv.AppendQuote(e.buf, m.Key)
		e.buf = append(e.buf, `,"x":"`...)
		e.buf = hex.AppendEncode(e.buf, m.Value)
		e.buf = append(e.buf, "\"}\n"...)
	}
	if _, err := e.f.Write(e.buf); err != nil {
		return err
	}
	return e.f.Sync()
}

func (e *fileEmitter) Close() error { return e.f.Close() }

// GetMeta returns the last value written for key.
func (e *fileEmitter) GetMeta(key string) ([]byte, bool, error) {
	data, err := os.ReadFile(e.path)
	if err != nil {
		return nil, false, err
	}
	var v []byte
	found := false
	for line := range bytes.Lines(data) {
		var m struct {
			Key string `json:"m"`
			Hex string `json:"x"`
		}
		if json.Unmarshal(line, &m) != nil || m.Key != key {
			continue
		}
		if b, err := hex.DecodeString(m.Hex); err == nil {
			v, found = b, true
		}
	}
	return v, found, nil
}

// readRecords reads a fileEmitter file; a torn last line (killed mid-write) is ignored.
func readRecords(t testing.TB, path string) []fileRecord {
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []fileRecord
	for line := range bytes.Lines(data) {
		var r fileRecord
		if json.Unmarshal(line, &r) == nil && r.Signal != "" { // not a meta line
			out = append(out, r)
		}
	}
	return out
}

// runCollector starts a collector and stops it at cleanup, checking that Run returned nil.
func runCollector(t testing.TB, cfg *Config, deps collectors.Deps, em collectors.Emitter) *Collector {
	t.Helper()
	c, _ := startCollector(t, cfg, deps, em)
	return c
}

// startCollector starts a collector and returns it with its stop, for tests that restart it:
// stop cancels Run and checks that it returned nil; it runs at cleanup too, and only once.
func startCollector(t testing.TB, cfg *Config, deps collectors.Deps, em collectors.Emitter) (*Collector, func()) {
	t.Helper()
	if deps.Metrics == nil {
		deps.Metrics = prometheus.NewRegistry()
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	c, err := New("test", cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, em) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run returned %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("Run did not return after cancel")
			}
		})
	}
	t.Cleanup(stop) // also when the test fails before calling it
	return c, stop
}

func connectedState(c *Collector) func() bool {
	return func() bool { s, _ := c.State(); return s == "running" }
}

// publisher is a plain paho client for tests.
func newPublisher(t testing.TB, broker, id string) paho.Client {
	t.Helper()
	o := paho.NewClientOptions().AddBroker(broker).SetClientID(id).SetCleanSession(false).
		SetConnectTimeout(2 * time.Second).SetAutoReconnect(true).SetMaxReconnectInterval(200 * time.Millisecond).
		SetConnectRetry(true).SetConnectRetryInterval(100 * time.Millisecond)
	cl := paho.NewClient(o)
	tok := cl.Connect()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publisher connect: %v", tok.Error())
	}
	t.Cleanup(func() { cl.Disconnect(100) })
	return cl
}

func publish(t testing.TB, cl paho.Client, topic string, qos byte, payload []byte) {
	t.Helper()
	tok := cl.Publish(topic, qos, false, payload)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

func counterValue(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	var pairs []string
	for k, v := range labels {
		pairs = append(pairs, k, v)
	}
	return testutil.Metric(t, reg, name, pairs...)
}

// mosquitto runs Debian's broker as a child process on a fixed port and store.
type mosquitto struct {
	t    testing.TB
	port int
	dir  string
	conf string
	cmd  *exec.Cmd
}

// startMosquitto starts mosquitto with a store saved on every change (so a SIGKILL loses as
// little as mosquitto allows), or skips (fails under CI) when it is not installed.
func startMosquitto(t testing.TB, extra string) *mosquitto {
	t.Helper()
	return startMosquittoConf(t, "persistence true\npersistence_location %[1]s/\nautosave_interval 1\nautosave_on_changes true\n"+extra)
}

// startMosquittoConf starts mosquitto with conf (%[1]s is its directory) added to a listener,
// anonymous access and unlimited queues.
func startMosquittoConf(t testing.TB, conf string) *mosquitto {
	t.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		for _, p := range []string{"/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"} {
			if _, e := os.Stat(p); e == nil {
				bin, err = p, nil
			}
		}
	}
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("mosquitto is required under CI: %v (apt-get install -y mosquitto)", err)
		}
		t.Skip("mosquitto not installed (apt-get install -y mosquitto); skipping interop test")
	}
	m := &mosquitto{t: t, port: testutil.FreePort(t), dir: t.TempDir()}
	m.conf = filepath.Join(m.dir, "mosquitto.conf")
	full := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\nuser root\nmax_queued_messages 0\nlog_dest none\n", m.port) +
		strings.ReplaceAll(conf, "%[1]s", m.dir)
	if err := os.WriteFile(m.conf, []byte(full), 0o644); err != nil {
		t.Fatal(err)
	}
	m.cmd = exec.Command(bin, "-c", m.conf)
	m.start()
	t.Cleanup(func() { m.kill() })
	return m
}

func (m *mosquitto) url() string { return "tcp://127.0.0.1:" + strconv.Itoa(m.port) }

func (m *mosquitto) start() {
	m.t.Helper()
	m.cmd = exec.Command(m.cmd.Path, m.cmd.Args[1:]...)
	var stderr bytes.Buffer
	m.cmd.Stderr = &stderr
	if err := m.cmd.Start(); err != nil {
		m.t.Fatal(err)
	}
	testutil.WaitFor(m.t, 10*time.Second, "mosquitto to listen", func() bool {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", m.port))
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// kill sends SIGKILL and reaps the process.
func (m *mosquitto) kill() {
	if m.cmd == nil || m.cmd.Process == nil || m.cmd.ProcessState != nil {
		return
	}
	_ = m.cmd.Process.Signal(syscall.SIGKILL)
	_ = m.cmd.Wait()
}

// childProcess is the test binary re-executed as a collector with a durable file emitter.
type childProcess struct {
	cmd   *exec.Cmd
	ready chan struct{}
}

const childEnv = "GEMBA_MQTT_CHILD"

func startChild(t testing.TB, broker, out, dataDir, topic string) *childProcess {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1", "GEMBA_MQTT_BROKER="+broker, "GEMBA_MQTT_OUT="+out,
		"GEMBA_MQTT_DATADIR="+dataDir, "GEMBA_MQTT_TOPIC="+topic)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &childProcess{cmd: cmd, ready: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() == "READY" {
				close(p.ready)
			}
		}
	}()
	select {
	case <-p.ready:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatal("child collector did not connect")
	}
	t.Cleanup(p.kill)
	return p
}

func (p *childProcess) kill() {
	if p.cmd.ProcessState == nil {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		_ = p.cmd.Wait()
	}
}

// runChild is the child's main: a collector on GEMBA_MQTT_TOPIC writing to a fileEmitter.
func runChild() int {
	switch os.Getenv(childEnv) {
	case "bench-bare":
		return runBenchBare()
	case "bench-collector":
		return runBenchCollector()
	case "crash-point":
		return runCrashPointChild()
	}
	em, err := openFileEmitter(os.Getenv("GEMBA_MQTT_OUT"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cfg := NewConfig()
	cfg.Broker = os.Getenv("GEMBA_MQTT_BROKER")
	cfg.ClientID = "gemba-kill-test"
	cfg.ConnectTimeout = 2 * time.Second
	cfg.Reconnect = Backoff{Initial: 50 * time.Millisecond, Max: 200 * time.Millisecond}
	cfg.Subscriptions = []Subscription{{Topic: os.Getenv("GEMBA_MQTT_TOPIC"), Format: FormatJSON, Fields: []Field{{Path: "n"}}}}
	c, err := New("child", cfg, collectors.Deps{Agent: "t", DataDir: os.Getenv("GEMBA_MQTT_DATADIR"),
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	go func() {
		for {
			if s, _ := c.State(); s == "running" {
				fmt.Println("READY")
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	if err := c.Run(context.Background(), em); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
