package opcua

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gemba-io/gemba/collectors"
	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
)

func TestNodeSecureUsernameAndTypes(t *testing.T) {
	ns := sharedNodeServer(t)
	t.Setenv("GEMBA_TEST_OPCUA_PW", "secret")
	dataDir := t.TempDir()
	cfg := decodeConfig(t, secureConfig(ns.url, `auth: {username: gemba, password: "${GEMBA_TEST_OPCUA_PW}"}
trust: {trust_on_first_use: true}`, typedNodes()))
	r := startCollector(t, cfg, dataDir)
	kinds := map[string]signal.Kind{"n.double": signal.KindFloat, "n.int32": signal.KindInt, "n.boolean": signal.KindBool,
		"n.string": signal.KindString, "n.doublearray[0]": signal.KindFloat, "n.doublearray[2]": signal.KindFloat}
	for sig, k := range kinds {
		testutil.WaitFor(t, 30*time.Second, "samples of "+sig, func() bool {
			s, ok := r.sink.last(sig)
			return ok && s.Value.Kind() == k && s.Quality == signal.Good && r.sink.count(sig) >= 3
		})
	}
	st, d := r.c.State()
	if st != "running" || d["security"] != "Basic256Sha256/SignAndEncrypt" || !strings.Contains(d["trust"], "first use") {
		t.Errorf("state %s %v", st, d)
	}
	stored, err := os.ReadFile(filepath.Join(dataDir, "pki", tofuFileName))
	if err != nil || thumbprint(stored) != ns.serverThumbprint(t) {
		t.Errorf("trust on first use stored %v (err %v)", len(stored), err)
	}
}

func TestNodeWrongPassword(t *testing.T) {
	ns := sharedNodeServer(t)
	cfg := decodeConfig(t, secureConfig(ns.url, `auth: {username: gemba, password: not-the-password}
trust: {trust_on_first_use: true}`, typedNodes()))
	r := startCollector(t, cfg, t.TempDir())
	err := r.runErr(t, 30*time.Second)
	mustContain(t, err, "BadUserAccessDenied")
	if !collectors.IsPermanent(err) {
		t.Errorf("wrong password should be permanent: %v", err)
	}
	if strings.Contains(err.Error(), "not-the-password") {
		t.Errorf("error leaks the password: %v", err)
	}
}

func TestNodeUntrustedServerCertificate(t *testing.T) {
	ns := sharedNodeServer(t)
	cfg := decodeConfig(t, secureConfig(ns.url, "", typedNodes()))
	r := startCollector(t, cfg, t.TempDir())
	err := r.runErr(t, 30*time.Second)
	tp := ns.serverThumbprint(t)
	mustContain(t, err, "not trusted", tp, "trust.thumbprints", "trust_on_first_use")
	if !errors.Is(err, ErrUntrustedServer) || collectors.IsPermanent(err) {
		t.Errorf("want a retryable ErrUntrustedServer, got %v", err)
	}
	// pinning the printed thumbprint (colon form, as tools show it) makes it work
	var colon []string
	for i := 0; i < len(tp); i += 2 {
		colon = append(colon, strings.ToUpper(tp[i:i+2]))
	}
	cfg = decodeConfig(t, secureConfig(ns.url, fmt.Sprintf("trust: {thumbprints: [%q]}", strings.Join(colon, ":")), typedNodes()))
	r = startCollector(t, cfg, t.TempDir())
	testutil.WaitFor(t, 30*time.Second, "data with a pinned thumbprint", func() bool { return r.sink.count("n.double") > 0 })
	if _, d := r.c.State(); d["trust"] != string(trustPinned) {
		t.Errorf("trust = %q", d["trust"])
	}
}

func TestNodeUntrustedClientCertificateThenPersistent(t *testing.T) {
	ns := newNodeServer(t, nodeOpts{acceptUnknown: false})
	dataDir := t.TempDir()
	cfg := decodeConfig(t, secureConfig(ns.url, "trust: {trust_on_first_use: true}", typedNodes()))
	r := startCollector(t, cfg, dataDir)
	testutil.WaitFor(t, 30*time.Second, "rejected client certificate reported", func() bool {
		st, d := r.c.State()
		return st == "reconnecting" && strings.Contains(d["last_error"], "probably does not trust this client's certificate")
	})
	certPath := filepath.Join(dataDir, "pki", "client.crt")
	cert, err := os.ReadFile(certPath)
	if err != nil {
		t.Fatalf("generated certificate not persisted: %v", err)
	}
	// the operator moves the certificate from the server's rejected folder to its trusted folder
	// (node-opcua reads them at start, so it is restarted); the running collector gets in by itself
	rejected := filepath.Join(ns.pki, "server", "rejected")
	entries, err := os.ReadDir(rejected)
	if err != nil || len(entries) == 0 {
		t.Fatalf("server rejected folder: %v, %d entries", err, len(entries))
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(rejected, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if b, _ := pem.Decode(data); b == nil || thumbprint(b.Bytes) != thumbprint(mustDER(t, cert)) {
			t.Fatalf("rejected %s is not our certificate", e.Name())
		}
		if err := os.Rename(filepath.Join(rejected, e.Name()), filepath.Join(ns.pki, "server", "trusted", "certs", e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	ns.kill()
	if err := ns.start(); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 60*time.Second, "data once the server trusts us", func() bool { return r.sink.count("n.double") > 0 })
	r.stop(t)

	// an agent restart reuses the persisted certificate, so the server still trusts it
	r2 := startCollector(t, cfg, dataDir)
	testutil.WaitFor(t, 30*time.Second, "data after agent restart", func() bool { return r2.sink.count("n.double") > 0 })
	again, _ := os.ReadFile(certPath)
	if !bytes.Equal(cert, again) {
		t.Errorf("client certificate changed across restarts")
	}
}

func TestNodeKillRestartWithInvalidNode(t *testing.T) {
	ns := newNodeServer(t, nodeOpts{acceptUnknown: true, vars: 5})
	nodes := nodesYAML("nsu="+nodeNSU+";s=v", 5) + fmt.Sprintf("  - {node: \"nsu=%s;s=NoSuchNode\", signal: invalid}\n", nodeNSU)
	cfg := decodeConfig(t, secureConfig(ns.url, "trust: {trust_on_first_use: true}", nodes))
	r := startCollector(t, cfg, t.TempDir())
	for i := range 5 {
		testutil.WaitFor(t, 30*time.Second, fmt.Sprint("v", i), func() bool { return r.sink.count(fmt.Sprint("v", i)) >= 2 })
	}
	testutil.WaitFor(t, 10*time.Second, "invalid node quarantined", func() bool {
		return r.c.NodeStates()["invalid"] == "quarantined: BadNodeIdUnknown"
	})
	before := map[string]int{}
	for i := range 5 {
		before[fmt.Sprint("v", i)] = r.sink.count(fmt.Sprint("v", i))
	}
	r.c.mu.Lock()
	idxBefore := r.c.items[0].id.Namespace()
	r.c.mu.Unlock()
	ns.kill()
	killed := time.Now()
	// the restarted server also re-indexes its namespaces: urn:gemba:test moves up by one
	ns.args = append(ns.args, "--extra-namespace")
	if err := ns.start(); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	for i := range 5 {
		sig := fmt.Sprint("v", i)
		testutil.WaitFor(t, 60*time.Second, sig+" after server restart", func() bool { return r.sink.count(sig) > before[sig]+2 })
	}
	t.Logf("server down %s; data again %s after it was back", back.Sub(killed).Round(time.Millisecond), time.Since(back).Round(time.Millisecond))
	if st := r.c.NodeStates()["invalid"]; st != "quarantined: BadNodeIdUnknown" {
		t.Errorf("invalid node state after restart: %s", st)
	}
	r.c.mu.Lock()
	idx := r.c.items[0].id.Namespace()
	r.c.mu.Unlock()
	if idx != idxBefore+1 {
		t.Errorf("nsu=%s resolved to ns=%d after re-indexing, want %d", nodeNSU, idx, idxBefore+1)
	}
	if n := r.sink.count("invalid"); n != 0 {
		t.Errorf("invalid node emitted %d samples", n)
	}
}

func TestNodeTCPCut(t *testing.T) {
	ns := sharedNodeServer(t)
	p := newProxy(t, fmt.Sprintf("127.0.0.1:%d", ns.port))
	url := "opc.tcp://" + p.addr() + "/UA/gemba"
	cfg := decodeConfig(t, secureConfig(url, "trust: {trust_on_first_use: true}", typedNodes()))
	r := startCollector(t, cfg, t.TempDir())
	testutil.WaitFor(t, 30*time.Second, "data", func() bool { return r.sink.count("n.int32") > 2 })
	p.SetDown(true)
	p.Cut()
	testutil.WaitFor(t, 20*time.Second, "loss noticed", func() bool { st, _ := r.c.State(); return st != "running" })
	n := r.sink.count("n.int32")
	p.SetDown(false)
	testutil.WaitFor(t, 30*time.Second, "data after the cut", func() bool { return r.sink.count("n.int32") > n+2 })
}

func TestNode10000MonitoredItems(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 items: skipped in -short")
	}
	const n = 10000
	ns := newNodeServer(t, nodeOpts{acceptUnknown: true, vars: n, interval: 5 * time.Second, maxPerCall: 1000})
	cfg := decodeConfig(t, fmt.Sprintf(`endpoint: %s
security: {policy: None, mode: None}
publishing_interval: 500ms
nodes:
%s`, ns.url, nodesYAML("nsu="+nodeNSU+";s=v", n)))
	r := startCollector(t, cfg, t.TempDir())
	testutil.WaitFor(t, 90*time.Second, "a sample from each of 10,000 items", func() bool {
		seen := map[string]bool{}
		for _, s := range r.sink.all() {
			seen[s.Signal] = true
		}
		return len(seen) == n
	})
	_, d := r.c.State()
	if d["nodes_active"] != fmt.Sprint(n) {
		t.Errorf("state %v", d)
	}
}

func TestNodeBrowseThenProbe(t *testing.T) {
	ns := sharedNodeServer(t)
	dataDir := t.TempDir()
	var out bytes.Buffer
	opts := BrowseOptions{Endpoint: ns.url, Root: "nsu=" + nodeNSU + ";s=Gemba", Depth: 3, DataDir: dataDir,
		Security: Security{Policy: "auto", Mode: "auto"}, Trust: Trust{TrustOnFirstUse: true}, SignalPrefix: "line1."}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := Browse(ctx, opts, &out); err != nil {
		t.Fatal(err)
	}
	yml := out.String()
	for _, want := range []string{`node: "nsu=urn:gemba:test;s=Double", signal: line1.double, type: Double`,
		`signal: line1.bulk.v3, type: Double`, "Basic256Sha256/SignAndEncrypt"} {
		if !strings.Contains(yml, want) {
			t.Errorf("browse output lacks %q:\n%s", want, yml)
		}
	}
	cfg := decodeConfig(t, fmt.Sprintf("endpoint: %s\ntrust: {trust_on_first_use: true}\n%s", ns.url, yml))
	if len(cfg.Nodes) != 15 {
		t.Errorf("browse gave %d nodes, want 15 (5 typed + 10 bulk)", len(cfg.Nodes))
	}
	var rep bytes.Buffer
	problems, err := Probe(ctx, "plc", cfg, collectors.Deps{DataDir: dataDir, Agent: "test"}, &rep)
	if err != nil || len(problems) != 0 {
		t.Fatalf("probe: %v %v\n%s", problems, err, rep.String())
	}
	for _, want := range []string{"Basic256Sha256/SignAndEncrypt (configured auto/auto)", "MaxMonitoredItemsPerCall=1000", "trusted", "15 ok"} {
		if !strings.Contains(rep.String(), want) {
			t.Errorf("probe report lacks %q:\n%s", want, rep.String())
		}
	}
	// a broken config: probe lists each problem with its path
	cfg.Nodes = append(cfg.Nodes, Node{Node: "nsu=" + nodeNSU + ";s=Nope", Signal: "nope"}, Node{Node: "nsu=urn:nowhere;i=1", Signal: "nowhere"})
	rep.Reset()
	problems, _ = Probe(ctx, "plc", cfg, collectors.Deps{DataDir: dataDir, Agent: "test"}, &rep)
	if len(problems) != 2 || !strings.Contains(problems[0]+problems[1], "nodes[15]") || !strings.Contains(problems[0]+problems[1], "BadNodeIdUnknown") {
		t.Errorf("problems = %q", problems)
	}
}

func mustDER(t testing.TB, pemData []byte) []byte {
	t.Helper()
	b, _ := pem.Decode(pemData)
	if b == nil {
		t.Fatal("not PEM")
	}
	return b.Bytes
}

func TestNodeX509UserCertificate(t *testing.T) {
	ns := sharedNodeServer(t)
	dir := t.TempDir()
	der, key, err := generateCert("urn:gemba:test-user", "operator")
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "user.crt"), filepath.Join(dir, "user.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := decodeConfig(t, secureConfig(ns.url, fmt.Sprintf("auth: {cert_file: %s, key_file: %s}\ntrust: {trust_on_first_use: true}", certFile, keyFile), typedNodes()))
	r := startCollector(t, cfg, t.TempDir())
	testutil.WaitFor(t, 30*time.Second, "data with an X.509 user identity", func() bool { return r.sink.count("n.double") > 0 })
}

func TestNodeServerSideDeadband(t *testing.T) {
	ns := sharedNodeServer(t)
	cfg := decodeConfig(t, fmt.Sprintf(`endpoint: %s
security: {policy: None, mode: None}
publishing_interval: 100ms
nodes:
  - {node: "nsu=%s;s=Int32", signal: every, sampling: 50ms}
  - {node: "nsu=%s;s=Double", signal: banded, sampling: 50ms, deadband: 2.5}
`, ns.url, nodeNSU, nodeNSU))
	r := startCollector(t, cfg, t.TempDir())
	testutil.WaitFor(t, 30*time.Second, "banded samples", func() bool { return r.sink.count("banded") >= 4 })
	var prev float64
	for i, s := range r.sink.all() {
		if s.Signal != "banded" {
			continue
		}
		f, _ := s.Value.Float()
		if i > 0 && prev != 0 && f-prev <= 2.5 {
			t.Errorf("deadband 2.5 let %v follow %v", f, prev)
		}
		prev = f
	}
	// the server applied the filter: nothing was left for the client-side deadband to drop
	if n := metricValue(r.c.m.deadband); n != 0 {
		t.Errorf("client-side deadband dropped %v samples; the server should have filtered them", n)
	}
	if r.sink.count("every") < 2*r.sink.count("banded") {
		t.Errorf("unfiltered node has %d samples, banded %d", r.sink.count("every"), r.sink.count("banded"))
	}
}

func TestNodeHalfOpenLinkWatchdog(t *testing.T) {
	ns := sharedNodeServer(t)
	p := newProxy(t, fmt.Sprintf("127.0.0.1:%d", ns.port))
	cfg := decodeConfig(t, fmt.Sprintf(`endpoint: opc.tcp://%s/UA/gemba
security: {policy: None, mode: None}
publishing_interval: 100ms
timeouts: {request: 2s}
reconnect: {min_backoff: 100ms, max_backoff: 1s, watchdog: 2s}
nodes:
%s`, p.addr(), typedNodes()))
	r := startCollector(t, cfg, t.TempDir())
	testutil.WaitFor(t, 30*time.Second, "data", func() bool { return r.sink.count("n.int32") > 2 })
	// the link dies without a reset: no error reaches the client, only silence
	p.Blackhole()
	testutil.WaitFor(t, 20*time.Second, "watchdog rebuild", func() bool {
		return metricValue(r.c.m.reconnects.WithLabelValues("watchdog"))+metricValue(r.c.m.reconnects.WithLabelValues("error")) > 0
	})
	n := r.sink.count("n.int32")
	testutil.WaitFor(t, 30*time.Second, "data over a new connection", func() bool { return r.sink.count("n.int32") > n+2 })
}

// TestNodePercentDeadbandRefused: node-opcua refuses a percent deadband on a variable without an
// EURange. The collector says so (log, gemba_opcua_percent_deadband_not_applied) and stores every
// change: a percent deadband is never silently turned into something else.
func TestNodePercentDeadbandRefused(t *testing.T) {
	ns := sharedNodeServer(t)
	cfg := decodeConfig(t, fmt.Sprintf(`endpoint: %s
security: {policy: None, mode: None}
publishing_interval: 100ms
nodes:
  - {node: "nsu=%s;s=Double", signal: pct, sampling: 0s, deadband: {type: percent, value: 50}}
`, ns.url, nodeNSU))
	r := startCollector(t, cfg, t.TempDir())
	testutil.WaitFor(t, 30*time.Second, "samples", func() bool { return r.sink.count("pct") >= 5 })
	if n := metricValue(r.c.m.unfiltered); n != 1 {
		t.Errorf("percent_deadband_not_applied = %v, want 1", n)
	}
	if n := metricValue(r.c.m.deadband); n != 0 {
		t.Errorf("the client dropped %v samples of a node whose deadband is not applied", n)
	}
	// the value goes up by 1 per server tick: unfiltered, consecutive samples differ by about 1
	var prev float64
	for _, s := range r.sink.all() {
		f, _ := s.Value.Float()
		if prev != 0 && f-prev > 3 {
			t.Errorf("sample %v follows %v: changes were filtered", f, prev)
		}
		prev = f
	}
}
