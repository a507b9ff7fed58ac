package main

import (
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/gemba-io/gemba/agent"
	"github.com/gemba-io/gemba/sim"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/gopcua/opcua/server.(*channelBroker).RegisterConn"),
		goleak.IgnoreAnyFunction("github.com/gopcua/opcua/server.(*channelBroker).Close.func1"),
		goleak.IgnoreTopFunction("github.com/gopcua/opcua/server.(*Subscription).run"))
}

const demoConfig = "../../configs/demo/agent.yaml"

// The demo's config loads as it is, with defaults for every variable the demo sets.
func TestDemoConfigLoads(t *testing.T) {
	cfg, err := agent.Load(demoConfig, func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Collectors) != 2 || cfg.Agent.ID != "demo-gw1" {
		t.Fatalf("collectors %d, agent %q", len(cfg.Collectors), cfg.Agent.ID)
	}
}

// TestDemoRuns runs the whole demo briefly: the plant on three protocols, an uplink cut, and the
// final count, which fails on any acknowledged sample missing or duplicated.
func TestDemoRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the demo for ~20 s")
	}
	stdout := os.Stdout
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	os.Stdout = null // the live view is for people
	defer func() { os.Stdout = stdout }()
	err = run(demoConfig, "../../configs/demo/hub.yaml", 12*time.Second, 4*time.Second, sim.Config{Seed: 2, Tick: 100 * time.Millisecond, Speed: 20})
	if err != nil {
		t.Fatal(err)
	}
}
