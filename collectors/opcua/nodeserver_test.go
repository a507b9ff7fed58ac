package opcua

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gemba-io/gemba/internal/testutil"
)

// nodeServer is the npm node-opcua test server (testdata/nodeserver/server.js) in a child process.
type nodeServer struct {
	dir  string
	args []string
	port int
	pki  string
	url  string

	mu      sync.Mutex
	cmd     *exec.Cmd
	out     chan struct{} // closed when the stdout reader ends
	stdin   io.WriteCloser
	replies chan string // "OK ..." / "ERR ..." answers to stdin commands
}

type nodeOpts struct {
	vars          int
	interval      time.Duration
	acceptUnknown bool
	maxPerCall    int
}

var (
	npmOnce sync.Once
	npmErr  error
)

// needNode skips (or fails under CI) when node/npm are missing, and runs `npm ci` once.
func needNode(t testing.TB) string {
	t.Helper()
	_, nodeErr := exec.LookPath("node")
	_, npmErrLook := exec.LookPath("npm")
	if nodeErr != nil || npmErrLook != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("node and npm are required in CI for the node-opcua interop tests")
		}
		t.Skip("node/npm not installed: skipping node-opcua interop test (set CI=1 to make this fail)")
	}
	dir, err := filepath.Abs(filepath.Join("testdata", "nodeserver"))
	if err != nil {
		t.Fatal(err)
	}
	npmOnce.Do(func() {
		data, err := os.ReadFile(filepath.Join(dir, "node_modules", "node-opcua", "package.json"))
		if err == nil && strings.Contains(string(data), `"version": "2.182.0"`) {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			npmErr = fmt.Errorf("npm ci in %s: %v\n%s", dir, err, out)
		}
	})
	if npmErr != nil {
		t.Fatal(npmErr)
	}
	return dir
}

func newNodeServer(t testing.TB, o nodeOpts) *nodeServer {
	t.Helper()
	ns, err := makeNodeServer(needNode(t), testutil.FreePort(t), filepath.Join(t.TempDir(), "pki"), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.kill)
	return ns
}

func makeNodeServer(dir string, port int, pki string, o nodeOpts) (*nodeServer, error) {
	if o.vars == 0 {
		o.vars = 10
	}
	if o.interval == 0 {
		o.interval = 100 * time.Millisecond
	}
	if o.maxPerCall == 0 {
		o.maxPerCall = 1000
	}
	args := []string{"server.js", "--port", fmt.Sprint(port), "--pki", pki, "--vars", fmt.Sprint(o.vars),
		"--interval", fmt.Sprint(o.interval.Milliseconds()), "--max-items-per-call", fmt.Sprint(o.maxPerCall), "--commands"}
	if o.acceptUnknown {
		args = append(args, "--accept-unknown")
	}
	ns := &nodeServer{dir: dir, args: args, port: port, pki: pki}
	return ns, ns.start()
}

// start runs the server and waits for its READY line (startup takes seconds: the port opens
// before the address space is ready).
func (ns *nodeServer) start() error {
	cmd := exec.Command("node", ns.args...)
	cmd.Dir = ns.dir
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start node server: %w", err)
	}
	ready := make(chan string, 1)
	done := make(chan struct{})
	replies := make(chan string, 16)
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			if u, ok := strings.CutPrefix(line, "READY "); ok {
				select {
				case ready <- u:
				default:
				}
			} else if strings.HasPrefix(line, "OK ") || strings.HasPrefix(line, "ERR ") {
				select {
				case replies <- line:
				default:
				}
			}
		}
	}()
	ns.mu.Lock()
	ns.cmd, ns.out, ns.stdin, ns.replies = cmd, done, stdin, replies
	ns.mu.Unlock()
	select {
	case <-ready:
		ns.url = fmt.Sprintf("opc.tcp://127.0.0.1:%d/UA/gemba", ns.port)
		return nil
	case <-done:
		_ = cmd.Wait()
		return fmt.Errorf("node server exited before READY (args %v)", ns.args)
	case <-time.After(90 * time.Second):
		ns.kill()
		return fmt.Errorf("node server not READY within 90s")
	}
}

// command sends one line to the server's stdin (server.js: "remove NAME", "add NAME") and waits
// for its answer.
func (ns *nodeServer) command(t testing.TB, line string) {
	t.Helper()
	ns.mu.Lock()
	stdin, replies := ns.stdin, ns.replies
	ns.mu.Unlock()
	if _, err := io.WriteString(stdin, line+"\n"); err != nil {
		t.Fatalf("node server command %q: %v", line, err)
	}
	select {
	case got := <-replies:
		if got != "OK "+line {
			t.Fatalf("node server command %q answered %q", line, got)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("node server command %q: no answer within 10s", line)
	}
}

// kill sends SIGKILL (no goodbye to clients) and reaps the process.
func (ns *nodeServer) kill() {
	ns.mu.Lock()
	cmd, done := ns.cmd, ns.out
	ns.cmd = nil
	ns.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
	_ = cmd.Wait()
}

// serverThumbprint is the SHA-1 of the server's own certificate in its PKI dir.
func (ns *nodeServer) serverThumbprint(t testing.TB) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(ns.pki, "server", "own", "certs", "certificate.pem"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(data)
	if b == nil {
		t.Fatal("server certificate is not PEM")
	}
	if _, err := x509.ParseCertificate(b.Bytes); err != nil {
		t.Fatal(err)
	}
	return thumbprint(b.Bytes)
}

var (
	sharedNodeOnce sync.Once
	sharedNode     *nodeServer
	sharedNodeErr  error
)

// sharedNodeServer is one lenient node-opcua server (accepts unknown client certificates) shared
// by the tests that do not kill it.
func sharedNodeServer(t testing.TB) *nodeServer {
	t.Helper()
	dir := needNode(t)
	sharedNodeOnce.Do(func() {
		pki, err := os.MkdirTemp("", "gemba-opcua-pki-")
		if err != nil {
			sharedNodeErr = err
			return
		}
		sharedNode, sharedNodeErr = makeNodeServer(dir, testutil.FreePort(t), pki, nodeOpts{acceptUnknown: true})
		sharedMu.Lock()
		sharedClose = append(sharedClose, func() {
			if sharedNode != nil {
				sharedNode.kill()
			}
			_ = os.RemoveAll(pki)
		})
		sharedMu.Unlock()
	})
	if sharedNodeErr != nil {
		t.Fatal(sharedNodeErr)
	}
	return sharedNode
}

const nodeNSU = "urn:gemba:test"

func typedNodes() string {
	var b strings.Builder
	for _, n := range []string{"Double", "Int32", "Boolean", "String", "DoubleArray"} {
		fmt.Fprintf(&b, "  - {node: \"nsu=%s;s=%s\", signal: n.%s}\n", nodeNSU, n, strings.ToLower(n))
	}
	return b.String()
}

func secureConfig(url, extra, nodes string) string {
	return fmt.Sprintf(`endpoint: %s
security: {policy: Basic256Sha256, mode: SignAndEncrypt}
publishing_interval: 100ms
reconnect: {min_backoff: 100ms, max_backoff: 1s, watchdog: 3s, quarantine_retry: 1s}
%s
nodes:
%s`, url, extra, nodes)
}
