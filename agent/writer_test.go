package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gemba-io/gemba/buffer"
	"github.com/gemba-io/gemba/collectors"
	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
)

// failingBuffer wraps a memory buffer and fails appends with err while it is set.
type failingBuffer struct {
	buffer.Buffer
	mu  sync.Mutex
	err error
}

func (f *failingBuffer) Append(ctx context.Context, st signal.Stream, recs ...[]byte) ([]uint64, error) {
	f.mu.Lock()
	err := f.err
	f.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return f.Buffer.Append(ctx, st, recs...)
}

func startWriter(t *testing.T, b buffer.Buffer, fold func([]signal.Sample) []signal.Sample) (*writer, *metrics) {
	t.Helper()
	m := newMetrics()
	w := newWriter(context.Background(), b, "cfgv1", time.Millisecond, 64<<10, slog.New(slog.NewTextHandler(io.Discard, nil)), m)
	w.fold = fold
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return w, m
}

func sample(sig string, v int64) signal.Sample {
	return signal.Sample{Signal: sig, Time: time.Unix(1700000000, v).UTC(), Value: signal.Int(v)}
}

func TestWriterConcurrentEmitsKeepPerCallerOrder(t *testing.T) {
	mem := buffer.NewMemory(buffer.DefaultConfig())
	defer mem.Close()
	w, _ := startWriter(t, mem, nil)
	var wg sync.WaitGroup
	const callers, per = 8, 200
	for c := range callers {
		wg.Go(func() {
			for i := range per {
				if err := w.Emit(context.Background(), []signal.Sample{sample(fmt.Sprint("s", c), int64(i))}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	got := bufferedValues(t, mem)
	for c := range callers {
		vals := got[fmt.Sprint("s", c)]
		if len(vals) != per {
			t.Fatalf("caller %d: %d values buffered, want %d", c, len(vals), per)
		}
		for i, v := range vals {
			if v != int64(i) {
				t.Fatalf("caller %d: value %d at %d", c, v, i)
			}
		}
	}
}

func TestWriterFoldsAndForwardsWhatTheEngineReturns(t *testing.T) {
	mem := buffer.NewMemory(buffer.DefaultConfig())
	defer mem.Close()
	var folded []string
	w, _ := startWriter(t, mem, func(s []signal.Sample) []signal.Sample {
		keep := s[:0]
		for _, x := range s {
			folded = append(folded, x.Signal)
			if x.Signal != "aggregated.only" {
				keep = append(keep, x)
			}
		}
		return keep
	})
	in := []signal.Sample{sample("raw", 1), sample("aggregated.only", 2), sample("raw", 3)}
	if err := w.Emit(context.Background(), in); err != nil {
		t.Fatal(err)
	}
	if in[1].Signal != "aggregated.only" {
		t.Fatal("writer modified the caller's slice")
	}
	w.AddFeatures([]signal.Feature{{Signal: "raw", Name: "mean", Value: 2, Count: 2, WindowEnd: time.Unix(1700000060, 0)}})
	got := bufferedValues(t, mem)
	if len(got["raw"]) != 2 || len(got["aggregated.only"]) != 0 || len(folded) != 3 {
		t.Fatalf("buffered %v, folded %v", got, folded)
	}
	eventually(t, 5*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		recs, err := mem.Read(ctx, signal.StreamFeatures, 0, 10)
		if err != nil {
			return err
		}
		c, err := signal.ParseChunk(recs[0].Data)
		if err != nil {
			return err
		}
		fs, err := signal.DecodeFeatures(c.Records)
		if err != nil || len(fs) != 1 || fs[0].Name != "mean" || c.ConfigVersion != "cfgv1" {
			return fmt.Errorf("features %v %v", fs, err)
		}
		return nil
	})
}

func TestWriterFullBufferIsPolicyNotError(t *testing.T) {
	fb := &failingBuffer{Buffer: buffer.NewMemory(buffer.DefaultConfig())}
	defer fb.Close()
	w, m := startWriter(t, fb, nil)
	fb.err = fmt.Errorf("stream samples: %w", buffer.ErrFull)
	if err := w.Emit(context.Background(), []signal.Sample{sample("x", 1)}); err != nil {
		t.Fatalf("drop_newest refusal must release the source, got %v", err)
	}
	if n := testutil.Metric(t, m.reg, "gemba_buffer_refused_records_total"); n != 1 {
		t.Fatalf("refused counter %v", n)
	}
	fb.mu.Lock()
	fb.err = errors.New("write /var/lib/gemba: no space left on device")
	fb.mu.Unlock()
	err := w.Emit(context.Background(), []signal.Sample{sample("x", 2)})
	if err == nil {
		t.Fatal("an I/O error must reach the source so it does not acknowledge")
	}
	if n := testutil.Metric(t, m.reg, "gemba_buffer_write_errors_total"); n != 1 {
		t.Fatalf("write error counter %v", n)
	}
}

func TestEmitAfterStopFails(t *testing.T) {
	mem := buffer.NewMemory(buffer.DefaultConfig())
	defer mem.Close()
	m := newMetrics()
	w := newWriter(context.Background(), mem, "v", 0, 1<<20, slog.New(slog.DiscardHandler), m)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	w.run(ctx)
	if err := w.Emit(context.Background(), []signal.Sample{sample("x", 1)}); !errors.Is(err, errStopping) {
		t.Fatalf("got %v", err)
	}
}

func TestWriterSplitsLargeEmitsIntoChunks(t *testing.T) {
	mem := buffer.NewMemory(buffer.DefaultConfig())
	defer mem.Close()
	m := newMetrics()
	w := newWriter(context.Background(), mem, "v", time.Millisecond, 4<<10, slog.New(slog.DiscardHandler), m)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	// One emit of ~60 KiB must become many chunks of at most 4 KiB, every sample kept in order.
	big := make([]signal.Sample, 1000)
	for i := range big {
		big[i] = sample("bulk", int64(i))
	}
	if err := w.Emit(context.Background(), big); err != nil {
		t.Fatal(err)
	}
	recs, err := mem.Read(context.Background(), signal.StreamSamples, 0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) < 10 {
		t.Fatalf("%d chunks for ~60 KiB with max_chunk 4 KiB", len(recs))
	}
	var n int64
	for _, r := range recs {
		if len(r.Data) > 4<<10+128 {
			t.Fatalf("chunk of %d bytes", len(r.Data))
		}
		c, err := signal.ParseChunk(r.Data)
		if err != nil {
			t.Fatal(err)
		}
		ss, err := signal.DecodeSamples(c.Records)
		if err != nil || len(ss) != c.Count {
			t.Fatalf("chunk decodes to %d samples (header %d): %v", len(ss), c.Count, err)
		}
		for _, s := range ss {
			if v, _ := s.Value.Int(); v != n {
				t.Fatalf("sample %d has value %d", n, v)
			}
			n++
		}
	}
	if n != 1000 {
		t.Fatalf("%d samples stored", n)
	}

	// A single value larger than a chunk is kept as a Bad sample without the value.
	huge := signal.Sample{Signal: "blob", Time: time.Unix(1700000000, 0), Value: signal.String(string(make([]byte, 64<<10)))}
	if err := w.Emit(context.Background(), []signal.Sample{huge}); err != nil {
		t.Fatalf("an oversized value must not block its source: %v", err)
	}
	recs, err = mem.Read(context.Background(), signal.StreamSamples, recs[len(recs)-1].Seq, 10)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := signal.ParseChunk(recs[0].Data)
	ss, err := signal.DecodeSamples(c.Records)
	if err != nil || len(ss) != 1 || ss[0].Quality != signal.Bad || !strings.Contains(ss[0].Reason, "exceeds agent.max_chunk") {
		t.Fatalf("oversized sample stored as %+v (%v)", ss, err)
	}
	if got := testutil.Metric(t, m.reg, "gemba_writer_oversized_samples_total"); got != 1 {
		t.Fatalf("oversized counter %v", got)
	}
}

// TestWriterSplitsFeaturesBySize: features with long labels are cut by their encoded size, not a
// guessed count, so no chunk passes max_chunk.
func TestWriterSplitsFeaturesBySize(t *testing.T) {
	mem := buffer.NewMemory(buffer.DefaultConfig())
	defer mem.Close()
	w := newWriter(context.Background(), mem, "v", time.Millisecond, 4<<10, slog.New(slog.DiscardHandler), newMetrics())
	lbl := signal.Labels{{Key: "machine", Value: strings.Repeat("m", 300)}}
	fs := make([]signal.Feature, 200)
	for i := range fs {
		fs[i] = signal.Feature{Signal: "s", Name: "mean", WindowStart: time.Unix(int64(i), 0), WindowEnd: time.Unix(int64(i+1), 0),
			Value: float64(i), Count: 1, Labels: lbl}
	}
	w.AddFeatures(fs)
	w.flushFeatures()
	recs, err := mem.Read(context.Background(), signal.StreamFeatures, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, r := range recs {
		if len(r.Data) > 4<<10+128 {
			t.Fatalf("features chunk of %d bytes with max_chunk 4 KiB", len(r.Data))
		}
		c, err := signal.ParseChunk(r.Data)
		if err != nil {
			t.Fatal(err)
		}
		got, err := signal.DecodeFeatures(c.Records)
		if err != nil || len(got) != c.Count {
			t.Fatalf("chunk decodes to %d features (header %d): %v", len(got), c.Count, err)
		}
		for _, f := range got {
			if f.Value != float64(n) {
				t.Fatalf("feature %d has value %v: order lost", n, f.Value)
			}
			n++
		}
	}
	if n != len(fs) {
		t.Fatalf("%d features stored of %d", n, len(fs))
	}
}

// EmitMeta stores the meta keys with the samples' chunk (one Badger transaction in the Store),
// also when the feature engine forwards none of the samples; the supervisor's counting wrapper
// passes it through, so a collector sees it.
func TestWriterEmitMetaStoresMetaWithSamples(t *testing.T) {
	cfg := buffer.DefaultConfig()
	cfg.Dir = t.TempDir()
	cfg.MaxBytes = 64 << 20
	st, err := buffer.Open(cfg, buffer.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	forward := true
	w, _ := startWriter(t, st, func(s []signal.Sample) []signal.Sample {
		if forward {
			return s
		}
		return s[:0]
	})
	sup := newSupervisor(collectors.Spec{Name: "c"}, w, Backoff{}, slog.New(slog.DiscardHandler))
	var emit any = countingEmitter{sup}
	me, ok := emit.(metaEmitter)
	if !ok {
		t.Fatal("the collectors' emitter hides EmitMeta")
	}
	if err := me.EmitMeta(context.Background(), []signal.Sample{sample("x", 1)}, []buffer.Meta{{Key: "k", Value: []byte("v1")}}); err != nil {
		t.Fatal(err)
	}
	if v, ok, err := me.GetMeta("k"); err != nil || !ok || string(v) != "v1" {
		t.Fatalf("meta after EmitMeta = %q %v %v", v, ok, err)
	}
	if n := st.Stats().Streams[signal.StreamSamples].Records; n != 1 {
		t.Fatalf("%d records, want the one chunk", n)
	}
	if n := testutil.Metric(t, sup.reg, "gemba_collector_samples_total"); n != 1 {
		t.Fatalf("samples counted %v, want 1", n)
	}
	forward = false
	if err := me.EmitMeta(context.Background(), []signal.Sample{sample("x", 2)}, []buffer.Meta{{Key: "k", Value: []byte("v2")}}); err != nil {
		t.Fatal(err)
	}
	if v, _, _ := me.GetMeta("k"); string(v) != "v2" {
		t.Fatalf("meta of a batch the feature engine took whole = %q, want v2", v)
	}
	if n := st.Stats().Streams[signal.StreamSamples].Records; n != 1 {
		t.Fatalf("%d records, want still 1", n)
	}
}
