package uplink

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/gemba-io/gemba/config"
	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func decodeYAML(doc string, out *Config) error {
	return config.NewDecoder(config.WithEnv(os.LookupEnv)).Unmarshal([]byte(doc), out)
}

// memSource is an in-memory Source with the buffer's semantics: sequences from 1, cumulative
// Ack, blocking Read. It records protocol violations (acking what was never appended).
type memSource struct {
	mu     sync.Mutex
	recs   [signal.NumStreams][]signal.Record
	last   [signal.NumStreams]uint64
	acked  [signal.NumStreams]uint64
	notify chan struct{}
	bad    []string
	reads  int
	onRead func(n int) // called (unlocked) after each Read that returns records
}

func newMemSource() *memSource { return &memSource{notify: make(chan struct{})} }

func (m *memSource) Append(s signal.Stream, data []byte) uint64 {
	m.mu.Lock()
	m.last[s]++
	seq := m.last[s]
	m.recs[s] = append(m.recs[s], signal.Record{Seq: seq, Data: data})
	close(m.notify)
	m.notify = make(chan struct{})
	m.mu.Unlock()
	return seq
}

func (m *memSource) Read(ctx context.Context, s signal.Stream, after uint64, max int) ([]signal.Record, error) {
	for {
		m.mu.Lock()
		rs := m.recs[s]
		i := sort.Search(len(rs), func(i int) bool { return rs[i].Seq > after })
		if i < len(rs) {
			out := append([]signal.Record(nil), rs[i:min(len(rs), i+max)]...)
			m.reads++
			n, hook := m.reads, m.onRead
			m.mu.Unlock()
			if hook != nil {
				hook(n)
			}
			return out, nil
		}
		ch := m.notify
		m.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (m *memSource) Ack(s signal.Stream, upTo uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if upTo > m.last[s] {
		m.bad = append(m.bad, fmt.Sprintf("ack %s up to %d beyond last %d", s, upTo, m.last[s]))
	}
	if upTo < m.acked[s] {
		m.bad = append(m.bad, fmt.Sprintf("ack %s went back from %d to %d", s, m.acked[s], upTo))
	}
	m.acked[s] = max(m.acked[s], upTo)
	rs := m.recs[s]
	i := sort.Search(len(rs), func(i int) bool { return rs[i].Seq > upTo })
	m.recs[s] = append([]signal.Record(nil), rs[i:]...)
	return nil
}

func (m *memSource) LastSeq(s signal.Stream) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.last[s]
}

func (m *memSource) Acked(s signal.Stream) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.acked[s]
}

func (m *memSource) check(t testing.TB) {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, b := range m.bad {
		t.Error(b)
	}
}

// sampleChunk encodes n ~100-byte samples with values first..first+n-1 captured at ts.
func sampleChunk(first, n int, ts time.Time) []byte {
	ss := make([]signal.Sample, n)
	for i := range ss {
		ss[i] = signal.Sample{
			Signal: "line1.press.temperature", Time: ts, Value: signal.Int(int64(first + i)),
			Source: "press-plc/ns=2;s=Temperature",
		}
	}
	recs := signal.AppendSamplesJSON(nil, ss)
	return signal.AppendChunk(nil, &signal.Chunk{
		Stream: signal.StreamSamples, ConfigVersion: "cv1", Count: n, Oldest: ts, Newest: ts, Records: recs,
	})
}

func testConfig(url string) Config {
	c := DefaultConfig()
	c.NATS.Servers = []string{url}
	c.NATS.CreateStream = true
	c.NATS.ReconnectWait = 20 * time.Millisecond
	c.NATS.ReconnectMaxWait = 200 * time.Millisecond
	c.NATS.DuplicateWindow = 30 * time.Minute
	c.Heartbeat = 0
	c.PublishTimeout = 2 * time.Second
	return c
}

var testID = Identity{Agent: "gw1", Site: "plant1", ConfigVersion: "cv1", Incarnation: "inc1"}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() && os.Getenv("UPLINK_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// running starts an uplink and stops it (waiting for Run to return) at cleanup.
type running struct {
	once   sync.Once
	u      *Uplink
	cancel context.CancelFunc
	done   chan error
}

func startUplink(t testing.TB, cfg Config, src Source, opts Options) *running {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	u, err := New(cfg, testID, src, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{u: u, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- u.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

func (r *running) stop(t testing.TB) {
	t.Helper()
	r.once.Do(func() {
		r.cancel()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("Run did not return after cancel")
		}
	})
}

// streamContent is what the stream holds for one agent stream.
type streamContent struct {
	msgs    int
	seqs    map[uint64]int // samples buffer seq -> copies
	values  map[int64]int  // sample value -> copies
	batches []*signal.Batch
	ids     map[string]int
}

// readStream decodes every message of the stream (retrying while a cluster elects a leader).
func readStream(t testing.TB, js jetstream.JetStream, name string) *streamContent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var s jetstream.Stream
	var err error
	testutil.WaitFor(t, 20*time.Second, "stream info", func() bool {
		s, err = js.Stream(ctx, name)
		return err == nil
	})
	info := s.CachedInfo()
	c := &streamContent{seqs: map[uint64]int{}, values: map[int64]int{}, ids: map[string]int{}}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		var m *jetstream.RawStreamMsg
		testutil.WaitFor(t, 20*time.Second, "get msg", func() bool {
			m, err = s.GetMsg(ctx, seq)
			return err == nil || strings.Contains(err.Error(), "not found")
		})
		if err != nil {
			continue
		}
		if !strings.HasSuffix(m.Subject, ".samples") && !strings.HasSuffix(m.Subject, ".features") {
			continue
		}
		b, err := signal.DecodeBatch(m.Data)
		if err != nil {
			t.Fatalf("stream seq %d: %v", seq, err)
		}
		c.msgs++
		if b.Stream == signal.StreamSamples {
			c.seqs[b.FirstSeq]++
		}
		c.ids[m.Header.Get(jetstream.MsgIDHeader)]++
		c.batches = append(c.batches, b)
		for _, s := range b.Samples {
			v, _ := s.Value.Int()
			c.values[v]++
		}
	}
	return c
}

// exactlyOnce checks that the stream holds samples 0..n-1 each exactly once.
func (c *streamContent) exactlyOnce(t testing.TB, n int) {
	t.Helper()
	for seq, k := range c.seqs {
		if k != 1 {
			t.Errorf("buffer seq %d stored %d times", seq, k)
		}
	}
	missing := 0
	for v := 0; v < n; v++ {
		switch k := c.values[int64(v)]; {
		case k == 0:
			missing++
		case k > 1:
			t.Errorf("sample %d stored %d times", v, k)
		}
	}
	if missing > 0 || len(c.values) != n {
		t.Errorf("stream has %d distinct samples, want %d (%d missing)", len(c.values), n, missing)
	}
}
