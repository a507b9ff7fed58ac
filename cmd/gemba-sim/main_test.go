package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/gemba-io/gemba/agent"
	_ "github.com/gemba-io/gemba/collectors/all"
	"github.com/gemba-io/gemba/internal/testutil"
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

// A plant size or clock the simulator cannot run is refused with the flag, not replaced by the
// default (-lines 0 ran two lines) and not a crash (-extra-signals -3 panicked in NewPlant).
func TestBadPlantFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-extra-signals", "-3"},
		{"-extra-signals", "200000"}, // Sparkplug aliases of two machines would collide
		{"-lines", "0"},
		{"-machines", "-1"},
		{"-tick", "0s"},
		{"-speed", "-2"},
	} {
		var out, errb bytes.Buffer
		err := run(append([]string{"-print-config"}, args...), &out, &errb)
		if err == nil || !strings.Contains(err.Error(), args[0]+" "+args[1]) {
			t.Errorf("%v: err = %v, want one naming %s %s", args, err, args[0], args[1])
		}
	}
}

// A port that is taken is refused with its address, for the embedded broker and the OPC UA server.
func TestTakenPorts(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	taken := l.Addr().String()
	free := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	for _, args := range [][]string{
		{"-listen-mqtt", taken, "-opcua", ""},
		{"-listen-mqtt", free, "-opcua", taken},
	} {
		var out, errb bytes.Buffer
		err := run(append(args, "-duration", "1s"), &out, &errb)
		if err == nil || !strings.Contains(err.Error(), taken) || !strings.Contains(err.Error(), "address already in use") {
			t.Errorf("%v: err = %v, want the taken address", args, err)
		}
	}
}

// Without an OPC UA server (-opcua ""), the printed section still loads: the OPC UA machines are
// silent, so there is no OPC UA collector (it had the endpoint "opc.tcp://").
func TestPrintConfigWithoutOPCUA(t *testing.T) {
	var out, errb bytes.Buffer
	if err := run([]string{"-print-config", "-opcua", ""}, &out, &errb); err != nil {
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
	if len(c.Collectors) != 1 || strings.Contains(out.String(), "opcua") {
		t.Fatalf("%d collectors:\n%s", len(c.Collectors), out.String())
	}
}
