package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gemba-io/gemba/hub"
	"github.com/gemba-io/gemba/hub/act"
	"github.com/gemba-io/gemba/internal/natstest"
)

// An outbox record the command cannot read (undecodable: a hand edit, a newer release's format)
// may be a dead letter: `actions dead` names it and exits 1. It used to skip it as if removed and
// say "0 dead-lettered", exit 0.
func TestActionsDeadNamesAnUnreadableRecord(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	dir := t.TempDir()
	cfgFile := writeFile(t, filepath.Join(dir, "hub.yaml"), fmt.Sprintf(`hub: {id: t1, data_dir: %s/data}
nats: {servers: [%q]}
guard: {max_discount: 20}
act:
  channels:
    web: {webhook: {url: "http://127.0.0.1:1/hook", secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw, timeout: 2s}}
`, dir, n.URL()))
	ctx := context.Background()
	hcfg, err := hub.Load(cfgFile, os.LookupEnv)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := act.Open(ctx, js, *hcfg.Act, nil); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, hcfg.Act.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	id := fmt.Sprintf("%032x", 0xbad)
	if _, err := kv.Put(ctx, "a."+id, []byte(`{"state": 7`)); err != nil {
		t.Fatal(err)
	}
	out, e, err := runCobra(t, actionsCmd(), "dead", "-c", cfgFile)
	if exitCode(err) != 1 || !strings.Contains(out+e, "a."+id) || strings.Contains(out, "0 dead-lettered\n") || !strings.Contains(out, "could not be read") {
		t.Fatalf("actions dead with an undecodable record: exit %d (%v)\n%s%s\nwant exit 1 naming its key", exitCode(err), err, out, e)
	}
}
