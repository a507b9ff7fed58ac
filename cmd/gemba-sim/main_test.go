package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/gemba-io/gemba/agent"
	_ "github.com/gemba-io/gemba/collectors/all"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The printed collectors section, under a minimal agent config, is a valid agent config.
func TestPrintConfigIsAValidAgentConfig(t *testing.T) {
	var out, errb bytes.Buffer
	if err := run([]string{"-print-config", "-lines", "3", "-machines", "4", "-extra-signals", "2"}, &out, &errb); err != nil {
		t.Fatal(err, errb.String())
	}
	dir := t.TempDir()
	cfg := "agent: {id: sim-test, site: plant1}\nbuffer: {dir: " + filepath.Join(dir, "buf") + "}\n" +
		"uplink:\n  nats: {servers: [\"nats://127.0.0.1:4222\"], stream: GEMBA}\n" + out.String()
	file := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(file, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := agent.Load(file, func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatalf("%v\n%s", err, cfg)
	}
	if len(c.Collectors) != 2 {
		t.Fatalf("%d collectors", len(c.Collectors))
	}
	// line1 and line3 run on OPC UA: 3 machines each (the 4th is on Sparkplug), 7+2 signals each.
	if n := strings.Count(out.String(), "nsu=urn:gemba:sim;"); n != 2*3*9 {
		t.Fatalf("%d OPC UA nodes, want %d", n, 2*3*9)
	}
}

func TestBadFlags(t *testing.T) {
	var out, errb bytes.Buffer
	if err := run([]string{"-qos", "2"}, &out, &errb); err == nil || !strings.Contains(err.Error(), "-qos 2") {
		t.Fatalf("err = %v", err)
	}
	if err := run([]string{"-nope"}, &out, &errb); err == nil {
		t.Fatal("unknown flag accepted")
	}
}
