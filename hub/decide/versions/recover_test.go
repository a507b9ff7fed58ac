package versions

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

// A message on the rules subject that is not a change (a hand-typed `nats pub`, an op of a newer
// hub) must leave a way out: a hub starting on it, an activate and a rollback still work, and
// every follower applies the change that lands.
func TestChangeAfterForeignRulesMessage(t *testing.T) {
	e, _ := newEnv(t)
	ctx := context.Background()
	v1, _ := e.reg.Store(ctx, ruleSet(1), "a")
	v2, _ := e.reg.Store(ctx, ruleSet(2), "a")
	if _, err := e.reg.Activate(ctx, v1, "a", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := e.js.Publish(ctx, "gemba.decisions.rules", []byte(`{"op":"freeze","by":"ops"}`)); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var live *Live
	stop, err := e.reg.Follow(func(l *Live) { mu.Lock(); live = l; mu.Unlock() })
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	c, err := e.reg.Activate(ctx, v2, "a", "recover")
	if err != nil {
		t.Fatalf("activate after a foreign message on the rules subject: %v", err)
	}
	if c.From != v1 || len(c.Previous) != 1 || c.Previous[0] != v1 {
		t.Fatalf("activate computed from %+v, want from v1's state", c)
	}
	testutil.WaitFor(t, 10*time.Second, "the follower on v2", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return live != nil && live.Active != nil && live.Active.Version() == v2 && live.Change.Seq == c.Seq
	})
	if rb, err := e.reg.Rollback(ctx, "a", "back"); err != nil || rb.Active != v1 {
		t.Fatalf("rollback: %+v %v", rb, err)
	}
}

// Rollback, like activate, refuses a version that is no longer stored or does not load: a change
// to it would leave every replica unable to decide (each keeps its old Live, fenced) until the next
// change, and the rollback would seem to have worked.
func TestRollbackRefusesVersionThatDoesNotLoad(t *testing.T) {
	e, _ := newEnv(t)
	ctx := context.Background()
	v1, _ := e.reg.Store(ctx, ruleSet(1), "a")
	v2, _ := e.reg.Store(ctx, ruleSet(2), "a")
	for _, v := range []string{v1, v2} {
		if _, err := e.reg.Activate(ctx, v, "a", ""); err != nil {
			t.Fatal(err)
		}
	}
	before, err := e.log.Current(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.reg.kv.Purge(ctx, key(v1)); err != nil { // the bucket lost it (recreated, another bucket configured)
		t.Fatal(err)
	}
	if _, err := e.reg.Rollback(ctx, "a", "v2 misbehaves"); !errors.Is(err, ErrUnknownVersion) {
		t.Fatalf("rollback to a version no longer stored: %v, want ErrUnknownVersion", err)
	}
	if cur, err := e.log.Current(ctx); err != nil || cur.Seq != before.Seq {
		t.Fatalf("a refused rollback recorded a change: %+v %v", cur, err)
	}
}

// Two operators roll back at once (an incident): the state goes back one version, not two. The
// second rollback was computed from the active the first one replaced; recomputed from the new
// state it would take away the version the first one returned to.
func TestConcurrentRollbackGoesBackOnce(t *testing.T) {
	e, n := newEnv(t)
	_, js2 := natstest.Connect(t, n.URL())
	other := open(t, js2, nil)
	ctx := context.Background()
	var vs []string
	for i := range 3 {
		v, _ := e.reg.Store(ctx, ruleSet(i), "a")
		if _, err := e.reg.Activate(ctx, v, "a", ""); err != nil {
			t.Fatal(err)
		}
		vs = append(vs, v)
	}
	// The other operator's rollback lands between this one's read of the state and its write
	// (the registry reads its clock right between the two).
	var once sync.Once
	e.reg.now = func() time.Time {
		once.Do(func() {
			if c, err := other.reg.Rollback(ctx, "bob", "v2 misbehaves"); err != nil || c.Active != vs[1] {
				t.Errorf("bob's rollback: %+v %v", c, err)
			}
		})
		return time.Now()
	}
	c, err := e.reg.Rollback(ctx, "alice", "v2 misbehaves")
	if err == nil {
		t.Errorf("alice's rollback from %s landed after bob's as %+v", vs[2][:8], c)
	}
	cur, err := e.log.Current(ctx)
	if err != nil || cur.Active != vs[1] {
		t.Fatalf("after two rollbacks from %s at once: active %s (%v), want %s", vs[2][:8], cur.Active[:8], err, vs[1][:8])
	}
}

// A change can reach a replica before the version it names is readable there (a replica of the
// versions bucket lagging behind its leader): the follower waits for the version a while instead of
// giving the change up for good. Here the version is stored only after the change is recorded.
func TestFollowWaitsForALaggingVersion(t *testing.T) {
	e, _ := newEnv(t)
	ctx := context.Background()
	v1, err := e.reg.Store(ctx, ruleSet(1), "a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.reg.Activate(ctx, v1, "a", ""); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var live *Live
	stop, err := e.reg.Follow(func(l *Live) { mu.Lock(); live = l; mu.Unlock() })
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	get := func() *Live { mu.Lock(); defer mu.Unlock(); return live }
	testutil.WaitFor(t, 10*time.Second, "v1 live", func() bool { l := get(); return l != nil && l.Active != nil && l.Active.Version() == v1 })
	// The next version's id, from a registry on another server: content-addressed, the same.
	other, _ := newEnv(t)
	v2, err := other.reg.Store(ctx, ruleSet(2), "a")
	if err != nil {
		t.Fatal(err)
	}
	cur, err := e.log.Current(ctx)
	if err != nil {
		t.Fatal(err)
	}
	next := audit.Change{Op: audit.OpActivate, Active: v2, Previous: []string{v1}, From: v1, To: v2, By: "a", At: time.Now().UTC()}
	seq, err := e.log.RecordChange(ctx, next, cur.Seq)
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the follower trying the unknown version again", func() bool { return e.reg.Stats.LoadRetries.Load() > 0 })
	if l := get(); e.reg.Stats.LoadFailures.Load() != 0 || l.Change.Seq >= seq {
		t.Fatalf("the change given up or applied before its version was readable: %d failures, live change %d", e.reg.Stats.LoadFailures.Load(), l.Change.Seq)
	}
	if _, err := e.reg.Store(ctx, ruleSet(2), "a"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 15*time.Second, "v2 live once readable", func() bool {
		l := get()
		return l.Active != nil && l.Active.Version() == v2 && l.Change.Seq == seq
	})
	if n := e.reg.Stats.LoadFailures.Load(); n != 0 {
		t.Fatalf("%d load failures counted for a version that arrived late", n)
	}
}

// Activating the version already active records nothing (a change fences the decisions in flight
// for nothing) and says so with ErrUnchanged and the current state: deploying twice is a no-op.
func TestActivateTheActiveRecordsNothing(t *testing.T) {
	e, _ := newEnv(t)
	ctx := context.Background()
	v, err := e.reg.Store(ctx, ruleSet(1), "a")
	if err != nil {
		t.Fatal(err)
	}
	first, err := e.reg.Activate(ctx, v, "a", "deploy")
	if err != nil {
		t.Fatal(err)
	}
	again, err := e.reg.Activate(ctx, v, "a", "deploy again")
	if !errors.Is(err, ErrUnchanged) || again.Seq != first.Seq || again.Active != v {
		t.Fatalf("activate the active version: %+v %v, want ErrUnchanged with change #%d", again, err, first.Seq)
	}
	if hist, err := e.log.Changes(ctx); err != nil || len(hist) != 1 {
		t.Fatalf("%d changes recorded (%v), want 1", len(hist), err)
	}
}
