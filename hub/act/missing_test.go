package act

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

// TestActionsStreamDeletedWhileRunning: the actions stream deleted under a running loop (an
// operator's `nats stream rm ACTIONS`) held every action pending for good — each publish retried,
// nothing said but a WARN per attempt — until a restart created the stream again. The outbox says
// why it cannot deliver (Problem, an ERROR naming the stream), creates the stream again with its
// configured settings after a short pause, and delivers what waited, once.
func TestActionsStreamDeletedWhileRunning(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := connect(t, n)
	var logs testutil.Buffer
	cfg := testConfig("")
	cfg.DuplicateWindow = 7 * time.Minute
	o, err := Open(context.Background(), js, cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	run(t, o)
	ctx := context.Background()
	a := hold("rs3:hold:sku-1:store:2026-12-04T20", "store")
	if _, err := o.Enqueue(ctx, a); err != nil {
		t.Fatal(err)
	}
	waitState(t, o, a.DecisionID, Done, EventStart)
	if err := js.DeleteStream(ctx, "ACTIONS"); err != nil {
		t.Fatal(err)
	}
	b := hold("rs3:hold:sku-2:store:2026-12-04T20", "store")
	if _, err := o.Enqueue(ctx, b); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the outbox saying the stream is missing", func() bool {
		return strings.Contains(o.Problem(), "ACTIONS")
	})
	waitState(t, o, b.DecisionID, Done, EventStart)
	if p := o.Problem(); p != "" {
		t.Errorf("Problem after the stream is back: %q", p)
	}
	msgs := streamMsgs(t, js, "ACTIONS")
	if len(msgs) != 1 || len(msgs[b.DecisionID]) != 1 {
		t.Errorf("stream holds %v, want %s once (the one delivered before the deletion left with it)", msgs, b.DecisionID)
	}
	s, err := js.Stream(ctx, "ACTIONS")
	if err != nil {
		t.Fatal(err)
	}
	if c := s.CachedInfo().Config; c.Duplicates != cfg.DuplicateWindow || c.Storage != jetstream.FileStorage {
		t.Errorf("stream created again with duplicates %s storage %s, want the configured %s, file", c.Duplicates, c.Storage, cfg.DuplicateWindow)
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "ACTIONS") {
		t.Errorf("no ERROR naming the stream:\n%s", logs.String())
	}
}
