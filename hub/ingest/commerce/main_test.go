package commerce

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)

func startServer(t *testing.T) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s
}

func connect(t *testing.T, s *server.Server) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// startJS returns a JetStream client of a fresh server holding the COMMERCE stream of testConfig.
func startJS(t *testing.T) (jetstream.JetStream, *server.Server) {
	t.Helper()
	s := startServer(t)
	js := connect(t, s)
	if _, err := EnsureStream(context.Background(), js, testConfig()); err != nil {
		t.Fatal(err)
	}
	return js, s
}

func testConfig() Config {
	c := DefaultConfig()
	c.RetryDelay = 50 * time.Millisecond
	c.PublishTimeout = 5 * time.Second
	return c
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// logSink records log lines so tests can see what was logged (and that a token was not).
type logSink struct {
	mu    sync.Mutex
	lines []string
}

func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, string(p))
	return len(p), nil
}

func (l *logSink) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

func sale(order string, line int64) Sale {
	return Sale{OrderID: order, Line: line, SKU: "SKU-1", Site: "plant1", Channel: "web", Quantity: 2, UnitPrice: 9.5,
		Currency: "EUR", Time: t0}
}

func snapshot(id, site, sku string, onHand float64) Snapshot {
	return Snapshot{SnapshotID: id, SKU: sku, Site: site, OnHand: onHand, Time: t0}
}

func mustEncode(t testing.TB, ev Event) []byte {
	t.Helper()
	b, err := ev.encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fakeSink records applied events; fail makes the next n applications fail.
type fakeSink struct {
	mu     sync.Mutex
	sales  map[string]int // MsgID → calls
	snaps  map[string]int
	order  []string
	failN  int
	reject map[string]bool
}

func newFakeSink() *fakeSink {
	return &fakeSink{sales: map[string]int{}, snaps: map[string]int{}, reject: map[string]bool{}}
}

func (f *fakeSink) apply(id string, m map[string]int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.reject[id] {
		return fmt.Errorf("%w: %s beyond the horizon", ErrReject, id)
	}
	if f.failN > 0 {
		f.failN--
		return fmt.Errorf("kv unavailable")
	}
	m[id]++
	f.order = append(f.order, id)
	return nil
}

func (f *fakeSink) ApplySale(_ context.Context, s Sale) error { return f.apply(s.MsgID(), f.sales) }
func (f *fakeSink) ApplySnapshot(_ context.Context, s Snapshot) error {
	return f.apply(s.MsgID(), f.snaps)
}

func (f *fakeSink) calls() (total int, maxPerID int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, m := range []map[string]int{f.sales, f.snaps} {
		for _, n := range m {
			total += n
			maxPerID = max(maxPerID, n)
		}
	}
	return total, maxPerID
}

func (f *fakeSink) count(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sales[id] + f.snaps[id]
}
