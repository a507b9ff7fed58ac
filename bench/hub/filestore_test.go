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
