package hubbench

import (
	"context"
	"fmt"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

// BenchmarkFileStoreWrites isolates what sets the 810-record latency tails (#13, #14) without the
// hub: one embedded server, one stream as the agents' (file storage, default 8 MiB blocks), 160
// publishes of 106 KiB (an 810-record chunk; ~2 blocks), each awaited. With a reader (a consumer
// reading every message, as the hub reads the agents' stream) a new block does not reuse the last
// one's write buffer (nats-server: tryExpireWriteCache reuses it only if the block was never read),
// so its cache grows 256 KiB → 1 → 4 → 8 MiB, each step a new buffer from a pool that GC empties;
// without a reader the buffer is reused. first-touch-ms/MiB is this machine's cost of memory never
// touched before (page faults), measured in the same run: the 4 → 8 MiB step costs about 8 MiB of
// it. Reports the writes' p50 and max and how many took over 5 ms.
func BenchmarkFileStoreWrites(b *testing.B) {
	for _, reader := range []bool{true, false} {
		b.Run(map[bool]string{true: "reader", false: "no-reader"}[reader], func(b *testing.B) {
			for b.Loop() {
				fileStoreRound(b, reader)
			}
		})
	}
}

func fileStoreRound(b *testing.B, reader bool) {
	b.StopTimer()
	defer b.StartTimer()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	n := natstest.JetStream(b)
	defer n.Stop()
	nc, js := connect(b, n.URL())
	defer nc.Close()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "W", Subjects: []string{"w.>"}, Storage: jetstream.FileStorage,
		Duplicates: 20 * time.Minute, MaxAge: 7 * 24 * time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	seen := make(chan uint64, 1024)
	if reader {
		cons, err := st.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "r", AckPolicy: jetstream.AckExplicitPolicy})
		if err != nil {
			b.Fatal(err)
		}
		cc, err := cons.Consume(func(m jetstream.Msg) {
			_ = m.Ack()
			if md, err := m.Metadata(); err == nil {
				seen <- md.Sequence.Stream
			}
		})
		if err != nil {
			b.Fatal(err)
		}
		defer cc.Stop()
	}
	const writes = 160
	payload := make([]byte, 106<<10)
	ds := make([]time.Duration, 0, writes)
	for i := range writes {
		t := time.Now()
		ack, err := js.Publish(ctx, "w.f", payload, jetstream.WithMsgID(fmt.Sprint("m", i)))
		if err != nil {
			b.Fatal(err)
		}
		ds = append(ds, time.Since(t))
		if reader { // the reader has it (the block was read after the write) before the next write
			waitSeq(ctx, b, seen, ack.Sequence)
		}
	}
	slices.Sort(ds)
	slow := 0
	for _, d := range ds {
		if d > 5*time.Millisecond {
			slow++
		}
	}
	touch := firstTouch(b, 16)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(ds[writes/2]), "p50-ms")
	b.ReportMetric(ms(ds[writes-1]), "max-ms")
	b.ReportMetric(float64(slow), "writes-over-5ms")
	b.ReportMetric(ms(touch)/16, "first-touch-ms/MiB")
	b.Logf("reader %v: %d writes of 106 KiB, p50 %.2f ms, max %.2f ms, %d over 5 ms; first touch of 16 MiB here: %.1f ms",
		reader, writes, ms(ds[writes/2]), ms(ds[writes-1]), slow, ms(touch))
}

func waitSeq(ctx context.Context, b *testing.B, seen <-chan uint64, seq uint64) {
	for {
		select {
		case s := <-seen:
			if s >= seq {
				return
			}
		case <-ctx.Done():
			b.Fatalf("the reader never got message %d", seq)
		}
	}
}

// firstTouch is how long writing one byte per page of mib MiB of fresh anonymous memory takes: the
// page faults a new buffer costs before it holds anything.
func firstTouch(b *testing.B, mib int) time.Duration {
	m, err := syscall.Mmap(-1, 0, mib<<20, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = syscall.Munmap(m) }()
	t := time.Now()
	for i := 0; i < len(m); i += 4096 {
		m[i] = 1
	}
	return time.Since(t)
}

// BenchmarkKVUpdateColdKeys measures what a write costs to a KV key whose block is not in memory
// (docs/BENCHMARKS.md, Session 8: the inventory's writes spread over its bucket). A history-1
// bucket of 120,000 keys × 400 B (~13 blocks of 4 MiB) is written and the server restarted (no block
// in memory); then 120 plain puts spread over the bucket; the server restarted again; then 240
// compare-and-sets side by side, alternating: one to a key spread over the bucket (cold), one to the
// same key (hot), each with the revision its key was written at, so no read precedes it. Reports p50
// and max of each and how many took over 5 ms: about one per block for the spread writes (the first
// to touch a block loads it), none for the one key.
func BenchmarkKVUpdateColdKeys(b *testing.B) {
	for b.Loop() {
		kvColdRound(b)
	}
}

func kvColdRound(b *testing.B) {
	b.StopTimer()
	defer b.StartTimer()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	n := natstest.JetStream(b)
	defer n.Stop()
	nc, js := connect(b, n.URL())
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "COLD", History: 1, Storage: jetstream.FileStorage})
	if err != nil {
		b.Fatal(err)
	}
	const keys, updates = 120_000, 240
	val := make([]byte, 400)
	revs := make([]uint64, keys)
	for i := range keys {
		f, err := js.PublishAsync("$KV.COLD.k"+fmt.Sprint(i), val)
		if err != nil {
			b.Fatal(err)
		}
		go func() {
			if a := <-f.Ok(); a != nil {
				revs[i] = a.Sequence // each goroutine its own index
			}
		}()
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		b.Fatal("fixture not acknowledged")
	}
	testutil.WaitFor(b, time.Minute, "every revision noted", func() bool {
		for _, r := range revs {
			if r == 0 {
				return false
			}
		}
		return true
	})
	nc.Close()
	n.Stop()
	n.Start() // nothing of the bucket in memory
	nc, js = connect(b, n.URL())
	defer nc.Close()
	if kv, err = js.KeyValue(ctx, "COLD"); err != nil {
		b.Fatal(err)
	}
	var cold, hot, puts []time.Duration
	hotKey := keys - 1
	for i := range updates / 2 {
		// A plain put (no compare-and-set) to a cold key in a block none of the others touch: the
		// removal of the key's previous value (history 1) alone.
		k := (i*997 + 499) % (keys - 1)
		t := time.Now()
		if _, err := kv.Put(ctx, "k"+fmt.Sprint(k), val); err != nil {
			b.Fatal(err)
		}
		puts = append(puts, time.Since(t))
	}
	// The compare-and-sets after another restart, so that the puts loaded nothing for them.
	nc.Close()
	n.Stop()
	n.Start()
	nc, js = connect(b, n.URL())
	defer nc.Close()
	if kv, err = js.KeyValue(ctx, "COLD"); err != nil {
		b.Fatal(err)
	}
	for i := range updates / 2 {
		k := (i * 997) % (keys - 1) // spread over the bucket: another block most times
		t := time.Now()
		r, err := kv.Update(ctx, "k"+fmt.Sprint(k), val, revs[k])
		if err != nil {
			b.Fatalf("update k%d at %d: %v", k, revs[k], err)
		}
		cold, revs[k] = append(cold, time.Since(t)), r
		t = time.Now()
		r, err = kv.Update(ctx, "k"+fmt.Sprint(hotKey), val, revs[hotKey])
		if err != nil {
			b.Fatal(err)
		}
		hot, revs[hotKey] = append(hot, time.Since(t)), r
	}
	slices.Sort(cold)
	slices.Sort(hot)
	slices.Sort(puts)
	over := func(ds []time.Duration) (n int) {
		for _, d := range ds {
			if d > 5*time.Millisecond {
				n++
			}
		}
		return n
	}
	st, err := js.Stream(ctx, "KV_COLD")
	if err != nil {
		b.Fatal(err)
	}
	blocks := st.CachedInfo().State.Bytes/(4<<20) + 1
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(float64(over(cold)), "cold-over-5ms")
	b.ReportMetric(float64(over(hot)), "hot-over-5ms")
	b.ReportMetric(float64(over(puts)), "put-over-5ms")
	b.ReportMetric(ms(cold[len(cold)/2]), "cold-p50-ms")
	b.ReportMetric(ms(cold[len(cold)-1]), "cold-max-ms")
	b.ReportMetric(ms(hot[len(hot)/2]), "hot-p50-ms")
	b.ReportMetric(ms(hot[len(hot)-1]), "hot-max-ms")
	b.Logf("compare-and-set after a restart, %d keys in ~%d blocks of 4 MiB: spread over the bucket p50 %.2f / max %.2f ms, %d over 5 ms; one key p50 %.2f / max %.2f ms, %d over 5 ms (%d each); plain puts spread over the bucket after a restart p50 %.2f / max %.2f ms, %d over 5 ms",
		keys, blocks, ms(cold[len(cold)/2]), ms(cold[len(cold)-1]), over(cold), ms(hot[len(hot)/2]), ms(hot[len(hot)-1]), over(hot), len(cold),
		ms(puts[len(puts)/2]), ms(puts[len(puts)-1]), over(puts))
}
