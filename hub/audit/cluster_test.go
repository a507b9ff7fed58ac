package audit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

// Deciders publish continuously under the rules they last saw while a rollback lands (R3): no
// record after the rollback's in the stream carries the rules before it, and every refused
// record was refused as fenced.
func TestNoOldVersionAfterRollbackUnderLoad(t *testing.T) {
	nodes := natstest.Cluster(t, 3)
	ctx := context.Background()
	var logs []*Log
	for i := range 3 {
		_, js := natstest.Connect(t, nodes[i].URL())
		logs = append(logs, openLog(t, js, 3))
	}
	s1, err := logs[0].RecordChange(ctx, Change{Op: OpActivate, Active: "v1", By: "a"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	var fence atomic.Uint64 // what the deciders "follow"; updated after the rollback lands
	fence.Store(s1)
	var next atomic.Int64
	var published, fenced atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 6 {
		l := logs[w%3]
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				f := fence.Load()
				r := record(int(next.Add(1)), EventDecided, OutcomeFired)
				r.RuleSet.Version, r.RuleSet.ChangeSeq = map[bool]string{true: "v1", false: "v0"}[f == s1], f
				_, err := l.Publish(ctx, r, f)
				switch {
				case errors.Is(err, ErrFenced):
					fenced.Add(1)
				case err != nil:
					t.Errorf("publish: %v", err)
					return
				default:
					published.Add(1)
				}
			}
		})
	}
	testutil.WaitFor(t, 30*time.Second, "some records under v1", func() bool { return published.Load() > 50 })
	s2, err := logs[1].RecordChange(ctx, Change{Op: OpRollback, Active: "v0", By: "b"}, s1)
	if err != nil {
		t.Fatal(err)
	}
	// The deciders keep publishing at the old fence for a while, as a slow replica would.
	before := fenced.Load()
	testutil.WaitFor(t, 30*time.Second, "records refused by the fence", func() bool { return fenced.Load() > before+20 })
	fence.Store(s2)
	after := published.Load()
	testutil.WaitFor(t, 30*time.Second, "records under v0", func() bool { return published.Load() > after+50 })
	close(stop)
	wg.Wait()

	st, err := logs[0].stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	old, newer := 0, 0
	for seq := s2 + 1; seq <= st.State.LastSeq; seq++ {
		m, err := logs[0].stream.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		r, ok := logs[0].decodeRecord(m)
		if !ok {
			t.Fatalf("seq %d does not decode", seq)
		}
		if r.RuleSet.ChangeSeq < s2 || r.RuleSet.Version != "v0" {
			old++
		} else {
			newer++
		}
	}
	if old != 0 || newer == 0 {
		t.Fatalf("after the rollback at %d: %d records under the old rules, %d under the new", s2, old, newer)
	}
	t.Logf("published %d, fenced %d, %d after the rollback; %d publishes repeated while the server could not check", published.Load(), fenced.Load(), newer, logs[0].Stats.Busy.Load()+logs[1].Stats.Busy.Load()+logs[2].Stats.Busy.Load())
}

// A follower keeps following when the stream's leader goes away.
func TestFollowChangesLeaderChange(t *testing.T) {
	nodes := natstest.Cluster(t, 3)
	ctx := context.Background()
	_, js := natstest.Connect(t, natstest.URLs(nodes...))
	l, err := Open(ctx, js, Config{Prefix: "gemba", Replicas: 3}, testutil.Logger(t, slog.LevelDebug))
	if err != nil {
		t.Fatal(err)
	}
	s1, err := l.RecordChange(ctx, Change{Op: OpActivate, Active: "v1", By: "a"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	var last atomic.Uint64
	var seen atomic.Int64
	stop, err := l.FollowChanges(func(c Change) { last.Store(c.Seq); seen.Store(time.Now().UnixNano()) })
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	testutil.WaitFor(t, 10*time.Second, "the current state", func() bool { return last.Load() == s1 })
	info, err := l.stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if n.S != nil && n.S.Name() == info.Cluster.Leader {
			n.Stop()
		}
	}
	var s2 uint64
	var recorded time.Time
	testutil.WaitFor(t, 60*time.Second, "a change after the leader went away", func() bool {
		if s2 == 0 {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			s2, _ = l.RecordChange(cctx, Change{Op: OpRollback, Active: "v0", By: "b"}, s1)
			recorded = time.Now()
			cancel()
		}
		return s2 != 0 && last.Load() == s2
	})
	t.Logf("change recorded → seen by the follower: %v (%d new consumers)", time.Unix(0, seen.Load()).Sub(recorded), l.Stats.Refollows.Load())
}

// A follower whose consumer lived on the stream leader, connected to another node, sees the next
// change soon after it is recorded when that node stops: the ordered consumer alone noticed only
// after two missed idle heartbeats (10 s), so a rollback reached such a replica 10 s late.
func TestFollowChangesConsumerNodeStops(t *testing.T) {
	nodes := natstest.Cluster(t, 3)
	ctx := context.Background()
	_, js := natstest.Connect(t, natstest.URLs(nodes...))
	l := openLog(t, js, 3)
	info, err := l.stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var leader, other *natstest.Node
	for _, n := range nodes {
		if n.S.Name() == info.Cluster.Leader {
			leader = n
		} else {
			other = n
		}
	}
	// The follower's client is on a node that stays: it is not disconnected, and nothing but the
	// consumer's silence tells it that its consumer went away.
	nc, fjs := natstest.Connect(t, other.URL())
	fl, err := Open(ctx, fjs, Config{Prefix: "gemba", Replicas: 3}, testutil.Logger(t, slog.LevelDebug))
	if err != nil {
		t.Fatal(err)
	}
	s1, err := l.RecordChange(ctx, Change{Op: OpActivate, Active: "v1", By: "a"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	var last atomic.Uint64
	var seen atomic.Int64
	var stop func()
	// The server places the follower's consumer (one replica) on any of the stream's nodes: follow
	// again until it is on the leader, the node that stops.
	for try := 0; ; try++ {
		stop, err = fl.FollowChanges(func(c Change) { last.Store(c.Seq); seen.Store(time.Now().UnixNano()) })
		if err != nil {
			t.Fatal(err)
		}
		testutil.WaitFor(t, 10*time.Second, "the current state", func() bool { return last.Load() == s1 })
		var on []string
		for ci := range fl.stream.ListConsumers(ctx).Info() {
			if ci.Cluster != nil {
				on = append(on, ci.Cluster.Leader)
			}
		}
		if len(on) == 1 && on[0] == leader.S.Name() && nc.ConnectedServerName() != on[0] {
			break
		}
		if try == 30 {
			t.Fatalf("the follower's consumer never landed on the stream leader %s (on %v)", leader.S.Name(), on)
		}
		stop()
		last.Store(0)
		for name := range fl.stream.ConsumerNames(ctx).Name() { // stop leaves it to expire
			if err := fl.stream.DeleteConsumer(ctx, name); err != nil {
				t.Fatal(err)
			}
		}
	}
	defer stop()
	stopped := time.Now()
	leader.Stop()
	var s2 uint64
	var recorded time.Time
	testutil.WaitFor(t, 60*time.Second, "a change recorded after the leader went away", func() bool {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		s2, _ = l.RecordChange(cctx, Change{Op: OpRollback, Active: "v0", By: "b"}, s1)
		recorded = time.Now()
		return s2 != 0
	})
	testutil.WaitForState(t, 5*time.Second, "the follower seeing the change", func() (bool, string) {
		return last.Load() == s2, fmt.Sprintf("change %d recorded, the follower at %d", s2, last.Load())
	})
	at := time.Unix(0, seen.Load())
	t.Logf("leader stopped → change recorded %v; recorded → seen by the follower %v (%d new consumers)", recorded.Sub(stopped), at.Sub(recorded), fl.Stats.Refollows.Load())
}

// Two writers computing from the same state on their own connections: exactly one lands.
func TestConcurrentChangeOneWins(t *testing.T) {
	n := natstest.JetStream(t)
	_, js1 := natstest.Connect(t, n.URL())
	_, js2 := natstest.Connect(t, n.URL())
	a, b := openLog(t, js1, 1), openLog(t, js2, 1)
	ctx := context.Background()
	var expect uint64
	for round := range 20 {
		var wins, conflicts atomic.Int64
		var wg sync.WaitGroup
		for i, l := range []*Log{a, b} {
			wg.Go(func() {
				_, err := l.RecordChange(ctx, Change{Op: OpActivate, Active: string(rune('a' + i)), By: "w"}, expect)
				switch {
				case err == nil:
					wins.Add(1)
				case errors.Is(err, ErrConflict):
					conflicts.Add(1)
				default:
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if wins.Load() != 1 || conflicts.Load() != 1 {
			t.Fatalf("round %d: %d won, %d conflicted", round, wins.Load(), conflicts.Load())
		}
		cur, err := a.Current(ctx)
		if err != nil {
			t.Fatal(err)
		}
		expect = cur.Seq
	}
}

// A consumer that stops delivering without a word (its node crashed or was cut off: no shutdown
// notice, the client's connection elsewhere intact; here the server pauses it) is replaced once a
// change on the stream is not delivered: the follower still sees the next change.
func TestFollowChangesSilentConsumer(t *testing.T) {
	nodes := natstest.Cluster(t, 3)
	ctx := context.Background()
	_, js := natstest.Connect(t, natstest.URLs(nodes...))
	l := openLog(t, js, 3)
	s1, err := l.RecordChange(ctx, Change{Op: OpActivate, Active: "v1", By: "a"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	var last atomic.Uint64
	var seen atomic.Int64
	stop, err := l.FollowChanges(func(c Change) { last.Store(c.Seq); seen.Store(time.Now().UnixNano()) })
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	testutil.WaitFor(t, 10*time.Second, "the current state", func() bool { return last.Load() == s1 })
	for name := range l.stream.ConsumerNames(ctx).Name() { // the consumer falls silent
		if _, err := js.PauseConsumer(ctx, l.cfg.Stream, name, time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	s2, err := l.RecordChange(ctx, Change{Op: OpRollback, Active: "v0", By: "b"}, s1)
	if err != nil {
		t.Fatal(err)
	}
	recorded := time.Now()
	testutil.WaitForState(t, 10*time.Second, "the follower seeing the change", func() (bool, string) {
		return last.Load() == s2, fmt.Sprintf("change %d recorded, the follower at %d", s2, last.Load())
	})
	// One new consumer; none when the client library re-created its ordered consumer by itself
	// first (heartbeats missed under load), which the pause did not reach.
	if n := l.Stats.Refollows.Load(); n > 1 {
		t.Fatalf("%d new consumers, want at most 1", n)
	}
	s3, err := l.RecordChange(ctx, Change{Op: OpActivate, Active: "v2", By: "c"}, s2)
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the next change on the new consumer", func() bool { return last.Load() == s3 })
	t.Logf("recorded → seen by the follower %v", time.Unix(0, seen.Load()).Sub(recorded))
	testutil.WaitForState(t, 10*time.Second, "the replaced consumer deleted", func() (bool, string) {
		var names []string
		for name := range l.stream.ConsumerNames(ctx).Name() {
			names = append(names, name)
		}
		return len(names) == 1, fmt.Sprint(names)
	})
}
