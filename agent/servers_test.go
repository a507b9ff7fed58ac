package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopcua/opcua/server"
	"github.com/gopcua/opcua/ua"
	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/gemba-io/gemba/internal/testutil"

	_ "github.com/gemba-io/gemba/collectors/all" // the real collectors, for the tests against real servers
)

// Real servers for the reload and health tests: gopcua's OPC UA server and an embedded NATS.

const testNSU = "urn:gemba:agenttest"

// opcChildEnv makes the test binary an OPC UA server (see TestMain): "port,period,name,name…".
// A server in a child process can be killed for real (SIGKILL: the kernel closes its sockets, as
// when a PLC or its gateway dies); gopcua's Close in-process leaves the client's channel open.
const opcChildEnv = "GEMBA_AGENT_TEST_OPC_SERVER"

// opcServer is gopcua's OPC UA server (security None, anonymous) in a child process on a fixed
// port, so it can be killed and started again where the collector expects it. Its variables are
// int64 counters the child increments every period (0: never).
type opcServer struct {
	t      *testing.T
	port   int
	period time.Duration
	names  []string

	mu  sync.Mutex
	cmd *exec.Cmd
}

func startOPC(t *testing.T, port int, period time.Duration, names ...string) *opcServer {
	t.Helper()
	o := &opcServer{t: t, port: port, period: period, names: names}
	o.start()
	t.Cleanup(o.kill)
	return o
}

func (o *opcServer) url() string { return fmt.Sprintf("opc.tcp://127.0.0.1:%d", o.port) }

func (o *opcServer) node(name string) string { return "nsu=" + testNSU + ";s=" + name }

func (o *opcServer) start() {
	o.t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d,%s,%s", opcChildEnv, o.port, o.period, strings.Join(o.names, ",")))
	if err := cmd.Start(); err != nil {
		o.t.Fatal(err)
	}
	o.mu.Lock()
	o.cmd = cmd
	o.mu.Unlock()
	testutil.WaitFor(o.t, 60*time.Second, "the OPC UA server child listening", func() bool {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", o.port), time.Second)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
}

// kill SIGKILLs the server.
func (o *opcServer) kill() {
	o.mu.Lock()
	cmd := o.cmd
	o.cmd = nil
	o.mu.Unlock()
	if cmd != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
}

// runOPCChild serves until killed.
func runOPCChild(spec string) int {
	parts := strings.Split(spec, ",")
	port, err := strconv.Atoi(parts[0])
	if err != nil || len(parts) < 2 {
		fmt.Fprintln(os.Stderr, "bad", opcChildEnv, spec)
		return 2
	}
	period, err := time.ParseDuration(parts[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "bad period", err)
		return 2
	}
	srv := server.New(
		server.EndPoint("127.0.0.1", port),
		server.EnableSecurity("None", ua.MessageSecurityModeNone),
		server.EnableAuthMode(ua.UserTokenTypeAnonymous),
		server.SetLogger(slog.New(slog.DiscardHandler)),
	)
	ns := server.NewNodeNameSpace(srv, testNSU)
	var mu sync.Mutex
	vals := map[string]int64{}
	var ids []*ua.NodeID
	for _, name := range parts[2:] {
		n := ns.AddNewVariableStringNode(name, func() *ua.DataValue {
			mu.Lock()
			defer mu.Unlock()
			return &ua.DataValue{EncodingMask: ua.DataValueValue | ua.DataValueSourceTimestamp,
				Value: ua.MustVariant(vals[name]), SourceTimestamp: time.Now()}
		})
		ns.Objects().AddRef(n, server.RefTypeIDHasComponent, true)
		ids = append(ids, n.ID())
	}
	if err := srv.Start(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "opc ua server:", err)
		return 1
	}
	if period <= 0 {
		select {}
	}
	for range time.Tick(period) {
		mu.Lock()
		for _, name := range parts[2:] {
			vals[name]++
		}
		mu.Unlock()
		for _, id := range ids {
			srv.ChangeNotification(id)
		}
	}
	return 0
}

// countingProxy forwards TCP connections to a server and counts them: a collector that keeps its
// connection through a reload opens none.
type countingProxy struct {
	ln       net.Listener
	target   string
	accepted atomic.Int64
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    []net.Conn
}

func startProxy(t *testing.T, target string) *countingProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &countingProxy{ln: ln, target: target}
	p.wg.Go(p.serve)
	t.Cleanup(p.close)
	return p
}

func (p *countingProxy) addr() string { return p.ln.Addr().String() }

func (p *countingProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.accepted.Add(1)
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		pipe := func(dst, src net.Conn) {
			_, _ = io.Copy(dst, src)
			dst.Close()
			src.Close()
		}
		p.wg.Go(func() { pipe(u, c) })
		p.wg.Go(func() { pipe(c, u) })
	}
}

func (p *countingProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func startNATS(t *testing.T) *natsserver.Server {
	t.Helper()
	s, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s
}

// startMosquitto runs Debian's mosquitto on a free port (anonymous, unlimited queues) until the
// test ends. Missing, it skips the test outside CI and fails it under CI, as the MQTT interop
// tests do (scripts/install-peers.sh installs it).
func startMosquitto(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		if _, e := os.Stat("/usr/sbin/mosquitto"); e == nil {
			bin, err = "/usr/sbin/mosquitto", nil
		}
	}
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("mosquitto is required under CI (scripts/install-peers.sh)")
		}
		t.Skip("mosquitto not installed (scripts/install-peers.sh installs it); CI fails here")
	}
	port := testutil.FreePort(t)
	dir := t.TempDir()
	conf := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\nuser root\nmax_queued_messages 0\nmax_inflight_messages 0\nlog_dest none\n", port)
	if err := os.WriteFile(dir+"/mosquitto.conf", []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", dir+"/mosquitto.conf")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	testutil.WaitFor(t, 10*time.Second, "mosquitto listening", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return addr
}
