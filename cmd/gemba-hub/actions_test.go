package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub"
	"github.com/gemba-io/gemba/hub/act"
	"github.com/gemba-io/gemba/hub/decide/guard"
	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

// A webhook answering 410 Gone dead-letters its delivery; `actions dead` lists it and `actions
// replay` re-queues it, which delivers it once the endpoint is back. The command refuses an id
// that is not dead, a replay while the kill switch is thrown, and a config without decisions.
func TestActionsDeadAndReplay(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	var gone atomic.Bool
	gone.Store(true)
	var got atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if gone.Load() {
			w.WriteHeader(http.StatusGone)
			return
		}
		got.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	dir := t.TempDir()
	cfgFile := writeFile(t, filepath.Join(dir, "hub.yaml"), fmt.Sprintf(`hub: {id: t1, data_dir: %s/data}
nats: {servers: [%q]}
guard: {max_discount: 20}
act:
  channels:
    web: {webhook: {url: %q, secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw, timeout: 2s}}
`, dir, n.URL(), srv.URL))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The hub's delivery loop, as a running replica has it (the same config as the file's).
	hcfg, err := hub.Load(cfgFile, os.LookupEnv)
	if err != nil {
		t.Fatal(err)
	}
	o, err := act.Open(ctx, js, *hcfg.Act, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = o.Run(ctx) }()
	defer func() { cancel(); <-done }()
	id := fmt.Sprintf("%032x", 0xdead)
	if _, err := o.Enqueue(ctx, act.Action{DecisionID: id, Kind: act.Hold, SKU: "A", Channel: "web", Start: time.Now(), Reason: "r"}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the delivery dead-lettered", func() bool {
		r, err := o.Get(ctx, id)
		return err == nil && r.State == act.Dead
	})
	out, e, err := runCobra(t, actionsCmd(), "dead", "-c", cfgFile)
	if err != nil || !strings.Contains(out, id) || !strings.Contains(out, "1 dead-lettered") || !strings.Contains(out, "410") {
		t.Fatalf("actions dead: %v\n%s%s", err, out, e)
	}
	// While the kill switch is thrown the replay is refused, and the dead letter stays.
	g, err := guard.New(ctx, js, *hcfg.Guard, "ops", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.SetKill(ctx, true, "ops@plant-a", "recall"); err != nil {
		t.Fatal(err)
	}
	if out, e, err := runCobra(t, actionsCmd(), "replay", "-c", cfgFile, id); exitCode(err) != 1 ||
		!strings.Contains(e, "kill switch thrown by ops@plant-a") || !strings.Contains(e, "reset it first") || strings.Contains(out, "re-queued") {
		t.Fatalf("replay while the kill switch is thrown: %v\n%s%s", err, out, e)
	}
	if r, err := o.Get(ctx, id); err != nil || r.State != act.Dead {
		t.Fatalf("after a refused replay: %v %+v", err, r)
	}
	if err := g.SetKill(ctx, false, "ops@plant-a", "recall over"); err != nil {
		t.Fatal(err)
	}
	gone.Store(false)
	out, e, err = runCobra(t, actionsCmd(), "replay", "-c", cfgFile, id)
	if err != nil || !strings.Contains(out, id+": re-queued") {
		t.Fatalf("actions replay: %v\n%s%s", err, out, e)
	}
	testutil.WaitFor(t, 10*time.Second, "the replayed delivery", func() bool {
		r, err := o.Get(ctx, id)
		return err == nil && r.State == act.Done && got.Load() == 1
	})
	if _, e, err := runCobra(t, actionsCmd(), "replay", "-c", cfgFile, id); exitCode(err) != 1 || !strings.Contains(e, "not dead") {
		t.Errorf("replay of a delivered action: %v %s", err, e)
	}
	off := writeFile(t, filepath.Join(dir, "off.yaml"), fmt.Sprintf("hub: {id: t1, data_dir: %s/data}\nnats: {servers: [%q]}\n", dir, n.URL()))
	if _, e, err := runCobra(t, actionsCmd(), "dead", "-c", off); exitCode(err) != 1 || !strings.Contains(e, "decisions are off") {
		t.Errorf("actions without decisions: %v %s", err, e)
	}
}
