package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gemba-io/gemba/internal/testutil"
)

// TestSIGHUPAndReloadCommand: SIGHUP reloads instead of killing the agent (the bug: it died on
// the spot with no log), conf.d files come and go, an invalid file is refused and named with its
// line by SIGHUP and by the reload command (which then does not ask the agent), and the agent
// still stops cleanly on SIGTERM.
func TestSIGHUPAndReloadCommand(t *testing.T) {
	dir := t.TempDir()
	confd := filepath.Join(dir, "conf.d")
	if err := os.Mkdir(confd, 0o755); err != nil {
		t.Fatal(err)
	}
	httpPort, natsPort, mqttPort := testutil.FreePort(t), testutil.FreePort(t), testutil.FreePort(t) // nothing on nats or mqtt
	file := filepath.Join(dir, "agent.yaml")
	write := func(path, text string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(file, fmt.Sprintf(`agent: {id: gw1, site: plant1, shutdown_timeout: 5s, log: {format: text}}
http: {listen: "127.0.0.1:%d", admin_token: "${GEMBA_TEST_ADMIN_TOKEN}"}
buffer: {dir: %s/buf, max_bytes: 64MiB}
uplink:
  nats: {servers: ["nats://127.0.0.1:%d"], create_stream: true}
`, httpPort, dir, natsPort))
	coll := func(name string) string {
		return fmt.Sprintf("collectors:\n  - name: %s\n    type: mqtt\n    broker: tcp://127.0.0.1:%d\n    client_id: gw1-%s\n    subscriptions: [{topic: %s/x, format: value, signal: %s.x}]\n",
			name, mqttPort, name, name, name)
	}
	write(filepath.Join(confd, "10-a.yaml"), coll("a"))
	env := []string{"GEMBA_TEST_ADMIN_TOKEN=t0ken"}

	cmd := agentCmd(t, env, "run", "-c", file, "--config-dir", confd)
	var stderr testutil.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-exited
		}
	}()
	logged := func(what string, n int) {
		t.Helper()
		testutil.WaitFor(t, 20*time.Second, fmt.Sprintf("%d× %q in the log", n, what), func() bool {
			select {
			case err := <-exited:
				t.Fatalf("agent exited: %v\n%s", err, stderr.String())
			default:
			}
			return strings.Count(stderr.String(), what) >= n
		})
	}
	collectorsRunning := func() []string {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/status", httpPort))
		if err != nil {
			return nil
		}
		defer resp.Body.Close()
		var st struct {
			Collectors map[string]any `json:"collectors"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&st)
		var out []string
		for k := range st.Collectors {
			out = append(out, k)
		}
		return out
	}
	logged("agent started", 1)
	hup := func() {
		t.Helper()
		if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}

	// Unchanged: the agent lives, reloads, and says nothing changed.
	hup()
	logged("SIGHUP: reloading the config", 1)
	logged("config reloaded", 1)

	// A new conf.d file: its collector starts.
	write(filepath.Join(confd, "20-b.yaml"), coll("b"))
	hup()
	logged("config reloaded", 2)
	if !strings.Contains(stderr.String(), "started=[b]") {
		t.Errorf("the second reload does not say b started:\n%s", stderr.String())
	}
	testutil.WaitFor(t, 10*time.Second, "a and b in /status", func() bool { return len(collectorsRunning()) == 2 })

	// An invalid conf.d file: refused, named with its line; both collectors stay.
	bad := filepath.Join(confd, "30-bad.yaml")
	write(bad, "collectors:\n  - name: a\n    type: mqtt\n")
	hup()
	logged("config reload refused", 1)
	// Every problem is logged on its own line (the missing broker first): wait for the one named here.
	logged(bad+":2: collectors[0].name: duplicate collector name", 1)
	if got := collectorsRunning(); len(got) != 2 {
		t.Errorf("collectors after a refused reload: %v", got)
	}

	// The reload command validates first and does not send an invalid file.
	out, errOut, code := runAgent(t, env, "reload", "-c", file, "--config-dir", confd)
	if code != 1 || !strings.Contains(errOut, bad+":2:") || !strings.Contains(errOut, "not sent") {
		t.Errorf("reload of an invalid file: exit %d\n%s%s", code, out, errOut)
	}
	// Fixed, it asks the agent (with the token from the file) and prints what changed.
	write(bad, coll("c"))
	out, errOut, code = runAgent(t, env, "reload", "-c", file, "--config-dir", confd)
	if code != 0 || !strings.Contains(out, "reloaded: config version") || !strings.Contains(out, "started    c") || !strings.Contains(out, "unchanged  a, b") {
		t.Errorf("reload: exit %d\n%s%s", code, out, errOut)
	}
	// Without the token the agent refuses.
	_, errOut, code = runAgent(t, []string{"GEMBA_TEST_ADMIN_TOKEN=wrong"}, "reload", "-c", file, "--config-dir", confd)
	if code != 2 || !strings.Contains(errOut, "401") {
		t.Errorf("reload with a wrong token: exit %d\n%s", code, errOut)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("agent did not exit\n%s", stderr.String())
	}
}
