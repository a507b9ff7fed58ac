package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/chaos"
	"github.com/gemba-io/gemba/internal/promtext"
	gsignal "github.com/gemba-io/gemba/signal"
)

type sideResult struct {
	side         string
	throughput   float64 // msgs/s end to end
	cpuPerMsg    float64 // µs of the side's process per message (throughput run)
	p50, p99     float64 // ms, fixed-rate run
	achievedRate float64
	rssMiB       float64
	lost, dups   int
}

func (r sideResult) String() string {
	return fmt.Sprintf("%s: %.0f msgs/s, %.2f µs CPU/msg, p50 %.2f ms, p99 %.2f ms at %.0f msgs/s, peak RSS %.1f MiB, lost %d, dups %d",
		r.side, r.throughput, r.cpuPerMsg, r.p50, r.p99, r.achievedRate, r.rssMiB, r.lost, r.dups)
}

func median(rs []sideResult) sideResult {
	if len(rs) == 0 {
		return sideResult{}
	}
	med := func(f func(sideResult) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	out := sideResult{side: rs[0].side,
		throughput: med(func(r sideResult) float64 { return r.throughput }), cpuPerMsg: med(func(r sideResult) float64 { return r.cpuPerMsg }),
		p50: med(func(r sideResult) float64 { return r.p50 }), p99: med(func(r sideResult) float64 { return r.p99 }),
		achievedRate: med(func(r sideResult) float64 { return r.achievedRate }), rssMiB: med(func(r sideResult) float64 { return r.rssMiB })}
	for _, r := range rs {
		out.lost += r.lost
		out.dups += r.dups
	}
	return out
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitPort(addr string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s not listening after %v", addr, d)
}

type proc struct {
	cmd  *exec.Cmd
	done chan error
}

func start(dir, name string, args ...string) (*proc, error) {
	lf, err := os.Create(filepath.Join(dir, filepath.Base(name)+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = chaos.ChildAttr() // nothing outlives a killed benchmark
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{cmd: cmd, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait(); lf.Close() }()
	return p, nil
}

func (p *proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// cpu is the process's user+system CPU time so far.
func (p *proc) cpu() time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64) // fields 14 and 15 of stat, counted after the name
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ is 100 on Linux
}

// peakRSS is VmHWM in MiB.
func (p *proc) peakRSS() float64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			kb, _ := strconv.ParseFloat(strings.Fields(l)[1], 64)
			return kb / 1024
		}
	}
	return 0
}

const agentYAML = `agent: {id: bench, site: bench, log: {level: warn, format: text}}
http: {listen: "%s"}
buffer: {dir: "%s", max_bytes: 2GiB, when_full: drop_oldest, sync: batch}
uplink:
  nats: {servers: ["%s"], stream: GEMBA, create_stream: true}
  heartbeat: 5s
collectors:
  - name: bench
    type: mqtt
    broker: tcp://%s
    client_id: bench-agent
    qos: 1
    subscriptions:
      - topic: "bench/#"
        format: json
        signal: bench.{field}
        time_field: ts
        time_format: unix_us
        fields: [{path: v, type: int}]
`

func runSide(ctx context.Context, o options, side, bin, mosq, dir string) (sideResult, error) {
	res := sideResult{side: side}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return res, err
	}
	natsPort, mqttPort, httpPort := freePort(), freePort(), freePort()
	natsURL := fmt.Sprintf("nats://127.0.0.1:%d", natsPort)
	mqttAddr := fmt.Sprintf("127.0.0.1:%d", mqttPort)
	ns, err := start(dir, filepath.Join(bin, "nats-server"), "-a", "127.0.0.1", "-p", strconv.Itoa(natsPort), "-js", "-sd", filepath.Join(dir, "js"))
	if err != nil {
		return res, err
	}
	defer ns.stop()
	// The same broker settings for both sides: a large in-flight window, so that an agent that acks
	// after its durable write is not held to mosquitto's default of 20 unacknowledged messages.
	conf := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\nmax_inflight_messages 1000\nmax_queued_messages 0\nlog_dest stderr\nlog_type error\n", mqttPort)
	if os.Geteuid() == 0 {
		conf += "user root\n"
	}
	if err := os.WriteFile(filepath.Join(dir, "mosquitto.conf"), []byte(conf), 0o644); err != nil {
		return res, err
	}
	mq, err := start(dir, mosq, "-c", filepath.Join(dir, "mosquitto.conf"))
	if err != nil {
		return res, err
	}
	defer mq.stop()
	if err := waitPort(fmt.Sprintf("127.0.0.1:%d", natsPort), 10*time.Second); err != nil {
		return res, err
	}
	if err := waitPort(mqttAddr, 10*time.Second); err != nil {
		return res, err
	}
	nc, err := nats.Connect(natsURL)
	if err != nil {
		return res, err
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)

	var p *proc
	var stream string
	var count func() (uint64, error) // samples stored in the stream so far
	switch side {
	case "bridge":
		stream = "BENCH"
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: stream, Subjects: []string{"bench.>"}, Storage: jetstream.FileStorage}); err != nil {
			return res, err
		}
		if p, err = start(dir, filepath.Join(bin, "bridge"), "-mqtt", "tcp://"+mqttAddr, "-nats", natsURL); err != nil {
			return res, err
		}
		count = func() (uint64, error) {
			si, err := js.Stream(ctx, stream)
			if err != nil {
				return 0, err
			}
			return si.CachedInfo().State.Msgs, nil
		}
	default:
		stream = "GEMBA"
		httpAddr := fmt.Sprintf("127.0.0.1:%d", httpPort)
		cfg := filepath.Join(dir, "agent.yaml")
		if err := os.WriteFile(cfg, []byte(fmt.Sprintf(agentYAML, httpAddr, filepath.Join(dir, "buffer"), natsURL, mqttAddr)), 0o644); err != nil {
			return res, err
		}
		if p, err = start(dir, filepath.Join(bin, "gemba-agent"), "run", "-c", cfg); err != nil {
			return res, err
		}
		// Samples in the stream: what the collector took in, less what still waits in the buffer
		// (the buffer acks only after JetStream's PubAck).
		count = func() (uint64, error) {
			m, err := promtext.Scrape("http://" + httpAddr + "/metrics")
			if err != nil {
				return 0, err
			}
			in, depth := m.Sum("gemba_collector_samples_total"), m.Sum("gemba_buffer_records", "stream", "samples")
			if depth > 0 {
				return 0, nil // batches are not samples: report nothing until the buffer is empty
			}
			return uint64(in), nil
		}
	}
	defer p.stop()

	pub, err := newPublisher("tcp://"+mqttAddr, o.publishers)
	if err != nil {
		return res, err
	}
	defer pub.close()
	// Warm up until one message goes through, which also proves the side subscribed; what was
	// published before that had no subscriber and is left out of the loss count.
	var base uint64
	deadline := time.Now().Add(60 * time.Second)
	for base == 0 {
		if time.Now().After(deadline) {
			return res, errors.New("warm-up: nothing reached the stream in 60s")
		}
		if err := pub.send(1, 0); err != nil {
			return res, err
		}
		time.Sleep(300 * time.Millisecond)
		base, _ = count()
	}
	time.Sleep(time.Second)
	if base, err = count(); err != nil {
		return res, err
	}
	pub.reset()

	cpu0, t0 := p.cpu(), time.Now()
	if err := pub.send(o.n, 0); err != nil {
		return res, err
	}
	if err := waitCount(count, base+uint64(o.n), 5*time.Minute); err != nil {
		return res, fmt.Errorf("throughput run: %w", err)
	}
	el := time.Since(t0)
	res.throughput = float64(o.n) / el.Seconds()
	res.cpuPerMsg = float64((p.cpu() - cpu0).Microseconds()) / float64(o.n)

	si, err := js.Stream(ctx, stream)
	if err != nil {
		return res, err
	}
	fromSeq := si.CachedInfo().State.LastSeq + 1
	nRate := int(float64(o.rate) * o.rateFor.Seconds())
	rt0 := time.Now()
	if err := pub.send(nRate, o.rate); err != nil {
		return res, err
	}
	res.achievedRate = float64(nRate) / time.Since(rt0).Seconds()
	if err := waitCount(count, base+uint64(o.n+nRate), 5*time.Minute); err != nil {
		return res, fmt.Errorf("fixed-rate run: %w", err)
	}
	res.rssMiB = p.peakRSS()

	lat, ids, err := readStream(ctx, js, stream, side, fromSeq)
	if err != nil {
		return res, err
	}
	slices.Sort(lat)
	if len(lat) > 0 {
		res.p50 = lat[len(lat)/2]
		res.p99 = lat[len(lat)*99/100]
	}
	sent := pub.acked()
	for id := range sent {
		switch n := ids[id]; {
		case n == 0:
			res.lost++
		case n > 1:
			res.dups += n - 1
		}
	}
	return res, nil
}

func waitCount(count func() (uint64, error), want uint64, d time.Duration) error {
	deadline := time.Now().Add(d)
	var got uint64
	for time.Now().Before(deadline) {
		n, err := count()
		if err == nil {
			got = n
			if n >= want {
				return nil
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("%d of %d samples in the stream after %v", got, want, d)
}

// readStream reads the whole stream: each sample's id (the JSON "v") with how often it is there, and
// the latency (ms) of the samples stored from fromSeq on: store time minus the sample's own time.
func readStream(ctx context.Context, js jetstream.JetStream, stream, side string, fromSeq uint64) ([]float64, map[int64]int, error) {
	ids := map[int64]int{}
	var lat []float64
	err := chaos.EachMessage(ctx, js, stream, "", func(msg jetstream.Msg) error {
		md, err := msg.Metadata()
		if err != nil {
			return err
		}
		add := func(id int64, at time.Time) {
			ids[id]++
			if md.Sequence.Stream >= fromSeq {
				lat = append(lat, float64(md.Timestamp.Sub(at).Microseconds())/1000)
			}
		}
		if side == "bridge" {
			id, ts, ok := parsePayload(msg.Data())
			if !ok {
				return fmt.Errorf("bridge message %d: %q", md.Sequence.Stream, msg.Data())
			}
			add(id, time.UnixMicro(ts))
			return nil
		}
		b, err := gsignal.DecodeBatch(msg.Data())
		if err != nil {
			return fmt.Errorf("stream message %d: %w", md.Sequence.Stream, err)
		}
		for _, s := range b.Samples {
			if v, ok := s.Value.Int(); ok {
				add(v, s.Time)
			}
		}
		return nil
	})
	return lat, ids, err
}

// parsePayload reads {"ts":<µs>,"v":<id>} as the publisher writes it.
func parsePayload(b []byte) (id, ts int64, ok bool) {
	s := string(b)
	i, j := strings.Index(s, `"ts":`), strings.Index(s, `,"v":`)
	if i < 0 || j < i {
		return 0, 0, false
	}
	ts, err1 := strconv.ParseInt(s[i+5:j], 10, 64)
	id, err2 := strconv.ParseInt(strings.TrimSuffix(s[j+5:], "}"), 10, 64)
	return id, ts, err1 == nil && err2 == nil
}

// publisher sends QoS 1 JSON messages from several clients and remembers which ids the broker
// acknowledged.
type publisher struct {
	clients []paho.Client
	next    atomic.Int64
	mu      sync.Mutex
	ok      map[int64]bool
}

func newPublisher(broker string, n int) (*publisher, error) {
	p := &publisher{ok: map[int64]bool{}}
	for i := range n {
		o := paho.NewClientOptions().AddBroker(broker).SetClientID(fmt.Sprintf("bench-pub-%d", i)).
			SetCleanSession(true).SetOrderMatters(false).SetConnectTimeout(5 * time.Second)
		c := paho.NewClient(o)
		if t := c.Connect(); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
			p.close()
			return nil, fmt.Errorf("publisher connect: %v", t.Error())
		}
		p.clients = append(p.clients, c)
	}
	return p, nil
}

// send publishes n messages split over the clients, at rate msgs/s (0: as fast as acknowledged,
// each client keeping up to 500 in flight), and waits for every PUBACK.
func (p *publisher) send(n, rate int) error {
	var wg sync.WaitGroup
	per := n / len(p.clients)
	for k, c := range p.clients {
		cnt := per
		if k == 0 {
			cnt += n - per*len(p.clients)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			window := make(chan struct{}, 500)
			var inner sync.WaitGroup
			start := time.Now()
			for i := range cnt {
				if rate > 0 {
					// Pace by the schedule, not by sleeps per message: at 10 k msgs/s a timer per message
					// would be too coarse.
					due := start.Add(time.Duration(float64(i) * float64(len(p.clients)) / float64(rate) * float64(time.Second)))
					if d := time.Until(due); d > 0 {
						time.Sleep(d)
					}
				}
				id := p.next.Add(1)
				payload := fmt.Appendf(nil, `{"ts":%d,"v":%d}`, time.Now().UnixMicro(), id)
				window <- struct{}{}
				tok := c.Publish("bench/telemetry", 1, false, payload)
				inner.Add(1)
				go func() {
					defer inner.Done()
					defer func() { <-window }()
					if tok.WaitTimeout(60*time.Second) && tok.Error() == nil {
						p.mu.Lock()
						p.ok[id] = true
						p.mu.Unlock()
					}
				}()
			}
			inner.Wait()
		}()
	}
	wg.Wait()
	if len(p.acked()) == 0 {
		return errors.New("the broker acknowledged nothing")
	}
	return nil
}

func (p *publisher) reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ok = map[int64]bool{}
}

func (p *publisher) acked() map[int64]bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ok
}

func (p *publisher) close() {
	for _, c := range p.clients {
		c.Disconnect(250)
	}
}
