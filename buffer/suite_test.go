package buffer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
	"github.com/gemba-io/gemba/uplink"
)

// Both implementations give the uplink the tail of a stream without a Stats copy.
var (
	_ uplink.Tail = (*Store)(nil)
	_ uplink.Tail = (*Memory)(nil)
)

// impl builds one Buffer implementation for the conformance suite. reopen, when not nil, closes
// the buffer and opens it again on the same data (durable implementations only).
type impl struct {
	name    string
	durable bool
	open    func(t *testing.T, cfg Config) Buffer
}

var impls = []impl{
	{name: "badger", durable: true, open: func(t *testing.T, cfg Config) Buffer {
		t.Helper()
		s, err := Open(cfg, Options{Logger: testLogger(t)})
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		return s
	}},
	{name: "memory", open: func(t *testing.T, cfg Config) Buffer { return NewMemory(cfg) }},
}

func testConfig(t *testing.T) Config {
	cfg := DefaultConfig()
	cfg.Dir = filepath.Join(t.TempDir(), "buf")
	cfg.MaxBytes = 256 << 20
	cfg.MaxAge = 0
	return cfg
}

func TestConformance(t *testing.T) {
	for _, im := range impls {
		t.Run(im.name, func(t *testing.T) {
			for _, tc := range suite {
				t.Run(tc.name, func(t *testing.T) {
					if tc.durable && !im.durable {
						t.Skip("needs a durable implementation")
					}
					tc.run(t, im)
				})
			}
		})
	}
}

var suite = []struct {
	name    string
	durable bool
	run     func(t *testing.T, im impl)
}{
	{name: "order", run: testOrder},
	{name: "cumulative ack", run: testAck},
	{name: "streams are independent", run: testStreams},
	{name: "read blocks until append", run: testReadBlocks},
	{name: "concurrent appends", run: testConcurrent},
	{name: "drop_oldest", run: testDropOldest},
	{name: "drop_newest", run: testDropNewest},
	{name: "block", run: testBlock},
	{name: "max_age", run: testMaxAge},
	{name: "closed", run: testClosed},
	{name: "meta", run: testMeta},
	{name: "bad input", run: testBadInput},
	{name: "last seq", run: testLastSeq},
	{name: "restart resumes", durable: true, run: testRestart},
	{name: "incarnation", run: testIncarnation},
}

// testIncarnation: every buffer life has its own name; a durable store keeps it across restarts,
// and a new (or reset) store, whose sequences start again at 1, gets another.
func testIncarnation(t *testing.T, im impl) {
	cfg := testConfig(t)
	b := im.open(t, cfg)
	inc := b.Incarnation()
	if !validIncarnation(inc) {
		t.Fatalf("incarnation %q: want 16 hex digits", inc)
	}
	appendT(t, b, signal.StreamSamples, rec("a"))
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	again := openT(t, im, cfg)
	if im.durable && again.Incarnation() != inc {
		t.Errorf("reopened store: incarnation %q, was %q", again.Incarnation(), inc)
	}
	if !im.durable && again.Incarnation() == inc {
		t.Errorf("a new in-memory buffer kept incarnation %q", inc)
	}
	other := testConfig(t)
	if fresh := openT(t, im, other); fresh.Incarnation() == inc || fresh.Incarnation() == again.Incarnation() {
		t.Errorf("a new store reused incarnation %q", fresh.Incarnation())
	}
}

func openT(t *testing.T, im impl, cfg Config) Buffer {
	b := im.open(t, cfg)
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func appendT(t *testing.T, b Buffer, st signal.Stream, recs ...[]byte) []uint64 {
	t.Helper()
	seqs, err := b.Append(context.Background(), st, recs...)
	if err != nil {
		t.Fatalf("append: %v", err)
	}
	if len(seqs) != len(recs) {
		t.Fatalf("append returned %d sequences for %d records", len(seqs), len(recs))
	}
	return seqs
}

func readT(t *testing.T, b Buffer, st signal.Stream, after uint64, max int) []signal.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	recs, err := b.Read(ctx, st, after, max)
	if err != nil {
		t.Fatalf("read %s after %d: %v", st, after, err)
	}
	return recs
}

// readAll reads every waiting record of st without blocking on an empty stream.
func readAll(t *testing.T, b Buffer, st signal.Stream) []signal.Record {
	t.Helper()
	var out []signal.Record
	var after uint64
	for b.Stats().Streams[st].LastSeq > after {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		recs, err := b.Read(ctx, st, after, 1000)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatalf("read %s after %d: %v", st, after, err)
		}
		for _, r := range recs {
			out = append(out, signal.Record{Seq: r.Seq, Data: bytes.Clone(r.Data)})
		}
		after = recs[len(recs)-1].Seq
	}
	return out
}

func rec(format string, a ...any) []byte { return fmt.Appendf(nil, format, a...) }

func testOrder(t *testing.T, im impl) {
	b := openT(t, im, testConfig(t))
	seqs := appendT(t, b, signal.StreamSamples, rec("a"), rec("b"))
	seqs = append(seqs, appendT(t, b, signal.StreamSamples, rec("c"))...)
	if fmt.Sprint(seqs) != "[1 2 3]" {
		t.Fatalf("sequences = %v, want [1 2 3]", seqs)
	}
	got := readT(t, b, signal.StreamSamples, 0, 10)
	if len(got) != 3 || string(got[0].Data)+string(got[1].Data)+string(got[2].Data) != "abc" || got[2].Seq != 3 {
		t.Fatalf("read = %v", got)
	}
	got = readT(t, b, signal.StreamSamples, 1, 1)
	if len(got) != 1 || got[0].Seq != 2 || string(got[0].Data) != "b" {
		t.Fatalf("read after 1 max 1 = %v", got)
	}
	st := b.Stats().Streams[signal.StreamSamples]
	if st.Records != 3 || st.Bytes != 3 || st.FirstSeq != 1 || st.LastSeq != 3 || st.Oldest.IsZero() {
		t.Fatalf("stats = %+v", st)
	}
}

func testAck(t *testing.T, im impl) {
	b := openT(t, im, testConfig(t))
	appendT(t, b, signal.StreamSamples, rec("a"), rec("b"), rec("c"), rec("d"))
	if err := b.Ack(signal.StreamSamples, 2); err != nil {
		t.Fatal(err)
	}
	got := readT(t, b, signal.StreamSamples, 0, 10)
	if len(got) != 2 || got[0].Seq != 3 {
		t.Fatalf("after ack 2, read = %v", got)
	}
	if err := b.Ack(signal.StreamSamples, 1); err != nil {
		t.Fatalf("re-ack of an older sequence: %v", err)
	}
	if err := b.Ack(signal.StreamSamples, 9); err == nil {
		t.Fatal("ack beyond the last sequence: want an error")
	}
	st := b.Stats().Streams[signal.StreamSamples]
	if st.Records != 2 || st.Acked != 2 || st.FirstSeq != 3 {
		t.Fatalf("stats = %+v", st)
	}
	if err := b.Ack(signal.StreamSamples, 4); err != nil {
		t.Fatal(err)
	}
	st = b.Stats().Streams[signal.StreamSamples]
	if st.Records != 0 || st.Bytes != 0 || st.FirstSeq != 0 || st.Acked != 4 || !st.Oldest.IsZero() {
		t.Fatalf("stats after acking all = %+v", st)
	}
	if seqs := appendT(t, b, signal.StreamSamples, rec("e")); seqs[0] != 5 {
		t.Fatalf("sequence after acking all = %d, want 5", seqs[0])
	}
}

func testStreams(t *testing.T, im impl) {
	b := openT(t, im, testConfig(t))
	appendT(t, b, signal.StreamSamples, rec("s1"), rec("s2"))
	if seqs := appendT(t, b, signal.StreamFeatures, rec("f1")); seqs[0] != 1 {
		t.Fatalf("features start at %d, want 1", seqs[0])
	}
	if err := b.Ack(signal.StreamSamples, 2); err != nil {
		t.Fatal(err)
	}
	if got := readT(t, b, signal.StreamFeatures, 0, 10); len(got) != 1 || string(got[0].Data) != "f1" {
		t.Fatalf("features after acking samples = %v", got)
	}
	if _, err := b.Append(context.Background(), signal.NumStreams, rec("x")); err == nil {
		t.Fatal("append to an unknown stream: want an error")
	}
}

func testReadBlocks(t *testing.T, im impl) {
	b := openT(t, im, testConfig(t))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := b.Read(ctx, signal.StreamStatus, 0, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("read of an empty stream = %v, want deadline exceeded", err)
	}
	got := make(chan []signal.Record, 1)
	go func() {
		recs, err := b.Read(context.Background(), signal.StreamStatus, 0, 5)
		if err != nil {
			t.Errorf("blocked read: %v", err)
		}
		got <- recs
	}()
	appendT(t, b, signal.StreamStatus, rec("hello"))
	select {
	case recs := <-got:
		if len(recs) != 1 || string(recs[0].Data) != "hello" {
			t.Fatalf("blocked read returned %v", recs)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("blocked read did not return after an append")
	}
}

func testConcurrent(t *testing.T, im impl) {
	b := openT(t, im, testConfig(t))
	const writers, appends, per = 8, 100, 5
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range appends {
				var recs [][]byte
				for j := range per {
					recs = append(recs, rec("w%d-%04d-%d", w, i, j))
				}
				if _, err := b.Append(context.Background(), signal.StreamSamples, recs...); err != nil {
					t.Errorf("append: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	all := readAll(t, b, signal.StreamSamples)
	if len(all) != writers*appends*per {
		t.Fatalf("read %d records, want %d", len(all), writers*appends*per)
	}
	last := map[byte]string{}
	for i, r := range all {
		if r.Seq != uint64(i+1) {
			t.Fatalf("record %d has sequence %d", i, r.Seq)
		}
		w := r.Data[1]
		if string(r.Data) <= last[w] {
			t.Fatalf("writer %c: %s after %s", w, r.Data, last[w])
		}
		last[w] = string(r.Data)
	}
}

// capConfig is a small cap. The Store's cap is measured on disk, so it needs MiBs; records are 64 KiB.
func capConfig(t *testing.T, policy string) Config {
	cfg := testConfig(t)
	cfg.MaxBytes = 8 << 20
	cfg.WhenFull = policy
	cfg.Badger.MemTableSize = 1 << 20
	return cfg
}

var big = bytes.Repeat([]byte("x"), 64<<10)

func bigRec(i int) []byte {
	r := bytes.Clone(big)
	copy(r, fmt.Sprintf("%08d", i))
	return r
}

func testDropOldest(t *testing.T, im impl) {
	b := openT(t, im, capConfig(t, DropOldest))
	appendT(t, b, signal.StreamFeatures, rec("feature"))
	const n = 400 // 25 MiB through an 8 MiB cap
	for i := range n {
		appendT(t, b, signal.StreamSamples, bigRec(i))
	}
	st := b.Stats()
	s := st.Streams[signal.StreamSamples]
	if s.Dropped["max_bytes"] == 0 || s.Records+s.Dropped["max_bytes"] != n {
		t.Fatalf("samples: %d waiting + %d dropped, want %d", s.Records, s.Dropped["max_bytes"], n)
	}
	if st.DiskSize > st.MaxBytes {
		t.Fatalf("disk size %d above max_bytes %d", st.DiskSize, st.MaxBytes)
	}
	all := readAll(t, b, signal.StreamSamples)
	if len(all) == 0 || all[len(all)-1].Seq != n || !bytes.Equal(all[len(all)-1].Data, bigRec(n-1)) {
		t.Fatalf("the newest record must survive; got %d records", len(all))
	}
	if f := readAll(t, b, signal.StreamFeatures); len(f) != 1 {
		t.Fatalf("a feature was evicted while samples were there: %v", f)
	}
}

func testDropNewest(t *testing.T, im impl) {
	b := openT(t, im, capConfig(t, DropNewest))
	var ok, refused int
	for i := range 400 {
		_, err := b.Append(context.Background(), signal.StreamSamples, bigRec(i))
		switch {
		case err == nil && refused == 0:
			ok++
		case errors.Is(err, ErrFull):
			refused++
		default:
			t.Fatalf("append %d after %d refusals: %v", i, refused, err)
		}
	}
	s := b.Stats().Streams[signal.StreamSamples]
	if refused == 0 || s.Dropped["full"] != uint64(refused) || s.Records != uint64(ok) || s.FirstSeq != 1 {
		t.Fatalf("ok %d refused %d, stats %+v", ok, refused, s)
	}
	if !b.Stats().Full {
		t.Fatal("Stats.Full not set while refusing")
	}
}

func testBlock(t *testing.T, im impl) {
	b := openT(t, im, capConfig(t, Block))
	var last uint64
	for i := 0; ; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		seqs, err := b.Append(ctx, signal.StreamSamples, bigRec(i))
		cancel()
		if errors.Is(err, ErrFull) && errors.Is(err, context.DeadlineExceeded) {
			if !b.Stats().Full {
				t.Fatal("an append timed out in block mode but Stats.Full is not set")
			}
			break
		}
		if err != nil || i > 400 {
			t.Fatalf("append %d: %v", i, err)
		}
		last = seqs[0]
	}
	done := make(chan error, 1)
	go func() {
		_, err := b.Append(context.Background(), signal.StreamSamples, bigRec(-1))
		done <- err
	}()
	if err := b.Ack(signal.StreamSamples, last); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("blocked append after ack: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("blocked append did not resume after the buffer was acked")
	}
	if d := b.Stats().Streams[signal.StreamSamples].Dropped; d["max_bytes"]+d["full"] != 0 {
		t.Fatalf("block must not drop: %v", d)
	}
}

func testMaxAge(t *testing.T, im impl) {
	cfg := testConfig(t)
	cfg.MaxAge = 100 * time.Millisecond
	b := openT(t, im, cfg)
	appendT(t, b, signal.StreamSamples, rec("old"), rec("older"))
	testutil.WaitFor(t, 10*time.Second, "records to expire", func() bool {
		s := b.Stats().Streams[signal.StreamSamples]
		return s.Records == 0 && s.Dropped["max_age"] == 2
	})
	if seqs := appendT(t, b, signal.StreamSamples, rec("new")); seqs[0] != 3 {
		t.Fatalf("sequence after expiry = %d, want 3", seqs[0])
	}
}

func testClosed(t *testing.T, im impl) {
	b := im.open(t, testConfig(t))
	blocked := make(chan error, 1)
	go func() {
		_, err := b.Read(context.Background(), signal.StreamSamples, 0, 1)
		blocked <- err
	}()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if err := <-blocked; !errors.Is(err, ErrClosed) {
		t.Fatalf("blocked read at close = %v, want ErrClosed", err)
	}
	if _, err := b.Append(context.Background(), signal.StreamSamples, rec("a")); !errors.Is(err, ErrClosed) {
		t.Fatalf("append after close = %v", err)
	}
	if err := b.Ack(signal.StreamSamples, 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("ack after close = %v", err)
	}
}

func testMeta(t *testing.T, im impl) {
	b := openT(t, im, testConfig(t))
	m := b.(MetaStore)
	if _, ok, err := m.GetMeta("win"); ok || err != nil {
		t.Fatalf("missing key: ok=%v err=%v", ok, err)
	}
	if err := m.PutMeta("win", []byte("v1")); err != nil {
		t.Fatal(err)
	}
	if v, ok, err := m.GetMeta("win"); !ok || err != nil || string(v) != "v1" {
		t.Fatalf("get = %q %v %v", v, ok, err)
	}
	appendT(t, b, signal.StreamSamples, rec("a"))
	if got := readT(t, b, signal.StreamSamples, 0, 10); len(got) != 1 {
		t.Fatalf("meta leaked into the queue: %v", got)
	}
}

func testBadInput(t *testing.T, im impl) {
	b := openT(t, im, testConfig(t))
	if _, err := b.Append(context.Background(), signal.StreamSamples, make([]byte, maxRecord+1)); err == nil {
		t.Fatal("oversized record: want an error")
	}
	if _, err := b.Read(context.Background(), signal.StreamSamples, 0, 0); err == nil {
		t.Fatal("read max 0: want an error")
	}
	if err := b.Ack(signal.Stream(200), 1); err == nil {
		t.Fatal("ack of an unknown stream: want an error")
	}
}

func testRestart(t *testing.T, im impl) {
	cfg := testConfig(t)
	b := im.open(t, cfg)
	appendT(t, b, signal.StreamSamples, rec("a"), rec("b"), rec("c"), rec("d"), rec("e"))
	appendT(t, b, signal.StreamStatus, rec("s"))
	if err := b.Ack(signal.StreamSamples, 2); err != nil {
		t.Fatal(err)
	}
	if err := b.Ack(signal.StreamStatus, 1); err != nil {
		t.Fatal(err)
	}
	if err := b.(MetaStore).PutMeta("k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = openT(t, im, cfg)
	got := readT(t, b, signal.StreamSamples, 0, 10)
	if len(got) != 3 || got[0].Seq != 3 || string(got[0].Data) != "c" {
		t.Fatalf("after restart, read = %v", got)
	}
	st := b.Stats()
	if s := st.Streams[signal.StreamSamples]; s.Acked != 2 || s.Records != 3 || s.Bytes != 3 || s.LastSeq != 5 {
		t.Fatalf("samples after restart: %+v", s)
	}
	if seqs := appendT(t, b, signal.StreamStatus, rec("s2")); seqs[0] != 2 {
		t.Fatalf("status sequence after restart = %d, want 2 (never reused)", seqs[0])
	}
	if v, ok, _ := b.(MetaStore).GetMeta("k"); !ok || string(v) != "v" {
		t.Fatalf("meta after restart = %q %v", v, ok)
	}
}

func testLastSeq(t *testing.T, im impl) {
	b := openT(t, im, testConfig(t))
	tail := b.(uplink.Tail)
	check := func(when string) {
		t.Helper()
		for st := range signal.NumStreams {
			if got, want := tail.LastSeq(st), b.Stats().Streams[st].LastSeq; got != want {
				t.Fatalf("%s: %s LastSeq = %d, Stats says %d", when, st, got, want)
			}
		}
	}
	check("empty")
	appendT(t, b, signal.StreamSamples, rec("a"), rec("b"), rec("c"))
	appendT(t, b, signal.StreamFeatures, rec("f"))
	check("after appends")
	if got := tail.LastSeq(signal.StreamSamples); got != 3 {
		t.Fatalf("samples LastSeq = %d, want 3", got)
	}
	if err := b.Ack(signal.StreamSamples, 3); err != nil {
		t.Fatal(err)
	}
	if err := b.Ack(signal.StreamFeatures, 1); err != nil {
		t.Fatal(err)
	}
	check("after acking everything")
	if got := tail.LastSeq(signal.NumStreams); got != 0 {
		t.Fatalf("LastSeq of an unknown stream = %d, want 0", got)
	}
}
