package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gemba-io/gemba/hub"
	"github.com/gemba-io/gemba/hub/decide/guard"
	"github.com/gemba-io/gemba/internal/natstest"
)

// `gemba-hub kill` shows, throws (with --end-live) and resets the switch in the guard's bucket,
// refuses a move without --by and --reason, --end-live with off, and a bucket the hub never made.
func TestKillCommand(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	dir := t.TempDir()
	cfgFile := writeFile(t, filepath.Join(dir, "hub.yaml"), fmt.Sprintf(`hub: {id: t1, data_dir: %s/data}
nats: {servers: [%q]}
guard: {max_discount: 20}
`, dir, n.URL()))
	if _, e, err := runCobra(t, killCmd(), "-c", cfgFile); err == nil || !strings.Contains(e, "GEMBA_GUARD") {
		t.Fatalf("kill before the hub made its bucket: %v %s, want refused naming it", err, e)
	}
	hcfg, err := hub.Load(cfgFile, os.LookupEnv)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	g, err := guard.New(ctx, js, *hcfg.Guard, "r1", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if out, e, err := runCobra(t, killCmd(), "-c", cfgFile); err != nil || !strings.Contains(out, "kill switch off (never moved)") {
		t.Fatalf("kill: %v\n%s%s", err, out, e)
	}
	for _, bad := range [][]string{{"on"}, {"on", "--by", "ops"}, {"off", "--end-live", "--by", "ops", "--reason", "x"}, {"maybe"}, {"--by", "ops"}} {
		if _, _, err := runCobra(t, killCmd(), append([]string{"-c", cfgFile}, bad...)...); err == nil {
			t.Fatalf("kill %v accepted", bad)
		}
	}
	if k, _ := g.Kill(ctx); k.On {
		t.Fatal("a refused command moved the switch")
	}
	out, e, err := runCobra(t, killCmd(), "on", "-c", cfgFile, "--by", "ops@plant-a", "--reason", "bad prices", "--end-live")
	if err != nil || !strings.Contains(out, "ON, and the promotions running are ended") || !strings.Contains(out, "thrown by ops@plant-a") {
		t.Fatalf("kill on: %v\n%s%s", err, out, e)
	}
	if k, err := g.Kill(ctx); err != nil || !k.On || !k.EndLive || k.By != "ops@plant-a" || k.Reason != "bad prices" {
		t.Fatalf("the guard reads %+v %v", k, err)
	}
	out, e, err = runCobra(t, killCmd(), "off", "-c", cfgFile, "--by", "ops@plant-a", "--reason", "fixed")
	if err != nil || !strings.Contains(out, "kill switch off (reset by ops@plant-a") || !strings.Contains(out, "end-live mark 1: promotions whose start went out by") {
		t.Fatalf("kill off: %v\n%s%s", err, out, e)
	}
	if k, _ := g.Kill(ctx); k.On {
		t.Fatalf("the guard reads %+v after off", k)
	}
}
