// Package e2e tests the agent's data path end to end across process crashes: the durable buffer
// (buffer.Open, Badger) feeding the uplink into a real JetStream server, with the agent killed by
// SIGKILL and restarted.
package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/gemba-io/gemba/buffer"
	"github.com/gemba-io/gemba/internal/testutil"
	gsig "github.com/gemba-io/gemba/signal"
	"github.com/gemba-io/gemba/uplink"
)

func TestMain(m *testing.M) {
	if os.Getenv("GEMBA_E2E_CHILD") != "" {
		os.Exit(child())
	}
	goleak.VerifyTestMain(m)
}

// child is the "agent": it appends chunks of 10 samples to a Badger buffer and runs the uplink.
// It prints "A <incarnation> <last value>" after each append returns (the record is durable),
// and exits 0 after SIGTERM once the uplink has settled. Modes: "flow" (2,000 samples/s),
// "burst" (as fast as appends go, for building a backlog), "idle" (no appends: replay only),
// "drain" (no appends; exit when the buffer is empty).
func child() int {
	inc, mode := os.Getenv("GEMBA_E2E_INC"), os.Getenv("GEMBA_E2E_MODE")
	if p := os.Getenv("GEMBA_E2E_CPUPROFILE"); p != "" && mode == "live" && os.Getenv("GEMBA_E2E_RATE") != "0" {
		// For finding where the live path's CPU goes: go tool pprof the file afterwards.
		if f, err := os.Create(p); err == nil {
			pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	bcfg := buffer.DefaultConfig()
	bcfg.Dir = os.Getenv("GEMBA_E2E_DIR")
	bcfg.MaxBytes = 256 << 20
	buf, err := buffer.Open(bcfg, buffer.Options{Logger: log})
	if err != nil {
		fmt.Fprintln(os.Stderr, "buffer:", err)
		return 2
	}
	defer buf.Close()
	ucfg := uplink.DefaultConfig()
	ucfg.NATS.Servers = []string{os.Getenv("GEMBA_E2E_NATS")}
	ucfg.NATS.CreateStream = true
	ucfg.NATS.ReconnectWait, ucfg.NATS.ReconnectMaxWait = 20*time.Millisecond, 200*time.Millisecond
	ucfg.PublishTimeout = 2 * time.Second
	ucfg.Heartbeat = 0
	tail := func(s gsig.Stream) uint64 { return buf.Stats().Streams[s].LastSeq }
	reg := prometheus.NewRegistry()
	up, err := uplink.New(ucfg, uplink.Identity{Agent: "gw1", Site: "plant1", ConfigVersion: "e2e"}, buf,
		uplink.Options{Logger: log, Tail: tail, Metrics: reg})
	if err != nil {
		fmt.Fprintln(os.Stderr, "uplink:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := up.Run(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "run:", err)
		}
	})
	out := bufio.NewWriter(os.Stdout)
	every := map[string]time.Duration{"flow": 5 * time.Millisecond, "burst": 0}
	if d, ok := every[mode]; ok {
		next := 0
		for ctx.Err() == nil {
			c := chunk(inc, next, 10)
			if _, err := buf.Append(ctx, gsig.StreamSamples, c); err != nil {
				break
			}
			next += 10
			fmt.Fprintf(out, "A %s %d\n", inc, next-1)
			out.Flush()
			if d > 0 {
				time.Sleep(d) // pacing the producer, not synchronisation
			}
		}
	}
	if mode == "live" {
		live(ctx, buf)
		mode = "drain"
	}
	if mode == "drain" {
		for ctx.Err() == nil && buf.Stats().Streams[gsig.StreamSamples].Records > 0 {
			time.Sleep(10 * time.Millisecond)
		}
		fmt.Fprintln(out, "DRAINED")
		out.Flush()
		stop()
	}
	<-ctx.Done()
	wg.Wait()
	if os.Getenv("GEMBA_E2E_DEBUG") != "" {
		printAckLatency(reg)
	}
	return 0
}

// live captures GEMBA_E2E_RATE samples/s for GEMBA_E2E_SECONDS and writes them the way the
// agent's writer does: the first sample after a write starts a 2 ms linger (agent.linger default), then everything
// captured so far becomes one buffer record (so a slow append makes the next record bigger).
func live(ctx context.Context, buf buffer.Buffer) {
	rate, _ := strconv.Atoi(os.Getenv("GEMBA_E2E_RATE"))
	secs, _ := strconv.Atoi(os.Getenv("GEMBA_E2E_SECONDS"))
	const linger = 2 * time.Millisecond
	start := time.Now()
	end := start.Add(time.Duration(secs) * time.Second)
	var (
		mu      sync.Mutex
		pending []gsig.Sample
		arrived = make(chan struct{}, 1)
		stopped = make(chan struct{})
	)
	go func() { // capture: rate samples/s, each stamped when captured
		defer close(stopped)
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		produced := 0
		for now := range t.C {
			if now.After(end) || ctx.Err() != nil {
				return
			}
			n := int(now.Sub(start).Seconds()*float64(rate)) - produced
			if n <= 0 {
				continue
			}
			mu.Lock()
			for i := range n {
				pending = append(pending, gsig.Sample{Signal: "line1.press.temperature", Time: time.Now(),
					Value: gsig.Int(int64(produced + i)), Source: "press/ns=2;s=T"})
			}
			mu.Unlock()
			produced += n
			select {
			case arrived <- struct{}{}:
			default:
			}
		}
	}()
	// Capture -> appended latency of the oldest sample of each record, reported on stdout so the
	// benchmark can separate the buffer's share of the end-to-end latency.
	var appendLat []time.Duration
	defer func() {
		if len(appendLat) > 0 {
			slices.Sort(appendLat)
			fmt.Printf("STAT append_p50_us=%d append_p99_us=%d append_max_us=%d\n", appendLat[len(appendLat)/2].Microseconds(),
				appendLat[len(appendLat)*99/100].Microseconds(), appendLat[len(appendLat)-1].Microseconds())
		}
	}()
	flush := func() bool {
		mu.Lock()
		ss := pending
		pending = nil
		mu.Unlock()
		if len(ss) == 0 {
			return true
		}
		c := gsig.AppendChunk(nil, &gsig.Chunk{Stream: gsig.StreamSamples, ConfigVersion: "bench", Count: len(ss),
			Oldest: ss[0].Time, Newest: ss[len(ss)-1].Time, Records: gsig.AppendSamplesJSON(nil, ss)})
		_, err := buf.Append(ctx, gsig.StreamSamples, c)
		appendLat = append(appendLat, time.Since(ss[0].Time))
		return err == nil
	}

	for {
		select {
		case <-arrived:
		case <-stopped:
			flush()
			return
		}
		time.Sleep(linger) // the writer's linger, as in agent/writer.go
		if !flush() {
			<-stopped
			return
		}
	}
}

// printAckLatency shows the uplink's publish -> PubAck histogram (debugging the live benchmark).
func printAckLatency(reg *prometheus.Registry) {
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != "gemba_uplink_publish_ack_seconds" {
			continue
		}
		h := mf.GetMetric()[0].GetHistogram()
		fmt.Fprintf(os.Stderr, "publish->PubAck: %d messages;", h.GetSampleCount())
		for _, b := range h.GetBucket() {
			fmt.Fprintf(os.Stderr, " <=%gms:%d", b.GetUpperBound()*1000, b.GetCumulativeCount())
		}
		fmt.Fprintln(os.Stderr)
	}
}

func chunk(inc string, first, n int) []byte {
	now := time.Now()
	ss := make([]gsig.Sample, n)
	for i := range ss {
		ss[i] = gsig.Sample{Signal: "e2e.inc" + inc, Time: now, Value: gsig.Int(int64(first + i)), Source: "e2e/child"}
	}
	return gsig.AppendChunk(nil, &gsig.Chunk{Stream: gsig.StreamSamples, ConfigVersion: "e2e", Count: n,
		Oldest: now, Newest: now, Records: gsig.AppendSamplesJSON(nil, ss)})
}

// agentProc is one child incarnation.
type agentProc struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	last  int // last value reported durable; -1 before the first
	done  chan struct{}
	lines chan string
}

func startAgent(t testing.TB, dir, natsURL, inc, mode string, env ...string) *agentProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.bench=^$")
	cmd.Env = append(os.Environ(), "GEMBA_E2E_CHILD=1", "GEMBA_E2E_DIR="+dir, "GEMBA_E2E_NATS="+natsURL,
		"GEMBA_E2E_INC="+inc, "GEMBA_E2E_MODE="+mode)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &agentProc{cmd: cmd, last: -1, done: make(chan struct{}), lines: make(chan string, 16)}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) == 3 && f[0] == "A" {
				v, _ := strconv.Atoi(f[2])
				p.mu.Lock()
				p.last = v
				p.mu.Unlock()
				continue
			}
			select {
			case p.lines <- sc.Text():
			default:
			}
		}
		io.Copy(io.Discard, stdout)
	}()
	return p
}

func (p *agentProc) reported() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last
}

// kill sends SIGKILL and reaps the process; what it printed before dying counts as durable.
func (p *agentProc) kill(t testing.TB) int {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.done
	p.cmd.Wait()
	return p.reported()
}

func (p *agentProc) waitExit(t testing.TB, within time.Duration) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(within):
		p.cmd.Process.Kill()
		t.Fatalf("agent did not exit within %s", within)
	}
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("agent exit: %v", err)
	}
}

func startNATS(t *testing.T, dir string, port int) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	return s
}

func streamMsgs(url string) uint64 {
	nc, err := nats.Connect(url)
	if err != nil {
		return 0
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, "GEMBA")
	if err != nil {
		return 0
	}
	return s.CachedInfo().State.Msgs
}

// TestCrashNothingLostNoDuplicates kills the agent with SIGKILL three times: during normal flow,
// while NATS is down (a backlog in the buffer), and in the middle of replaying that backlog with
// thousands of publishes in flight. Every sample whose append returned must be in the stream,
// and no buffer record and no sample may be there twice.
func TestCrashNothingLostNoDuplicates(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns agent processes")
	}
	natsDir, bufDir := t.TempDir(), t.TempDir()
	port := testutil.FreePort(t)
	ns := startNATS(t, natsDir, port)
	url := ns.ClientURL()
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	durable := map[string]int{} // incarnation -> last value reported durable

	// 1. Normal flow, killed while publishing.
	a := startAgent(t, bufDir, url, "1", "flow")
	testutil.WaitFor(t, 30*time.Second, "flow into the stream", func() bool { return streamMsgs(url) > 100 })
	durable["1"] = a.kill(t)

	// 2. NATS down: the agent keeps appending, then is killed with a backlog in its buffer.
	ns.Shutdown()
	ns.WaitForShutdown()
	a = startAgent(t, bufDir, url, "2", "burst")
	testutil.WaitFor(t, 60*time.Second, "backlog built during the outage", func() bool { return a.reported() >= 50000 })
	durable["2"] = a.kill(t)

	// 3. NATS back; the agent replays the backlog and is killed in the middle of it.
	ns = startNATS(t, natsDir, port)
	before := streamMsgs(url)
	a = startAgent(t, bufDir, url, "3", "idle")
	testutil.WaitFor(t, 30*time.Second, "replay under way", func() bool { return streamMsgs(url) > before+300 })
	atKill := streamMsgs(url)
	a.kill(t)
	durable["3"] = -1
	t.Logf("killed during replay with %d of about %d messages stored", atKill, before+uint64(durable["2"]+1)/10)

	// 4. Restart and drain.
	a = startAgent(t, bufDir, url, "4", "drain")
	a.waitExit(t, 120*time.Second)
	durable["4"] = -1

	verify(t, url, durable)
}

// verify reads the whole stream: each buffer sequence once, each sample at most once, and every
// sample reported durable present.
func verify(t *testing.T, url string, durable map[string]int) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, "GEMBA")
	if err != nil {
		t.Fatal(err)
	}
	total := st.CachedInfo().State.Msgs
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	seqs := map[uint64]int{}
	values := map[string]map[int64]int{}
	var read uint64
	for read < total {
		batch, err := cons.Fetch(500, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			read++
			b, err := gsig.DecodeBatch(m.Data())
			if err != nil {
				t.Fatalf("message %d: %v", read, err)
			}
			seqs[b.FirstSeq]++
			for _, s := range b.Samples {
				v, _ := s.Value.Int()
				if values[s.Signal] == nil {
					values[s.Signal] = map[int64]int{}
				}
				values[s.Signal][v]++
			}
		}
		if err := batch.Error(); err != nil && n == 0 {
			t.Fatalf("fetch after %d of %d: %v", read, total, err)
		}
	}
	dups := 0
	for seq, k := range seqs {
		if k > 1 {
			dups++
			if dups < 10 {
				t.Errorf("buffer seq %d stored %d times", seq, k)
			}
		}
	}
	for sig, vs := range values {
		for v, k := range vs {
			if k > 1 {
				t.Errorf("%s value %d stored %d times", sig, v, k)
			}
		}
	}
	for inc, last := range durable {
		vs := values["e2e.inc"+inc]
		missing := 0
		for v := 0; v <= last; v++ {
			if vs[int64(v)] == 0 {
				missing++
			}
		}
		if missing > 0 {
			t.Errorf("incarnation %s: %d of %d durable samples missing from the stream", inc, missing, last+1)
		}
		t.Logf("incarnation %s: %d samples durable, %d in the stream", inc, last+1, len(vs))
	}
	t.Logf("stream: %d messages, %d distinct buffer sequences, %d duplicated", total, len(seqs), dups)
}
