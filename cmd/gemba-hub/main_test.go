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

// hubBin is gemba-hub built once for the package's tests, without the race detector even under
// -race: the replicas test loads real processes, and an instrumented hub would be a tenth as fast.
var hubBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "gemba-hub-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	hubBin = filepath.Join(dir, "gemba-hub")
	if out, err := exec.Command("go", "build", "-o", hubBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build gemba-hub: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(2)
	}
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// hubCmd is gemba-hub with args, run in dir ("" for the package directory).
func hubCmd(dir string, env []string, args ...string) *exec.Cmd {
	cmd := exec.Command(hubBin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Dir = dir
	return cmd
}

func runHub(t *testing.T, dir string, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := hubCmd(dir, env, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return o.String(), e.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return o.String(), e.String(), 0
}

func writeFile(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Four different problems (an unknown key, a bad duration, an unset variable, a value out of range)
// are all reported at once, one line each with file, line and path.
func TestValidateReportsEveryProblemWithPathAndLine(t *testing.T) {
	dir := t.TempDir()
	file := writeFile(t, filepath.Join(dir, "bad.yaml"), `hub:
  id: hub-1
  data_dir: `+dir+`
  colour: blue
nats:
  user: hub
  password: ${GEMBA_TEST_UNSET_SECRET}
ingest:
  ack_wait: soon
fleet:
  stale_after: 10ms
`)
	_, stderr, code := runHub(t, "", nil, "validate", "-c", file)
	if code != 1 {
		t.Fatalf("exit %d, want 1; stderr:\n%s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	want := []struct{ line, path, msg string }{
		{"4", "hub.colour", "unknown field"},
		{"7", "nats.password", "GEMBA_TEST_UNSET_SECRET"},
		{"9", "ingest.ack_wait", "invalid duration"},
		{"11", "fleet.stale_after", "at least 1s"},
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

// Every hub config shipped under configs/ validates, with the graph it names (paths in them are
// relative to the repository root, where the docs run them).
func TestValidateShippedConfigs(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(root, "configs/hub*.yaml"))
	sub, _ := filepath.Glob(filepath.Join(root, "configs/*/hub*.yaml"))
	files = append(files, sub...)
	if len(files) < 2 {
		t.Fatalf("hub configs found: %v", files)
	}
	env := []string{"GEMBA_EXAMPLE_DIR=" + t.TempDir(), "GEMBA_HUB_TOKEN=example", "GEMBA_HUB_READ_TOKEN=example",
		"GEMBA_COMMERCE_TOKEN=example", "NATS_PASSWORD=example", "GEMBA_DEMO_DIR=" + t.TempDir()}
	for _, f := range files {
		stdout, stderr, code := runHub(t, root, env, "validate", "-c", f)
		if code != 0 || !strings.Contains(stdout, "valid") || !strings.Contains(stdout, "graph ") {
			t.Errorf("%s: exit %d\n%s%s", f, code, stdout, stderr)
		}
	}
}

// A graph file with a problem fails validate with the graph's file and line.
func TestValidateReportsTheGraphFileAndLine(t *testing.T) {
	dir := t.TempDir()
	g := writeFile(t, filepath.Join(dir, "graph.yaml"), `version: t1
sites:
  - {id: s1}
lines:
  - {id: l1, site: s1}
  - {id: l2, site: nowhere}
`)
	file := writeFile(t, filepath.Join(dir, "hub.yaml"), "hub: {id: hub-1, data_dir: "+dir+"}\ngraph: {file: "+g+"}\n")
	_, stderr, code := runHub(t, "", nil, "validate", "-c", file)
	if code != 1 {
		t.Fatalf("exit %d, want 1; stderr:\n%s", code, stderr)
	}
	if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(g) + `:6: .*nowhere`).MatchString(stderr) {
		t.Fatalf("want the dangling site at %s:6, got:\n%s", g, stderr)
	}
}

func TestVersion(t *testing.T) {
	stdout, _, code := runHub(t, "", nil, "version")
	if code != 0 || !regexp.MustCompile(`^gemba-hub \S+ \(commit .*, go1\.\d+`).MatchString(stdout) {
		t.Fatalf("exit %d: %q", code, stdout)
	}
}

// run with its embedded NATS server: ready once agents' data can flow, and on SIGTERM it drains
// and exits 0 within the shutdown timeout, logging its stop.
func TestRunEmbeddedThenSIGTERM(t *testing.T) {
	dir := t.TempDir()
	httpPort, natsPort := testutil.FreePort(t), testutil.FreePort(t)
	file := writeFile(t, filepath.Join(dir, "hub.yaml"), fmt.Sprintf(`hub: {id: hub-1, data_dir: %s, shutdown_timeout: 5s, log: {format: text}}
http: {listen: "127.0.0.1:%d"}
nats: {embedded: {listen: "127.0.0.1:%d"}}
`, dir, httpPort, natsPort))
	cmd := hubCmd("", nil, "run", "-c", file)
	var stderr testutil.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	defer func() {
		_ = cmd.Process.Kill() // after a failure; harmless once it exited
		<-exited
	}()

	// Not ready before an agent created the stream, and /readyz says so.
	base := fmt.Sprintf("http://127.0.0.1:%d", httpPort)
	var why string
	testutil.WaitFor(t, 30*time.Second, "/readyz explaining the missing stream", func() bool {
		select {
		case <-exited:
			t.Fatalf("hub exited early: %v\n%s", waitErr, stderr.String())
		default:
		}
		r, code := readyz(base)
		why = strings.Join(r.Reasons, "; ")
		return code == http.StatusServiceUnavailable && strings.Contains(why, "waiting for stream GEMBA")
	})
	if resp, err := http.Get(base + "/healthz"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz: %v", err)
	} else {
		resp.Body.Close()
	}
	// An agent's stream on the embedded server makes it ready.
	createAgentStream(t, fmt.Sprintf("nats://127.0.0.1:%d", natsPort), 1)
	testutil.WaitFor(t, 30*time.Second, "/readyz ready", func() bool {
		_, code := readyz(base)
		return code == http.StatusOK
	})
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if waitErr != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", waitErr, stderr.String())
		}
	case <-time.After(5*time.Second + 5*time.Second): // shutdown_timeout plus start-up slack
		t.Fatalf("hub did not exit within the shutdown timeout\n%s", stderr.String())
	}
	out := stderr.String()
	if !strings.Contains(out, "shutting down") || !strings.Contains(out, "msg=stopped") {
		t.Errorf("no clean stop logged:\n%s", out)
	}
	if strings.Contains(out, "level=ERROR") || strings.Contains(out, "shutdown timeout") {
		t.Errorf("errors during the drain:\n%s", out)
	}
}

type readiness struct {
	Ready   bool     `json:"ready"`
	Reasons []string `json:"reasons"`
}

func readyz(base string) (readiness, int) {
	var r readiness
	resp, err := http.Get(base + "/readyz")
	if err != nil {
		return r, 0
	}
	defer resp.Body.Close()
	_ = json.NewDecoder(resp.Body).Decode(&r)
	return r, resp.StatusCode
}
