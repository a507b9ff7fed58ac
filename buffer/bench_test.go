package buffer

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gemba-io/gemba/signal"
)

// The agent appends chunks of samples: 100 samples of ~100 bytes make one 10,000-byte record.
const (
	benchSamplesPerRecord = 100
	benchSampleBytes      = 100
	benchRecordBytes      = benchSamplesPerRecord * benchSampleBytes
)

func benchRecord() []byte {
	r := make([]byte, benchRecordBytes)
	for i := range r {
		r[i] = byte('a' + i%26)
	}
	return r
}

func benchStore(b *testing.B, sync string) *Store {
	b.Helper()
	cfg := DefaultConfig()
	cfg.Dir = filepath.Join(b.TempDir(), "buf")
	cfg.MaxBytes = 64 << 30 // the benchmarks measure the write path, not eviction
	cfg.Sync = sync
	s, err := Open(cfg, Options{Logger: testLogger(b)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	return s
}

func reportSamples(b *testing.B, records int) {
	b.ReportMetric(float64(records*benchSamplesPerRecord)/b.Elapsed().Seconds(), "samples/s")
}

// BenchmarkAppend: 16 concurrent appenders (collectors) of one 100-sample record each; group
// commit merges them into one Badger write and, with sync: always, one fsync.
func BenchmarkAppend(b *testing.B) {
	for _, mode := range []string{SyncBatch, SyncAlways, SyncNone} {
		b.Run("sync="+mode, func(b *testing.B) {
			s := benchStore(b, mode)
			rec := benchRecord()
			b.SetBytes(benchRecordBytes)
			b.SetParallelism(8)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := s.Append(context.Background(), signal.StreamSamples, rec); err != nil {
						b.Error(err)
						return
					}
				}
			})
			reportSamples(b, b.N)
			s.mu.Lock()
			b.ReportMetric(float64(s.grouped)/float64(max(s.groups, 1)), "appends/commit")
			s.mu.Unlock()
		})
	}
}

// BenchmarkRawFile is the ceiling: the same records appended to one os.File by one goroutine, with
// an fsync after every write (what sync: always costs without group commit) and with none.
func BenchmarkRawFile(b *testing.B) {
	for _, fsync := range []bool{true, false} {
		b.Run(fmt.Sprintf("fsync_each=%v", fsync), func(b *testing.B) {
			f, err := os.Create(filepath.Join(b.TempDir(), "raw"))
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			rec := benchRecord()
			b.SetBytes(benchRecordBytes)
			b.ResetTimer()
			for range b.N {
				if _, err := f.Write(rec); err != nil {
					b.Fatal(err)
				}
				if fsync {
					if err := f.Sync(); err != nil {
						b.Fatal(err)
					}
				}
			}
			reportSamples(b, b.N)
		})
	}
}

// BenchmarkReadAck reads 100 records at a time and acks them, as the uplink does. Refills happen
// with the timer stopped.
func BenchmarkReadAck(b *testing.B) {
	s := benchStore(b, SyncNone)
	rec := benchRecord()
	batch := make([][]byte, 100)
	for i := range batch {
		batch[i] = rec
	}
	ctx := context.Background()
	var after uint64
	b.SetBytes(benchRecordBytes)
	b.ResetTimer()
	for done := 0; done < b.N; {
		if s.Stats().Streams[signal.StreamSamples].Records == 0 {
			b.StopTimer()
			for range 100 { // 100 MB
				if _, err := s.Append(ctx, signal.StreamSamples, batch...); err != nil {
					b.Fatal(err)
				}
			}
			b.StartTimer()
		}
		recs, err := s.Read(ctx, signal.StreamSamples, after, min(100, b.N-done))
		if err != nil {
			b.Fatal(err)
		}
		after = recs[len(recs)-1].Seq
		if err := s.Ack(signal.StreamSamples, after); err != nil {
			b.Fatal(err)
		}
		done += len(recs)
	}
	reportSamples(b, b.N)
}

// BenchmarkFillDrain fills 512 MiB, acks the older half, lets the store reclaim, and reports disk
// bytes over live payload bytes (target ≤ 1.5).
func BenchmarkFillDrain(b *testing.B) {
	for range b.N {
		b.StopTimer()
		s := benchStore(b, SyncNone)
		b.StartTimer()
		rec := benchRecord()
		batch := make([][]byte, 100)
		for i := range batch {
			batch[i] = rec
		}
		const records = 512 << 20 / benchRecordBytes
		for range records / 100 {
			if _, err := s.Append(context.Background(), signal.StreamSamples, batch...); err != nil {
				b.Fatal(err)
			}
		}
		if err := s.Ack(signal.StreamSamples, records/2); err != nil {
			b.Fatal(err)
		}
		s.reclaim()
		st := s.Stats()
		live := float64(st.Streams[signal.StreamSamples].Bytes)
		b.ReportMetric(float64(st.DiskSize)/live, "disk/live")
		b.ReportMetric(float64(st.DiskSize)/(1<<20), "disk-MiB")
		b.ReportMetric(live/(1<<20), "live-MiB")
		b.StopTimer()
		_ = s.Close()
		b.StartTimer()
	}
}

const rssChildEnv = "GEMBA_BUFFER_RSS_DIR"

// BenchmarkRSS runs a child process (this test binary) that buffers 1 GiB of 100-sample records,
// then reads it all back without acking, and reports its memory from /proc/self/status at both points.
func BenchmarkRSS(b *testing.B) {
	for range b.N {
		cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.bench=^$")
		cmd.Env = append(os.Environ(), rssChildEnv+"="+filepath.Join(b.TempDir(), "buf"))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			b.Fatalf("rss child: %v: %s", err, stderr.String())
		}
		var res map[string]float64
		if err := json.Unmarshal(out, &res); err != nil {
			b.Fatalf("rss child output %q: %v", out, err)
		}
		for k, v := range res {
			b.ReportMetric(v, k)
		}
	}
}

// rssChild is the child of BenchmarkRSS.
func rssChild() {
	cfg := DefaultConfig()
	cfg.Dir = os.Getenv(rssChildEnv)
	cfg.Sync = SyncBatch
	s, err := Open(cfg, Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	rec := benchRecord()
	batch := make([][]byte, 100)
	for i := range batch {
		batch[i] = rec
	}
	ctx := context.Background()
	for range 1 << 30 / (100 * benchRecordBytes) {
		if _, err := s.Append(ctx, signal.StreamSamples, batch...); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
	}
	res := map[string]float64{}
	for k, v := range procStatus() {
		res["buffered-"+k] = v
	}
	trimMappings(s.cfg.Dir) // what the maintenance goroutine does every second
	for k, v := range procStatus() {
		res["trimmed-"+k] = v
	}
	var after uint64
	for {
		c, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		recs, err := s.Read(c, signal.StreamSamples, after, 100)
		cancel()
		if err != nil {
			break
		}
		after = recs[len(recs)-1].Seq
	}
	for k, v := range procStatus() {
		res["read-"+k] = v
	}
	trimMappings(s.cfg.Dir)
	for k, v := range procStatus() {
		res["read-trimmed-"+k] = v
	}
	res["buffered-GiB"] = float64(s.Stats().Streams[signal.StreamSamples].Bytes) / (1 << 30)
	_ = s.Close()
	_ = json.NewEncoder(os.Stdout).Encode(res)
}

// procStatus returns VmRSS, RssAnon, RssFile and VmHWM in MiB.
func procStatus() map[string]float64 {
	data, _ := os.ReadFile("/proc/self/status")
	out := map[string]float64{}
	for _, l := range strings.Split(string(data), "\n") {
		name, val, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		switch name {
		case "VmRSS", "RssAnon", "RssFile", "VmHWM":
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(val), " kB"), 64)
			out[name+"-MiB"] = kb / 1024
		}
	}
	return out
}
