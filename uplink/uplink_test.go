package uplink

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
)

func TestForwardEnvelopeAndIDs(t *testing.T) {
	s := natstest.JetStream(t)
	src := newMemSource()
	now := time.Now()
	for i := range 10 {
		src.Append(signal.StreamSamples, sampleChunk(i*10, 10, now))
	}
	feat := signal.AppendChunk(nil, &signal.Chunk{
		Stream: signal.StreamFeatures, ConfigVersion: "cv1", Count: 1, Oldest: now, Newest: now,
		Records: signal.AppendFeaturesJSON(nil, []signal.Feature{{Signal: "x", Name: "mean", WindowStart: now, WindowEnd: now, Value: 1.5, Count: 3}}),
	})
	src.Append(signal.StreamFeatures, feat)
	reg := prometheus.NewRegistry()
	r := startUplink(t, testConfig(s.URL()), src, Options{Metrics: reg})

	testutil.WaitFor(t, 10*time.Second, "all acked", func() bool {
		return src.Acked(signal.StreamSamples) == 10 && src.Acked(signal.StreamFeatures) == 1
	})
	_, js := natstest.Connect(t, s.URL())
	c := readStream(t, js, "GEMBA")
	c.exactlyOnce(t, 100+0) // features carry no sample values
	if c.msgs != 11 {
		t.Fatalf("stream holds %d messages, want 11", c.msgs)
	}
	for _, b := range c.batches {
		id := signal.MsgID("gw1", b.Stream, "inc1", b.FirstSeq)
		if c.ids[id] != 1 {
			t.Errorf("message id %s: %d copies", id, c.ids[id])
		}
		if b.Agent != "gw1" || b.Site != "plant1" || b.ConfigVersion != "cv1" || b.FirstSeq != b.LastSeq || b.Historical {
			t.Errorf("envelope %+v", b.Header)
		}
		if b.Stream == signal.StreamFeatures && (len(b.Features) != 1 || b.Features[0].Value != 1.5) {
			t.Errorf("feature batch %+v", b.Features)
		}
	}
	h := r.u.Health()
	if ok, why := h.Ready(); !ok || !h.Connected || !h.StreamOK || h.Acked != 11 {
		t.Errorf("health %+v (ready %v: %s)", h, ok, why)
	}
	if v := metricValue(t, reg, "gemba_uplink_acked_messages_total"); v != 11 {
		t.Errorf("acked messages metric %v, want 11", v)
	}
	if v := metricValue(t, reg, "gemba_uplink_acked_records_total"); v != 101 {
		t.Errorf("acked records metric %v, want 101", v)
	}
	if v := metricValue(t, reg, "gemba_uplink_publish_ack_seconds"); v != 11 {
		t.Errorf("latency histogram has %v observations, want 11", v)
	}
	src.check(t)
}

func metricValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			if h := m.GetHistogram(); h != nil {
				return float64(h.GetSampleCount())
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("metric %s missing", name)
	return 0
}

// producer appends chunks of 10 samples every tick until stopped, and reports how many samples.
type producer struct {
	src   *memSource
	stop  chan struct{}
	done  chan struct{}
	count atomic.Int64
}

func produce(src *memSource, every time.Duration) *producer {
	p := &producer{src: src, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
			}
			n := int(p.count.Load())
			src.Append(signal.StreamSamples, sampleChunk(n, 10, time.Now()))
			p.count.Add(10)
		}
	}()
	return p
}

func (p *producer) halt() int { close(p.stop); <-p.done; return int(p.count.Load()) }

func TestOutageExactlyOnce(t *testing.T) {
	s := natstest.JetStream(t)
	src := newMemSource()
	cfg := testConfig(s.URL())
	r := startUplink(t, cfg, src, Options{})
	p := produce(src, time.Millisecond)

	testutil.WaitFor(t, 10*time.Second, "first acks", func() bool { return src.Acked(signal.StreamSamples) > 50 })
	s.Stop()
	testutil.WaitFor(t, 10*time.Second, "disconnect noticed", func() bool { return !r.u.Health().Connected })
	if ok, why := r.u.Health().Ready(); ok || !strings.Contains(why, "not connected") {
		t.Errorf("ready during outage: %v %q", ok, why)
	}
	before := src.LastSeq(signal.StreamSamples)
	testutil.WaitFor(t, 10*time.Second, "data piling up in the buffer", func() bool {
		return src.LastSeq(signal.StreamSamples) > before+100
	})
	s.Start() // same port and store
	testutil.WaitFor(t, 10*time.Second, "more data after restart", func() bool {
		return src.Acked(signal.StreamSamples) > before+150
	})
	n := p.halt()
	last := src.LastSeq(signal.StreamSamples)
	testutil.WaitFor(t, 20*time.Second, "everything acked", func() bool { return src.Acked(signal.StreamSamples) == last })
	r.stop(t)

	_, js := natstest.Connect(t, s.URL())
	c := readStream(t, js, "GEMBA")
	c.exactlyOnce(t, n)
	if c.msgs != int(last) {
		t.Errorf("stream holds %d messages for %d buffer records", c.msgs, last)
	}
	if h := r.u.Health(); h.Errors == 0 {
		t.Errorf("outage produced no publish errors: %+v", h)
	}
	src.check(t)
}

func TestFullStreamBuffersWithoutLoss(t *testing.T) {
	s := natstest.JetStream(t)
	src := newMemSource()
	cfg := testConfig(s.URL())
	cfg.NATS.MaxBytes = 64 << 10 // a few dozen chunks
	cfg.NATS.Discard = "new"
	r := startUplink(t, cfg, src, Options{})
	const chunks = 200
	for i := range chunks {
		src.Append(signal.StreamSamples, sampleChunk(i*10, 10, time.Now()))
	}
	// The acks of what fit are flushed by their own goroutine: wait for them too.
	testutil.WaitFor(t, 15*time.Second, "full stream reported, what fit acked", func() bool {
		_, why := r.u.Health().Ready()
		return strings.Contains(why, "refuses messages") && src.Acked(signal.StreamSamples) > 0
	})
	acked := src.Acked(signal.StreamSamples)
	if acked >= chunks {
		t.Fatalf("acked %d of %d while the stream is full", acked, chunks)
	}
	_, js := natstest.Connect(t, s.URL())
	c := readStream(t, js, "GEMBA")
	for seq := uint64(1); seq <= acked; seq++ {
		if c.seqs[seq] != 1 {
			t.Fatalf("buffer seq %d acked but stored %d times", seq, c.seqs[seq])
		}
	}
	// The hub makes room: everything arrives, once.
	ctx := context.Background()
	st, err := js.Stream(ctx, "GEMBA")
	if err != nil {
		t.Fatal(err)
	}
	sc := st.CachedInfo().Config
	sc.MaxBytes = -1
	if _, err := js.UpdateStream(ctx, sc); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, "backlog delivered", func() bool { return src.Acked(signal.StreamSamples) == chunks })
	testutil.WaitFor(t, 5*time.Second, "ready again", func() bool { ok, _ := r.u.Health().Ready(); return ok })
	readStream(t, js, "GEMBA").exactlyOnce(t, chunks*10)
	src.check(t)
}

func TestVerifyStreamMissing(t *testing.T) {
	s := natstest.JetStream(t)
	src := newMemSource()
	cfg := testConfig(s.URL())
	cfg.NATS.CreateStream = false
	src.Append(signal.StreamSamples, sampleChunk(0, 10, time.Now()))
	r := startUplink(t, cfg, src, Options{})
	testutil.WaitFor(t, 10*time.Second, "not-ready reason", func() bool {
		_, why := r.u.Health().Ready()
		return strings.Contains(why, "no JetStream stream captures gemba.plant1.gw1.samples")
	})
	_, js := natstest.Connect(t, s.URL())
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "GEMBA", Subjects: []string{"gemba.>"}}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "delivered after the hub created the stream", func() bool {
		return src.Acked(signal.StreamSamples) == 1
	})
	if ok, why := r.u.Health().Ready(); !ok {
		t.Errorf("not ready: %s", why)
	}
}

func TestWrongStreamCapturesSubject(t *testing.T) {
	s := natstest.JetStream(t)
	_, js := natstest.Connect(t, s.URL())
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "OTHER", Subjects: []string{"gemba.>"}}); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(s.URL())
	cfg.NATS.CreateStream = false
	r := startUplink(t, cfg, newMemSource(), Options{})
	testutil.WaitFor(t, 10*time.Second, "not-ready reason", func() bool {
		_, why := r.u.Health().Ready()
		return strings.Contains(why, "captured by stream OTHER, but uplink.nats.stream is GEMBA")
	})
}

func TestHistoricalAndLiveFirst(t *testing.T) {
	s := natstest.JetStream(t)
	src := newMemSource()
	old := time.Now().Add(-time.Hour)
	const backlog = 600
	for i := range backlog {
		src.Append(signal.StreamSamples, sampleChunk(i*10, 10, old))
	}
	// Live data appears once replay has started (second Read).
	var once sync.Once
	liveFrom := uint64(backlog + 1)
	src.onRead = func(n int) {
		if n == 2 {
			once.Do(func() {
				for i := range 5 {
					src.Append(signal.StreamSamples, sampleChunk((backlog+i)*10, 10, time.Now()))
				}
			})
		}
	}
	cfg := testConfig(s.URL())
	cfg.MaxInflight = 16 // keep the backlog from being all in flight before live data exists
	r := startUplink(t, cfg, src, Options{})
	testutil.WaitFor(t, 20*time.Second, "all acked", func() bool { return src.Acked(signal.StreamSamples) == backlog+5 })
	r.stop(t)

	_, js := natstest.Connect(t, s.URL())
	c := readStream(t, js, "GEMBA")
	c.exactlyOnce(t, (backlog+5)*10)
	firstLive, lastBacklog := -1, -1
	for i, b := range c.batches {
		live := b.FirstSeq >= liveFrom
		if live == b.Historical {
			t.Errorf("seq %d: historical=%v (delay %s)", b.FirstSeq, b.Historical, b.Delay)
		}
		if b.Historical && b.Delay < 59*time.Minute {
			t.Errorf("seq %d: delay %s, want about 1h", b.FirstSeq, b.Delay)
		}
		if live && firstLive < 0 {
			firstLive = i
		}
		if !live {
			lastBacklog = i
		}
	}
	if firstLive < 0 || firstLive > lastBacklog {
		t.Errorf("live data stored at position %d, after the whole backlog (last backlog at %d)", firstLive, lastBacklog)
	}
	// Within each part, sequence order holds.
	var prevLive, prevBack uint64
	for _, b := range c.batches {
		prev := &prevBack
		if b.FirstSeq >= liveFrom {
			prev = &prevLive
		}
		if b.FirstSeq <= *prev {
			t.Errorf("seq %d stored after %d in the same part", b.FirstSeq, *prev)
		}
		*prev = b.FirstSeq
	}
	src.check(t)
}

func TestHeartbeat(t *testing.T) {
	s := natstest.JetStream(t)
	nc, _ := natstest.Connect(t, s.URL())
	sub, err := nc.SubscribeSync("gemba.plant1.gw1.status")
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(s.URL())
	cfg.Heartbeat = 50 * time.Millisecond
	status := func() signal.Status {
		return signal.Status{Agent: "gw1", Site: "plant1", Version: "1.2.3", ConfigVersion: "cv1",
			Buffer: map[string]signal.BufferState{"samples": {Records: 7}}}
	}
	startUplink(t, cfg, newMemSource(), Options{Status: status})
	for i := range 2 {
		m, err := sub.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("heartbeat %d: %v", i, err)
		}
		b, err := signal.DecodeBatch(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		if b.Stream != signal.StreamStatus || len(b.Status) != 1 || b.Status[0].Version != "1.2.3" ||
			b.Status[0].Buffer["samples"].Records != 7 || b.Agent != "gw1" {
			t.Fatalf("heartbeat %+v", b)
		}
	}
}

func TestCorruptRecordSkipped(t *testing.T) {
	s := natstest.JetStream(t)
	src := newMemSource()
	src.Append(signal.StreamSamples, sampleChunk(0, 10, time.Now()))
	src.Append(signal.StreamSamples, []byte("garbage"))
	src.Append(signal.StreamSamples, sampleChunk(10, 10, time.Now()))
	r := startUplink(t, testConfig(s.URL()), src, Options{})
	testutil.WaitFor(t, 10*time.Second, "acked past the corrupt record", func() bool { return src.Acked(signal.StreamSamples) == 3 })
	if h := r.u.Health(); h.Errors != 1 || r.u.m.corrupt.Load() != 1 {
		t.Errorf("corrupt record not counted: %+v", h)
	}
	_, js := natstest.Connect(t, s.URL())
	readStream(t, js, "GEMBA").exactlyOnce(t, 20)
}

func TestRunStopsWithoutServer(t *testing.T) {
	cfg := testConfig("nats://127.0.0.1:1") // nothing listens there
	u, err := New(cfg, testID, newMemSource(), Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- u.Run(ctx) }()
	testutil.WaitFor(t, 5*time.Second, "connect error reported", func() bool { return u.Health().LastError != "" })
	if ok, why := u.Health().Ready(); ok || !strings.Contains(why, "not connected to NATS (nats://127.0.0.1:1)") {
		t.Errorf("reason %q", why)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Error(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
	if err := u.Run(context.Background()); err == nil {
		t.Error("second Run accepted")
	}
}

func TestNewRejects(t *testing.T) {
	good := testConfig("nats://127.0.0.1:4222")
	bad := good
	bad.MaxInflight = 0
	for name, tc := range map[string]struct {
		cfg Config
		id  Identity
		src Source
	}{
		"nil source":  {good, testID, nil},
		"agent token": {good, Identity{Agent: "gw.1", Site: "p"}, newMemSource()},
		"empty site":  {good, Identity{Agent: "gw1"}, newMemSource()},
		"bad config":  {bad, testID, newMemSource()},
	} {
		if _, err := New(tc.cfg, tc.id, tc.src, Options{}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	reg := prometheus.NewRegistry()
	if _, err := New(good, testID, newMemSource(), Options{Metrics: reg}); err != nil {
		t.Fatal(err)
	}
	if _, err := New(good, testID, newMemSource(), Options{Metrics: reg}); err == nil {
		t.Error("double registration accepted")
	}
}

// TestDuplicatesReportedOnResend: records a previous run published (stored, buffer not acked,
// as after a crash) are re-sent with the same ids; JetStream drops them and the uplink counts them.
func TestDuplicatesReportedOnResend(t *testing.T) {
	s := natstest.JetStream(t)
	src := newMemSource()
	for i := range 20 {
		src.Append(signal.StreamSamples, sampleChunk(i*10, 10, time.Now()))
	}
	// Another publisher already stored seq 5..9 with the uplink's ids (as if from a run that
	// crashed before acking the buffer).
	_, js := natstest.Connect(t, s.URL())
	cfg := testConfig(s.URL())
	u, _ := New(cfg, testID, newMemSource(), Options{})
	if err := u.ensureStream(context.Background(), js); err != nil {
		t.Fatal(err)
	}
	for seq := uint64(5); seq <= 9; seq++ {
		c, _ := signal.ParseChunk(sampleChunk(int(seq-1)*10, 10, time.Now()))
		h := signal.Header{Schema: signal.SchemaVersion, Agent: "gw1", Site: "plant1", Incarnation: "inc1", Stream: signal.StreamSamples, FirstSeq: seq, LastSeq: seq, Count: c.Count}
		m := nats.NewMsg("gemba.plant1.gw1.samples")
		m.Data = signal.AppendEnvelope(nil, &h, c.Records)
		m.Header.Set(jetstream.MsgIDHeader, signal.MsgID("gw1", signal.StreamSamples, "inc1", seq))
		if _, err := js.PublishMsg(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	r := startUplink(t, cfg, src, Options{})
	testutil.WaitFor(t, 10*time.Second, "all acked", func() bool { return src.Acked(signal.StreamSamples) == 20 })
	if d := r.u.Health().Duplicates; d != 5 {
		t.Errorf("duplicates %d, want 5", d)
	}
	readStream(t, js, "GEMBA").exactlyOnce(t, 200)
}

func TestConfigValidate(t *testing.T) {
	c := DefaultConfig()
	if err := validate(&c); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	c.NATS.CreateStream = true
	if err := validate(&c); err != nil {
		t.Fatalf("defaults with create_stream invalid: %v", err)
	}
	cases := map[string]func(*Config){
		"nats.servers[0]: scheme \"http\"":                               func(c *Config) { c.NATS.Servers = []string{"http://x:1"} },
		"nats.servers[0]: \"nats://[redacted]@%zz\" is not a server URL": func(c *Config) { c.NATS.Servers = []string{"nats://u:hunter2@%zz"} },
		"nats.password: user \"u\" needs a password":                     func(c *Config) { c.NATS.User = "u" },
		"nats.creds_file: cannot read":                                   func(c *Config) { c.NATS.CredsFile = "/nonexistent/x.creds" },
		"nats: set only one of":                                          func(c *Config) { c.NATS.CredsFile = "/dev/null"; c.NATS.User = "u" },
		"nats.tls: cert_file and key_file go together":                   func(c *Config) { c.NATS.TLS.CertFile = "/dev/null" },
		"nats.duplicate_window: 5m0s must exceed":                        func(c *Config) { c.NATS.DuplicateWindow = 5 * time.Minute },
		"nats.storage: \"disk\" unknown":                                 func(c *Config) { c.NATS.Storage = "disk" },
		"nats.stream: \"a.b\" is not a valid stream":                     func(c *Config) { c.NATS.Stream = "a.b" },
		"nats.subject_prefix: \"a*\" contains":                           func(c *Config) { c.NATS.SubjectPrefix = "x.a*" },
		"backfill_share: must be in (0, 1]":                              func(c *Config) { c.BackfillShare = 0 },
		"max_inflight: must be between 1 and 65536":                      func(c *Config) { c.MaxInflight = 0 },
		"nats.discard: \"none\" unknown":                                 func(c *Config) { c.NATS.Discard = "none" },
		"nats.reconnect_max_wait: 1ms is below":                          func(c *Config) { c.NATS.ReconnectMaxWait = time.Millisecond },
		"nats.duplicate_window: 2h0m0s exceeds max_age":                  func(c *Config) { c.NATS.MaxAge = time.Hour; c.NATS.DuplicateWindow = 2 * time.Hour },
	}
	for want, mut := range cases {
		c := DefaultConfig()
		c.NATS.CreateStream = true
		mut(&c)
		err := validate(&c)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want %q, got %v", want, err)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("password leaked: %v", err)
		}
	}
}

func TestConfigYAML(t *testing.T) {
	t.Setenv("NATS_PW", "s3cret-pw")
	doc := `
nats:
  servers: [nats://hub1:4222, nats://hub2:4222]
  user: agent
  password: ${NATS_PW}
  stream: PLANT
  domain: hub
  create_stream: true
  replicas: 3
  max_bytes: 10GiB
  duplicate_window: 1h
max_inflight: 128
historical_after: 1m
heartbeat: 5s
`
	c := DefaultConfig()
	if err := decodeYAML(doc, &c); err != nil {
		t.Fatal(err)
	}
	if c.NATS.Password.Value() != "s3cret-pw" || c.NATS.Replicas != 3 || c.NATS.MaxBytes != 10<<30 ||
		c.MaxInflight != 128 || c.HistoricalAfter != time.Minute || c.NATS.SubjectPrefix != "gemba" {
		t.Errorf("decoded %+v", c)
	}
	if s := fmt.Sprintf("%v %+v", c, c); strings.Contains(s, "s3cret-pw") {
		t.Error("password printed")
	}
	err := decodeYAML("nats: {servers: [nats://x:1], strem: X}\nmax_infligt: 3\n", new(Config))
	if err == nil || !strings.Contains(err.Error(), "strem") || !strings.Contains(err.Error(), "max_infligt") {
		t.Errorf("unknown keys: %v", err)
	}
}

func TestRunBadSeedFile(t *testing.T) {
	cfg := testConfig("nats://127.0.0.1:1")
	cfg.NATS.NkeySeedFile = writeFile(t, "bad.nk", []byte("not a seed"))
	u, err := New(cfg, testID, newMemSource(), Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	err = u.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "nkey_seed_file "+cfg.NATS.NkeySeedFile) {
		t.Fatalf("Run: %v", err)
	}
	if ok, why := u.Health().Ready(); ok || why == "" {
		t.Errorf("ready %v %q", ok, why)
	}
}

func TestCreateStreamKeepsOthersSubjectsAndRefusesStorageChange(t *testing.T) {
	s := natstest.JetStream(t)
	_, js := natstest.Connect(t, s.URL())
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "GEMBA", Subjects: []string{"hub.>"}, Duplicates: time.Minute}); err != nil {
		t.Fatal(err)
	}
	src := newMemSource()
	src.Append(signal.StreamSamples, sampleChunk(0, 10, time.Now()))
	cfg := testConfig(s.URL())
	startUplink(t, cfg, src, Options{})
	testutil.WaitFor(t, 10*time.Second, "delivered", func() bool { return src.Acked(signal.StreamSamples) == 1 })
	st, err := js.Stream(ctx, "GEMBA")
	if err != nil {
		t.Fatal(err)
	}
	sc := st.CachedInfo().Config
	if !slices.Contains(sc.Subjects, "hub.>") || !slices.Contains(sc.Subjects, "gemba.*.*.samples") || sc.Duplicates != cfg.NATS.DuplicateWindow {
		t.Errorf("stream after update: subjects %v, duplicates %s", sc.Subjects, sc.Duplicates)
	}

	cfg.NATS.Storage = "memory"
	r := startUplink(t, cfg, newMemSource(), Options{})
	testutil.WaitFor(t, 10*time.Second, "storage mismatch reported", func() bool {
		_, why := r.u.Health().Ready()
		return strings.Contains(why, "exists with File storage, config asks for Memory")
	})
}

func TestSubjectCovers(t *testing.T) {
	for _, c := range []struct {
		pattern, sub string
		want         bool
	}{
		{"gemba.>", "gemba.*.*.samples", true},
		{"gemba.*.*.samples", "gemba.*.*.samples", true},
		{"gemba.*.*.*", "gemba.*.*.samples", true},
		{"gemba.plant1.*.samples", "gemba.*.*.samples", false},
		{"gemba.*.*.features", "gemba.*.*.samples", false},
		{"gemba.*.*", "gemba.*.*.samples", false},
		{">", "gemba.*.*.samples", true},
		{"gemba.*.*.samples.>", "gemba.*.*.samples", false},
		{"gemba.*.*.samples", "gemba.>", false},
	} {
		if got := subjectCovers(c.pattern, c.sub); got != c.want {
			t.Errorf("subjectCovers(%q, %q) = %v", c.pattern, c.sub, got)
		}
	}
}

func TestCreateStreamOverHubStreamWithWildcard(t *testing.T) {
	s := natstest.JetStream(t)
	_, js := natstest.Connect(t, s.URL())
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "GEMBA", Subjects: []string{"gemba.>"}}); err != nil {
		t.Fatal(err)
	}
	src := newMemSource()
	src.Append(signal.StreamSamples, sampleChunk(0, 10, time.Now()))
	startUplink(t, testConfig(s.URL()), src, Options{})
	testutil.WaitFor(t, 10*time.Second, "delivered", func() bool { return src.Acked(signal.StreamSamples) == 1 })
	st, err := js.Stream(ctx, "GEMBA")
	if err != nil {
		t.Fatal(err)
	}
	if sub := st.CachedInfo().Config.Subjects; !slices.Equal(sub, []string{"gemba.>"}) {
		t.Errorf("subjects %v, want the hub's gemba.> untouched", sub)
	}
}
