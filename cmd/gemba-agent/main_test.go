package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/gemba-io/gemba/internal/testutil"
)

// The test binary doubles as gemba-agent: with GEMBA_TEST_MAIN=1 it runs main with the given args.
func TestMain(m *testing.M) {
	if os.Getenv("GEMBA_TEST_MAIN") == "1" {
		os.Args = append([]string{"gemba-agent"}, strings.Fields(os.Getenv("GEMBA_TEST_ARGS"))...)
		main()
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

func agentCmd(t *testing.T, env []string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append(env, "GEMBA_TEST_MAIN=1", "GEMBA_TEST_ARGS="+strings.Join(args, " "))...)
	return cmd
}

func runAgent(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := agentCmd(t, env, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code = 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return o.String(), e.String(), code
}

func TestValidateReportsEveryProblemWithPathAndLine(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "bad.yaml")
	cfg := `agent:
  id: gw1
  site: plant1
buffer:
  dir: ` + dir + `/buf
  colour: blue
uplink:
  nats:
    servers: [nats://127.0.0.1:4222]
    user: gw1
    password: ${GEMBA_TEST_UNSET_SECRET}
collectors:
  - type: mqtt
    broker: tcp://127.0.0.1:1883
    client_id: gw1-sensors
    keepalive: soon
    subscriptions:
      - {topic: a/b, format: value, signal: a.b}
`
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := runAgent(t, nil, "validate", "-c", file)
	if code != 1 {
		t.Fatalf("exit %d, want 1; stderr:\n%s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	want := []struct{ line, path, msg string }{
		{"6", "buffer.colour", "unknown field"},
		{"11", "uplink.nats.password", "GEMBA_TEST_UNSET_SECRET"},
		{"13", "collectors[0].name", "required"},
		{"16", "collectors[0].keepalive", "invalid duration"},
	}
	if len(lines) != len(want) {
		t.Fatalf("want %d problems, got %d:\n%s", len(want), len(lines), stderr)
	}
	for i, w := range want {
		re := regexp.MustCompile(fmt.Sprintf(`^%s:%s: %s: .*%s`, regexp.QuoteMeta(file), w.line, regexp.QuoteMeta(w.path), regexp.QuoteMeta(w.msg)))
		if !re.MatchString(lines[i]) {
			t.Errorf("problem %d = %q, want line %s path %s containing %q", i, lines[i], w.line, w.path, w.msg)
		}
	}
}

func TestValidateExampleConfigs(t *testing.T) {
	// The agent's configs; hub and graph files beside them have their own tests.
	files, _ := filepath.Glob("../../configs/agent*.yaml")
	sub, _ := filepath.Glob("../../configs/*/agent*.yaml")
	files = append(files, sub...)
	if len(files) == 0 {
		t.Fatal("no configs found")
	}
	for _, f := range files {
		stdout, stderr, code := runAgent(t, exampleEnv(t), "validate", "-c", f)
		if code != 0 || !strings.Contains(stdout, "valid") {
			t.Errorf("%s: exit %d\n%s%s", f, code, stdout, stderr)
		}
	}
}

// exampleEnv sets the variables the example configs reference.
func exampleEnv(t *testing.T) []string {
	dir := t.TempDir()
	return []string{"OPCUA_PASSWORD=example", "MQTT_PASSWORD=example", "NATS_PASSWORD=example", "GEMBA_EXAMPLE_DIR=" + dir}
}

func TestVersion(t *testing.T) {
	stdout, _, code := runAgent(t, nil, "version")
	if code != 0 || !strings.HasPrefix(stdout, "gemba-agent ") || !strings.Contains(stdout, "go1.") {
		t.Fatalf("exit %d: %q", code, stdout)
	}
}

func TestRunWithUnreachableUplinkThenSIGTERM(t *testing.T) {
	dir := t.TempDir()
	httpPort, natsPort := testutil.FreePort(t), testutil.FreePort(t) // nothing listens on natsPort
	file := filepath.Join(dir, "agent.yaml")
	cfg := fmt.Sprintf(`agent: {id: gw1, site: plant1, shutdown_timeout: 5s, log: {format: text}}
http: {listen: "127.0.0.1:%d"}
buffer: {dir: %s/buf, max_bytes: 64MiB}
uplink:
  nats: {servers: ["nats://127.0.0.1:%d"], stream: GEMBA, create_stream: true}
`, httpPort, dir, natsPort)
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := agentCmd(t, nil, "run", "-c", file)
	var stderr bytes.Buffer
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

	var reason string
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", httpPort))
		if err == nil {
			var r struct {
				Ready  bool `json:"ready"`
				Checks []struct {
					Name, Reason string
					OK           bool
				} `json:"checks"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&r)
			resp.Body.Close()
			for _, c := range r.Checks {
				if c.Name == "uplink" && !c.OK {
					reason = c.Reason
				}
			}
			if resp.StatusCode == http.StatusServiceUnavailable && !r.Ready && reason != "" {
				break
			}
		}
		select {
		case err := <-exited:
			t.Fatalf("agent exited early: %v\n%s", err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("readyz never explained the uplink; stderr:\n%s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(reason, fmt.Sprint(natsPort)) {
		t.Errorf("uplink reason does not name the server: %q", reason)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, stderr.String())
		}
	case <-time.After(5*time.Second + 5*time.Second): // shutdown_timeout plus process start-up slack
		t.Fatalf("agent did not exit within the drain timeout\n%s", stderr.String())
	}
	if !strings.Contains(stderr.String(), "stopped") {
		t.Errorf("no clean stop logged:\n%s", stderr.String())
	}
}
