package hubbench

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub/state/features"
	"github.com/gemba-io/gemba/hub/state/kvkey"
	"github.com/gemba-io/gemba/internal/testutil"
)

// BenchmarkLatency is the latency target (publish by an agent → value readable in the store, p99 ≤
// 10 ms at 5,000 records/s): agents publish their windows as they close, spread evenly over the
// window, at 5,000 feature records/s in total, for 10 s (the first 2 s
// not counted). A record is readable when its value is in the feature store's KV bucket: this process
// watches the bucket as another replica would, and takes the time from just before the agent's
// publish to the update's arrival. Variants: few agents with big chunks (810 records, 106 KiB), many with small
// (98). Run with -benchtime 1x.
func BenchmarkLatency(b *testing.B) {
	for _, v := range []struct {
		name string
		p    plant
	}{
		{"6agents-810records", plant{agents: 6, lines: 5, machines: 4, fields: 10, skus: 50}},
		{"50agents-98records", plant{agents: 50, lines: 1, machines: 4, fields: 6, skus: 50}},
	} {
		b.Run(v.name, func(b *testing.B) {
			for b.Loop() {
				latencyRound(b, v.p, 5000, 10*time.Second, 2*time.Second)
			}
		})
	}
}

func latencyRound(b *testing.B, p plant, rate int, runFor, warmup time.Duration) {
	dir := b.TempDir()
	cfg := hubConfig(b, p, dir, testutil.FreePort(b))
	offline(b, dir, func(js jetstream.JetStream) { agentsStream(b, js) })
	b.StopTimer()
	h := startHub(b, cfg)
	defer h.halt(b)
	nc, js := connect(b, "nats://"+cfg.NATS.Embedded.Listen)
	defer nc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Values are readable once on the feature log: this process follows it as another replica would.
	log := make(chan *nats.Msg, 1<<16)
	sub, err := nc.ChanSubscribe(featureLog+">", log)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()

	// The window that makes the agents' records add up to rate per second.
	window := time.Duration(float64(time.Second) * float64(p.agents*p.perWindow()) / float64(rate))
	windows := int(runFor / window)
	counted := int(warmup/window) + 1 // first window counted
	type msgKey struct {
		agent string
		seq   uint64
	}
	var mu sync.Mutex
	sent := map[msgKey]time.Time{}
	// Every timed record's arrival at the watcher; with sent and acked (the server's ack to the
	// publisher: stored in the agents' stream) it splits the latency into the server's part and
	// the hub's.
	type arrival struct {
		k  msgKey
		at time.Time
	}
	var arrived []arrival
	acked := map[msgKey]time.Time{}
	var acks sync.WaitGroup
	lastSeen := map[string]uint64{} // per agent, the latest window of its first signal's mean
	probe := map[string]string{}    // KV key of that feature → agent
	for a := range p.agents {
		probe[kvkey.Join("mean", fmt.Sprintf("%s.%s.f0", p.line(a, 0), machineNames[0]))] = p.agent(a)
	}
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		var lr features.LogReader
		for {
			var m *nats.Msg
			select {
			case m = <-log:
			case <-ctx.Done():
				return
			}
			at := time.Now()
			lines, err := lr.Lines(m.Header, m.Data)
			if err != nil {
				b.Error(err)
				continue
			}
			for line := range bytes.SplitSeq(lines, []byte{'\n'}) {
				agent, seq, ok := lineageOf(line)
				if !ok {
					continue
				}
				mu.Lock()
				if _, ok := sent[msgKey{agent, seq}]; ok && seq >= uint64(counted) {
					arrived = append(arrived, arrival{msgKey{agent, seq}, at}) // every value of a log message is readable when it arrives
				}
				if a, ok := probe[keyOf(line)]; ok {
					lastSeen[a] = seq
				}
				mu.Unlock()
			}
		}
	}()

	t0 := time.Now().Truncate(time.Second)
	start := time.Now()
	cpu0 := cpuTime()
	sched0 := readSched()
	p.paced(windows, window, start, func(wi, a int, now time.Time) {
		bt := p.batch(a, wi, t0, window, now)
		m := msg(bt)
		mu.Lock()
		sent[msgKey{bt.Agent, bt.FirstSeq}] = now
		mu.Unlock()
		f, err := js.PublishMsgAsync(m)
		if err != nil {
			b.Fatal(err)
		}
		whenStored(ctx, &acks, f, func(at time.Time) {
			mu.Lock()
			acked[msgKey{bt.Agent, bt.FirstSeq}] = at
			mu.Unlock()
		})
	})
	el := time.Since(start)
	testutil.WaitFor(b, time.Minute, "every agent's last window in the store", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for a := range p.agents {
			if lastSeen[p.agent(a)] != uint64(windows) {
				return false
			}
		}
		return true
	})
	cpu := cpuTime() - cpu0
	schedQ, schedMax, _, gcMax := readSched().since(sched0, 0.99)
	drained(b, js, time.Minute)
	acks.Wait()
	mu.Lock()
	var ls, stored, hub []time.Duration
	for _, a := range arrived {
		ls = append(ls, a.at.Sub(sent[a.k]))
		if ack, ok := acked[a.k]; ok {
			stored, hub = append(stored, ack.Sub(sent[a.k])), append(hub, a.at.Sub(ack))
		}
	}
	mu.Unlock()
	slices.Sort(ls)
	slices.Sort(stored)
	slices.Sort(hub)
	if len(ls) < (windows-counted)*p.agents*p.perWindow()/2 {
		b.Fatalf("only %d updates observed for %d windows of %d agents", len(ls), windows-counted, p.agents)
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	qs := func(ds []time.Duration, f float64) float64 { return ms(ds[int(f*float64(len(ds)-1))]) }
	q := func(f float64) float64 { return qs(ls, f) }
	records := windows * p.agents * p.perWindow()
	b.ReportMetric(float64(records)/el.Seconds(), "records/s")
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(q(1), "max-ms")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(records), "cpu-ns/record")
	if len(stored) > 0 {
		b.ReportMetric(qs(stored, 0.99), "stored-p99-ms")
		b.ReportMetric(qs(hub, 0.99), "hub-p99-ms")
		b.Logf("of which publish → stored in the agents' stream (its ack) p50 %.2f / p99 %.2f ms, stored → readable (the hub) p50 %.2f / p99 %.2f / max %.2f ms (%d updates)",
			qs(stored, 0.5), qs(stored, 0.99), qs(hub, 0.5), qs(hub, 0.99), qs(hub, 1), len(hub))
	}
	b.ReportMetric(ms(schedMax), "sched-max-ms")
	b.Logf("%d records (%d updates timed) at %.0f records/s, window %s: p50 %.2f ms, p99 %.2f ms, max %.2f ms; "+
		"goroutines waited for a core p99 %.2f ms, max %.2f ms; longest GC pause %.2f ms",
		records, len(ls), float64(records)/el.Seconds(), window, q(0.5), q(0.99), q(1), ms(schedQ), ms(schedMax), ms(gcMax))
	b.StartTimer()
}

// featureLog is the subject prefix of the hub's feature log (hub/state/features/log.go).
const featureLog = "gemba_features.GEMBA_FEATURES."

// keyOf returns the store key (kvkey.Join(name, key)) of one feature log line, read by scanning
// as lineageOf does: decoding every line with encoding/json took a fifth of this process's CPU,
// which the hub it measures shares.
func keyOf(line []byte) string {
	_, rest, ok := bytes.Cut(line, []byte(`"name":"`))
	if !ok {
		return ""
	}
	name, rest, ok := bytes.Cut(rest, []byte(`"`))
	if !ok {
		return ""
	}
	_, rest, ok = bytes.Cut(rest, []byte(`"key":"`))
	if !ok {
		return ""
	}
	key, _, ok := bytes.Cut(rest, []byte(`"`))
	if !ok {
		return ""
	}
	return kvkey.Join(string(name), string(key))
}

// lineageOf picks the agent and first_seq out of a stored value without decoding all of it: this
// process shares the CPU with the hub it measures.
func lineageOf(v []byte) (agent string, seq uint64, ok bool) {
	_, rest, ok := bytes.Cut(v, []byte(`"lineage":{"agent":"`))
	if !ok {
		return "", 0, false
	}
	a, rest, ok := bytes.Cut(rest, []byte(`"`))
	if !ok {
		return "", 0, false
	}
	_, rest, ok = bytes.Cut(rest, []byte(`"first_seq":`))
	if !ok {
		return "", 0, false
	}
	end := bytes.IndexByte(rest, ',')
	if end < 0 {
		return "", 0, false
	}
	n, err := strconv.ParseUint(string(rest[:end]), 10, 64)
	return string(a), n, err == nil
}
