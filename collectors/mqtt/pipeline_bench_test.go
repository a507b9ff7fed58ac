package mqtt

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gemba-io/gemba/collectors"
	"github.com/gemba-io/gemba/signal"
)

// benchMsg is a QoS 1 message whose Ack counts.
type benchMsg struct {
	topic   string
	payload []byte
	acked   *atomic.Int64
}

func (m benchMsg) Duplicate() bool   { return false }
func (m benchMsg) Qos() byte         { return 1 }
func (m benchMsg) Retained() bool    { return false }
func (m benchMsg) Topic() string     { return m.topic }
func (m benchMsg) MessageID() uint16 { return 1 }
func (m benchMsg) Payload() []byte   { return m.payload }
func (m benchMsg) Ack()              { m.acked.Add(1) }

type nopEmitter struct{}

func (nopEmitter) Emit(context.Context, []signal.Sample) error { return nil }

// BenchmarkPipeline is the collector's own path per message without network or disk: the worker
// maps it, the committer hands the batch to a no-op buffer and acknowledges it. One op is one
// QoS 1 message (~100 bytes, 4 fields + time) on one of 1,000 topics, payloads changing.
func BenchmarkPipeline(b *testing.B) {
	cfg := NewConfig()
	cfg.Broker = "tcp://127.0.0.1:1"
	cfg.Subscriptions = []Subscription{{Topic: "bench/+", Format: FormatJSON, Signal: "line1.{topic.1}.{field}",
		Fields:    []Field{{Path: "temp"}, {Path: "pressure"}, {Path: "rpm"}, {Path: "running"}},
		TimeField: "ts", TimeFormat: "unix_ms"}}
	c, err := New("bench", cfg, collectors.Deps{Agent: "a"})
	if err != nil {
		b.Fatal(err)
	}
	topics := make([]string, 1000)
	for i := range topics {
		topics[i] = fmt.Sprintf("bench/m%d", i)
	}
	payloads := make([][]byte, 16)
	for i := range payloads {
		payloads[i] = fmt.Appendf(nil, `{"ts":%d,"temp":21.5%d,"pressure":101.325,"rpm":1450,"running":true,"sku":"SKU-00042"}`, 1700000000000+i, i)
	}
	var acked atomic.Int64
	queue := make(chan inMsg, 2*cfg.MaxBatch)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.worker(ctx, nopEmitter{}, queue, func(string) {}); close(done) }()
	match := []int{0}
	n := int64(0)
	b.ReportAllocs()
	b.ResetTimer()
	// Not b.Loop: its timer stops when the loop ends, and the drain below is part of the cost.
	for range b.N {
		queue <- inMsg{msg: benchMsg{topic: topics[n%1000], payload: payloads[(n/1000)%16], acked: &acked}, recv: time.Now(), match: match}
		n++
	}
	for acked.Load() < n {
		time.Sleep(100 * time.Microsecond) // a benchmark, not a test: just drain
	}
	b.StopTimer()
	cancel()
	<-done
}
