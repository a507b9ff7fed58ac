package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/gemba-io/gemba/agent"
	_ "github.com/gemba-io/gemba/collectors/all" // the agent child runs every collector type
	"github.com/gemba-io/gemba/internal/promtext"
)

// EnvAgent names the agent config a re-executed chaos binary runs instead of its own main.
const EnvAgent = "GEMBA_CHAOS_AGENT"

// MaybeRunAgent runs the agent and exits when the process was started as the chaos suite's agent
// child (EnvAgent set); otherwise it returns at once. Call it first in main and TestMain: the suite
// re-executes its own binary, so the agent can be SIGKILLed without building gemba-agent.
func MaybeRunAgent() {
	cfgFile := os.Getenv(EnvAgent)
	if cfgFile == "" {
		return
	}
	if err := runAgent(cfgFile); err != nil {
		fmt.Fprintln(os.Stderr, "chaos agent:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func runAgent(cfgFile string) error {
	cfg, err := agent.Load(cfgFile, os.LookupEnv)
	if err != nil {
		return err
	}
	lvl, _ := agent.ParseLevel(cfg.Agent.Log.Level)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	return agent.New(cfg, agent.Options{Logger: agent.NewLogger(os.Stderr, cfg.Agent.Log.Format, lvl)}).Run(ctx)
}

// agentProc is the agent child process.
type agentProc struct {
	cmd  *exec.Cmd
	done chan error
	http string
}

func startAgent(cfgFile, httpAddr, logFile string) (*agentProc, error) {
	lf, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	exe, err := os.Executable()
	if err != nil {
		lf.Close()
		return nil, err
	}
	cmd := exec.Command(exe, "-test.run=^$") // a test binary must not run tests if it ever got this far
	cmd.Env = append(os.Environ(), EnvAgent+"="+cfgFile)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = ChildAttr()
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start agent: %w", err)
	}
	a := &agentProc{cmd: cmd, done: make(chan error, 1), http: httpAddr}
	go func() { a.done <- cmd.Wait(); lf.Close() }()
	return a, nil
}

// kill sends SIGKILL and waits for the process to end.
func (a *agentProc) kill() {
	_ = a.cmd.Process.Kill()
	<-a.done
}

// stop asks the agent to stop (SIGTERM) and waits up to d before killing it.
func (a *agentProc) stop(d time.Duration) error {
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-a.done:
		return err
	case <-time.After(d):
		a.kill()
		return errors.New("agent did not stop in time: killed")
	}
}

func (a *agentProc) exited() bool {
	select {
	case err := <-a.done:
		a.done <- err
		return true
	default:
		return false
	}
}

// metrics scrapes the agent's Prometheus metrics.
func (a *agentProc) metrics() (promtext.Metrics, error) {
	return promtext.Scrape("http://" + a.http + "/metrics")
}

// natsServer is the hub side: an embedded JetStream server restartable on the same port and store.
type natsServer struct {
	port  int
	store string
	srv   *server.Server
}

func (n *natsServer) start() error {
	s, err := StartJetStream(n.port, n.store)
	if err != nil {
		return err
	}
	n.srv = s
	return nil
}

// StartJetStream runs an embedded NATS server with JetStream on 127.0.0.1:port, keeping its
// streams in storeDir, and returns once it accepts connections.
func StartJetStream(port int, storeDir string) (*server.Server, error) {
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: storeDir,
		NoLog: true, NoSigs: true})
	if err != nil {
		return nil, err
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, errors.New("nats not ready after 10s")
	}
	return s, nil
}

func (n *natsServer) stop() {
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv.WaitForShutdown()
		n.srv = nil
	}
}

func (n *natsServer) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.port) }

// mosquitto is Debian's broker as a child process, with persistence so that a graceful restart
// keeps the agent's persistent session and its queued QoS 1 messages.
type mosquitto struct {
	bin, conf string
	port      int
	cmd       *exec.Cmd
	done      chan error
	log       io.Writer
}

// MosquittoPath finds the broker binary ("" when it is not installed).
func MosquittoPath() string {
	for _, p := range []string{"/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	p, _ := exec.LookPath("mosquitto")
	return p
}

func newMosquitto(bin, dir string, port int, log io.Writer) (*mosquitto, error) {
	conf := filepath.Join(dir, "mosquitto.conf")
	// As root mosquitto drops to the user "mosquitto", which cannot write our temp dir: stay root.
	// max_queued_messages 0 lifts the per-client queue limit (default 1000): while the agent is
	// down the broker must keep everything it acknowledged.
	text := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location %s/\n"+
		"autosave_interval 1\nmax_queued_messages 0\nmax_inflight_messages 100\nlog_dest stderr\nlog_type error\nlog_type warning\n",
		port, dir)
	if os.Geteuid() == 0 {
		text += "user root\n"
	}
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		return nil, err
	}
	return &mosquitto{bin: bin, conf: conf, port: port, log: log}, nil
}

func (m *mosquitto) start() error {
	m.cmd = exec.Command(m.bin, "-c", m.conf)
	m.cmd.Stdout, m.cmd.Stderr = m.log, m.log
	m.cmd.SysProcAttr = ChildAttr()
	if err := m.cmd.Start(); err != nil {
		return fmt.Errorf("start mosquitto: %w", err)
	}
	m.done = make(chan error, 1)
	go func() { m.done <- m.cmd.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", m.addr(), 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case err := <-m.done:
			return fmt.Errorf("mosquitto exited: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return errors.New("mosquitto not listening after 10s")
}

// stop ends the broker with sig (SIGTERM saves the persistence file) and waits for it.
func (m *mosquitto) stop(sig syscall.Signal) {
	if m.cmd == nil {
		return
	}
	_ = m.cmd.Process.Signal(sig)
	select {
	case <-m.done:
	case <-time.After(10 * time.Second):
		_ = m.cmd.Process.Kill()
		<-m.done
	}
	m.cmd = nil
}

func (m *mosquitto) addr() string { return fmt.Sprintf("127.0.0.1:%d", m.port) }
