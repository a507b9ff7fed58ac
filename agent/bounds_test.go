package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gemba-io/gemba/buffer"
	"github.com/gemba-io/gemba/collectors"
	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
)

// sequence is a test collector type that emits a fixed list of samples, one Emit each, then waits.
var (
	seqMu   sync.Mutex
	seqs    = map[string][]signal.Sample{}
	seqDone = map[string]chan struct{}{}
)

type seqConfig struct {
	Key string `yaml:"key"`
}

type seqCollector struct{ key string }

func (s seqCollector) Run(ctx context.Context, emit collectors.Emitter) error {
	seqMu.Lock()
	list, done := seqs[s.key], seqDone[s.key]
	seqMu.Unlock()
	for _, smp := range list {
		if err := emit.Emit(ctx, []signal.Sample{smp}); err != nil {
			return err
		}
	}
	close(done)
	<-ctx.Done()
	return nil
}

func init() {
	collectors.Register(collectors.Factory{
		Type:      "sequence",
		NewConfig: func() any { return &seqConfig{} },
		New: func(_ string, cfg any, _ collectors.Deps) (collectors.Collector, error) {
			return seqCollector{key: cfg.(*seqConfig).Key}, nil
		},
	})
}

func registerSeq(key string, list []signal.Sample) chan struct{} {
	seqMu.Lock()
	defer seqMu.Unlock()
	seqs[key] = list
	seqDone[key] = make(chan struct{})
	return seqDone[key]
}

// bufferedRecords reads every chunk of a stream left in the buffer.
func bufferedRecords(t *testing.T, b buffer.Buffer, st signal.Stream) (samples []signal.Sample, features []signal.Feature) {
	t.Helper()
	var after uint64
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		recs, err := b.Read(ctx, st, after, 1000)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) || len(recs) == 0 {
			return samples, features
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			c, err := signal.ParseChunk(r.Data)
			if err != nil {
				t.Fatal(err)
			}
			if st == signal.StreamFeatures {
				fs, err := signal.DecodeFeatures(c.Records)
				if err != nil {
					t.Fatal(err)
				}
				features = append(features, fs...)
			} else {
				ss, err := signal.DecodeSamples(c.Records)
				if err != nil {
					t.Fatal(err)
				}
				samples = append(samples, ss...)
			}
			after = r.Seq
		}
	}
}

// Issue 12 point 7: one sample dated in year 5138 (or before 2000) is flagged Bad with the reason,
// counted per collector, logged, stored, and does not stop the signal's feature windows.
func TestOutOfBoundsTimeFlaggedCountedAndWindowsContinue(t *testing.T) {
	for _, c := range []struct {
		name  string
		bad   time.Time
		bound string
	}{
		{"future", time.Date(5138, 3, 1, 0, 0, 0, 0, time.UTC), "future"},
		{"past", time.Date(1969, 12, 31, 23, 59, 59, 0, time.UTC), "past"},
	} {
		t.Run(c.name, func(t *testing.T) {
			base := time.Now().UTC().Truncate(time.Second).Add(-10 * time.Second)
			smp := func(at time.Time, v int64) signal.Sample {
				return signal.Sample{Signal: "press.temp", Time: at, Value: signal.Int(v), Source: "plc:press"}
			}
			key := "bounds-" + c.name
			done := registerSeq(key, []signal.Sample{
				smp(base.Add(100*time.Millisecond), 1),
				smp(c.bad, 999),
				smp(base.Add(500*time.Millisecond), 3),
				smp(base.Add(1500*time.Millisecond), 5), // closes window [base, base+1s)
			})
			h := start(t, baseConfig+fmt.Sprintf(`
collectors:
  - {name: plc, type: sequence, key: %s}
features:
  - {signal: press.temp, window: 1s, compute: [count, mean]}
`, key))
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("collector did not emit its samples")
			}
			testutil.WaitFor(t, 10*time.Second, "the window's features", func() bool {
				_, fs := bufferedRecords(t, h.buf, signal.StreamFeatures)
				return len(fs) >= 2
			})
			_, fs := bufferedRecords(t, h.buf, signal.StreamFeatures)
			got := map[string]float64{}
			for _, f := range fs {
				if f.WindowStart.Equal(base) {
					got[f.Name] = f.Value
				}
			}
			if got["count"] != 2 || got["mean"] != 2 {
				t.Errorf("window at %s: %v (all: %+v), want count 2 mean 2", base, got, fs)
			}
			ss, _ := bufferedRecords(t, h.buf, signal.StreamSamples)
			var flagged []signal.Sample
			for _, s := range ss {
				if v, _ := s.Value.Int(); v == 999 {
					flagged = append(flagged, s)
				}
			}
			if len(flagged) != 1 || flagged[0].Quality != signal.Bad || !strings.Contains(flagged[0].Reason, "agent.timestamps") {
				t.Errorf("out-of-bounds sample stored as %+v, want once, Bad, with the reason", flagged)
			}
			if v := testutil.Metric(t, h.agent.Registry(), "gemba_writer_out_of_bounds_samples_total", "collector", "plc", "bound", c.bound); v != 1 {
				t.Errorf("gemba_writer_out_of_bounds_samples_total{collector=plc,bound=%s} = %v, want 1", c.bound, v)
			}
			if v := testutil.Metric(t, h.agent.Registry(), "gemba_features_samples_total", "result", "late"); v != 0 {
				t.Errorf("late samples = %v, want 0", v)
			}
		})
	}
}
