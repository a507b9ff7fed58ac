package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopcua/opcua/server"
	"github.com/gopcua/opcua/ua"

	"github.com/gemba-io/gemba/internal/testutil"
)

// startOPCUA runs gopcua's in-process server (security None) with a few variables under Objects.
func startOPCUA(t *testing.T) string {
	t.Helper()
	port := testutil.FreePort(t)
	srv := server.New(
		server.EndPoint("127.0.0.1", port),
		server.EnableSecurity("None", ua.MessageSecurityModeNone),
		server.EnableAuthMode(ua.UserTokenTypeAnonymous),
		server.SetLogger(slog.New(slog.DiscardHandler)),
	)
	ns := server.NewNodeNameSpace(srv, "urn:gemba:clitest")
	// Nodes are added before Start: the server does not lock its address space against browses.
	for name, v := range map[string]any{"Press.Temperature": 71.5, "Press.PartCount": int32(1042), "Press.Sku": "A-100"} {
		dv := server.DataValueFromValue(v)
		n := ns.AddNewVariableStringNode(name, func() *ua.DataValue { return dv })
		ns.Objects().AddRef(n, server.RefTypeIDHasComponent, true)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := srv.Start(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close(); cancel() })
	return fmt.Sprintf("opc.tcp://127.0.0.1:%d", port)
}

// TestBrowseValidateProbe walks the server with the CLI (from the namespace's own Objects folder,
// which gopcua's server does not link under i=85), pastes the YAML it prints into a config,
// and checks that validate accepts it and probe finds every node; then breaks one node id and checks
// that probe exits 1 naming it.
func TestBrowseValidateProbe(t *testing.T) {
	url := startOPCUA(t)
	dir := t.TempDir()
	out, stderr, code := runAgent(t, nil, "browse", url, "--root", "nsu=urn:gemba:clitest;i=85", "--security", "None/None", "--depth", "2", "--prefix", "line1.", "--data-dir", dir)
	if code != 0 {
		t.Fatalf("browse exit %d\n%s", code, stderr)
	}
	if !strings.Contains(out, "nsu=urn:gemba:clitest;s=Press.Temperature") {
		t.Fatalf("browse output lacks the variable:\n%s", out)
	}
	var nodes []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "urn:gemba:clitest") && strings.HasPrefix(strings.TrimSpace(l), "- ") {
			nodes = append(nodes, "      "+strings.TrimSpace(l))
		}
	}
	if len(nodes) != 3 {
		t.Fatalf("want 3 node entries from our namespace, got %d:\n%s", len(nodes), out)
	}
	write := func(nodeLines []string) string {
		cfg := fmt.Sprintf(`agent: {id: gw1, site: plant1, data_dir: %s/state}
buffer: {dir: %s/buf}
collectors:
  - name: plc
    type: opcua
    endpoint: %s
    security: {policy: None, mode: None}
    nodes:
%s
`, dir, dir, url, strings.Join(nodeLines, "\n"))
		f := filepath.Join(dir, "agent.yaml")
		if err := os.WriteFile(f, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	file := write(nodes)
	if out, stderr, code := runAgent(t, nil, "validate", "-c", file); code != 0 {
		t.Fatalf("validate rejected browse output (exit %d)\n%s%s", code, out, stderr)
	}
	out, stderr, code = runAgent(t, nil, "probe", "-c", file)
	if code != 0 || !strings.Contains(out, "OK") {
		t.Fatalf("probe exit %d\n%s%s", code, out, stderr)
	}
	broken := append([]string{`      - {node: "nsu=urn:gemba:clitest;s=Press.NoSuchNode", signal: line1.nope}`}, nodes...)
	out, stderr, code = runAgent(t, nil, "probe", "-c", write(broken))
	if code != 1 || !strings.Contains(out, "NoSuchNode") {
		t.Fatalf("probe with a missing node: exit %d\n%s%s", code, out, stderr)
	}
}

// TestProbeReadsConfDir: probe takes --config-dir as run, validate and reload do. With the PLCs in
// conf.d (one file per PLC), probe without it found "no OPC UA collectors to probe" and exited 0:
// a live check that passed without checking anything.
func TestProbeReadsConfDir(t *testing.T) {
	url := startOPCUA(t)
	dir := t.TempDir()
	main := filepath.Join(dir, "agent.yaml")
	cd := filepath.Join(dir, "conf.d")
	if err := os.MkdirAll(cd, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(main, []byte(fmt.Sprintf("agent: {id: gw1, site: plant1, data_dir: %s/state}\nbuffer: {dir: %s/buf}\n", dir, dir)), 0o600); err != nil {
		t.Fatal(err)
	}
	plc := fmt.Sprintf(`collectors:
  - name: press
    type: opcua
    endpoint: %s
    security: {policy: None, mode: None}
    nodes:
      - {node: "nsu=urn:gemba:clitest;s=Press.Temperature", signal: line1.temp}
      - {node: "nsu=urn:gemba:clitest;s=Press.NoSuchNode", signal: line1.nope}
`, url)
	if err := os.WriteFile(filepath.Join(cd, "10-press.yaml"), []byte(plc), 0o600); err != nil {
		t.Fatal(err)
	}
	out, stderr, code := runAgent(t, nil, "probe", "-c", main, "--config-dir", cd)
	if code != 1 || !strings.Contains(out, "NoSuchNode") {
		t.Fatalf("probe with conf.d: exit %d\n%s%s", code, out, stderr)
	}
}
