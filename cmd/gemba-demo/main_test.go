package main

import (
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/gemba-io/gemba/agent"
	gembahub "github.com/gemba-io/gemba/hub"
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

// The hub's demo config loads as it is too (graph, rules, console user), and its guard sends the
// clearance rule's 15 % to a person: the approval moment depends on it.
func TestDemoHubConfigLoads(t *testing.T) {
	cfg, err := gembahub.Load("../../configs/demo/hub.yaml", func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Console.Enabled || cfg.Guard == nil || cfg.Guard.Approval.Above >= 15 || cfg.Guard.Approval.Above <= 0 {
		t.Fatalf("console %v, guard %+v", cfg.Console.Enabled, cfg.Guard)
	}
}

// TestDemoRuns runs the whole demo for a minute: the plant on three protocols, the market, the hub
// deciding, an uplink cut, and the final count, which fails on any acknowledged sample missing or
// duplicated. It asserts the demo's four moments: a promotion acted, a hold acted, a promotion
// waiting for approval, and the outage survived with data replayed and no decision acted on it.
func TestDemoRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the demo for about a minute")
	}
	stdout := os.Stdout
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	os.Stdout = null // the live view is for people
	defer func() { os.Stdout = stdout }()
	out, err := run(options{agentFile: demoConfig, hubFile: "../../configs/demo/hub.yaml", duration: 60 * time.Second,
		outageAt: 44 * time.Second, outage: 8 * time.Second, plant: sim.Config{Seed: 1, Tick: 100 * time.Millisecond, Speed: 20}})
	if err != nil {
		t.Fatal(err)
	}
	if out == nil {
		t.Fatal("the run was interrupted")
	}
	if len(out.problems) > 0 {
		t.Errorf("moments: %v", out.problems)
	}
	for name, m := range map[string]moment{"promotion": out.Promotion, "hold": out.Hold, "approval": out.Approval} {
		if m.At == 0 || m.Decision == "" {
			t.Errorf("%s: not seen", name)
		}
	}
	if out.replayed == 0 {
		t.Error("the outage replayed nothing")
	}
	if len(out.ActedOnHistorical) > 0 {
		t.Errorf("decisions acted on replayed data: %v", out.ActedOnHistorical)
	}
	t.Logf("first promotion at %v, hold at %v, approval at %v; %d replayed messages, %d decisions on them suppressed",
		out.Promotion.At, out.Hold.At, out.Approval.At, out.replayed, out.Historical)
}
