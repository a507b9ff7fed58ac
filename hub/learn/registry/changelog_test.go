package registry

import (
	"context"
	"encoding/json"
	"testing"
)

// Purging the state key (an operator resetting the pointers) does not restart the change numbers:
// the next change is numbered after the log's last one and is itself in the log, not lost to a
// key an old change already holds.
func TestChangeNumbersContinueAfterStatePurge(t *testing.T) {
	js := connect(t, startServer(t))
	ctx := context.Background()
	r := openRegistry(t, js, Options{})
	v, err := r.Store(ctx, fitSet(t, synthetic(t, 4, 60, 1), "test"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Promote(ctx, v, "alice", "first"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Shadow(ctx, v, "bob", "second"); err != nil {
		t.Fatal(err)
	}
	if err := r.kv.Purge(ctx, stateKey); err != nil {
		t.Fatal(err)
	}
	// The history is the log's, state key or not.
	if log, err := r.Changes(ctx); err != nil || len(log) != 2 || log[0].By != "alice" || log[1].By != "bob" {
		t.Errorf("history with the state key purged: %+v, %v; want alice's and bob's changes", log, err)
	}
	c, err := r.Promote(ctx, v, "carol", "after the purge")
	if err != nil {
		t.Fatal(err)
	}
	if c.Seq != 3 {
		t.Errorf("the change after the purge is #%d, want #3 (the log holds #1 and #2)", c.Seq)
	}
	e, err := r.kv.Get(ctx, changeKey(c.Seq))
	if err != nil {
		t.Fatalf("change #%d not in the log: %v", c.Seq, err)
	}
	var logged Change
	if err := json.Unmarshal(e.Value(), &logged); err != nil {
		t.Fatal(err)
	}
	if logged.By != "carol" || logged.Why != "after the purge" {
		t.Errorf("the log's change #%d is %s by %s (%q), not the change just made (by carol)", c.Seq, logged.Op, logged.By, logged.Why)
	}
	log, err := r.Changes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(log); n != 3 || log[0].By != "alice" || log[1].By != "bob" || log[2].By != "carol" {
		t.Errorf("history after the purge: %+v", log)
	}
}
