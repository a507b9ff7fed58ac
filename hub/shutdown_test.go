package hub

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/gemba-io/gemba/hub/act"
	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
)

// publishBacklog puts n features messages of per values each on the agents' stream (created here).
func publishBacklog(t *testing.T, js jetstream.JetStream, n, per int) {
	t.Helper()
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "GEMBA", Subjects: []string{"gemba.*.*.features", "gemba.*.*.status", "gemba.*.*.samples"}}); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	var futs []jetstream.PubAckFuture
	for i := range n {
		fs := make([]signal.Feature, per)
		for j := range fs {
			fs[j] = signal.Feature{Signal: fmt.Sprintf("m%d.temperature", j), Name: "mean", WindowStart: now.Add(-time.Minute),
				WindowEnd: now.Add(time.Duration(i) * time.Millisecond), Value: float64(i), Count: 10}
		}
		b := &signal.Batch{Header: signal.Header{Schema: signal.SchemaVersion, Agent: "gw1", Site: "p", Incarnation: "01",
			Stream: signal.StreamFeatures, FirstSeq: uint64(i*per + 1), LastSeq: uint64((i + 1) * per), Count: per, Sent: now},
			Features: fs}
		m := nats.NewMsg("gemba.p.gw1.features")
		m.Data = signal.AppendBatch(nil, b)
		m.Header.Set(jetstream.MsgIDHeader, b.MsgID())
		f, err := js.PublishMsgAsync(m)
		if err != nil {
			t.Fatal(err)
		}
		futs = append(futs, f)
	}
	for _, f := range futs {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			t.Fatal(err)
		}
	}
}

// TestShutdownTimeoutStopsEverythingFirst: a stop whose drain outlasts hub.shutdown_timeout (the
// agents' ingest busy with a backlog) must not close the stores and the connection under rooms still
// running, nor return as if all went well: Run returns once every room has stopped, with an error
// that says the drain timed out and what was still running, and leaves no goroutine behind.
func TestShutdownTimeoutStopsEverythingFirst(t *testing.T) {
	cfg := testConfig(t, `
hub: {id: st1, data_dir: "${DIR}", log: {level: error}, shutdown_timeout: 1ms}
http: {enabled: false}
nats: {embedded: {listen: "127.0.0.1:${NATS_PORT}"}}
commerce: {channels: [web]}
guard: {max_discount: 20}
features:
  - {name: temperature, signal: "*.temperature", feature: mean, key: signal, max_age: 1h}
ingest: {batch: 8}
`)
	ignore := goleak.IgnoreCurrent()
	h, err := New(cfg, Options{Logger: testutil.Logger(t, slog.LevelWarn)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	var nc *nats.Conn
	testutil.WaitFor(t, 20*time.Second, "the embedded NATS server", func() bool {
		c, err := nats.Connect("nats://" + cfg.NATS.Embedded.Listen)
		if err == nil {
			nc = c
		}
		return err == nil
	})
	js, _ := jetstream.New(nc)
	publishBacklog(t, js, 400, 200)
	nc.Close()
	testutil.WaitFor(t, 30*time.Second, "ingest busy with the backlog", func() bool {
		f := h.feats.Load()
		return f != nil && f.Stats.Applied.Load() > 0
	})
	cancel()
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return")
	}
	// Run has closed the stores and the connection: no room may still be running on them.
	buf := make([]byte, 1<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	for _, room := range []string{"ingest/agents.(*Consumer).Run", "ingest/commerce.(*Consumer).Run", "act.(*Outbox).Run", "decide.(*Engine).Run"} {
		if strings.Contains(stacks, room) {
			t.Errorf("%s still running after Run returned", room)
		}
	}
	if err == nil || !strings.Contains(err.Error(), "shutdown_timeout") || !strings.Contains(err.Error(), "agents ingest") {
		t.Errorf("Run: %v; want an error saying the drain outlasted shutdown_timeout, naming the agents' ingest", err)
	}
	goleak.VerifyNone(t, ignore)
}

// TestNotReadyWhileActionsStreamMissing: the actions stream deleted while the hub runs held every
// action pending, with /readyz at 200. The replica says why it delivers nothing, then (the stream
// created again by the outbox) delivers the action and is ready again.
func TestNotReadyWhileActionsStreamMissing(t *testing.T) {
	n := natstest.JetStream(t)
	cfg := testConfig(t, `
hub: {id: st2, data_dir: "${DIR}", log: {level: error}}
http: {listen: "127.0.0.1:${HTTP_PORT}"}
nats: {servers: ["`+n.URL()+`"]}
commerce: {channels: [web]}
guard: {max_discount: 20}
monitor: {enabled: false}
`)
	_, js := natstest.Connect(t, n.URL())
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "GEMBA", Subjects: []string{"gemba.*.*.features", "gemba.*.*.status"}}); err != nil {
		t.Fatal(err)
	}
	r := start(t, cfg)
	testutil.WaitFor(t, 30*time.Second, "ready", func() bool { return r.h.Readiness().Ready })
	if err := js.DeleteStream(ctx, cfg.Act.Stream); err != nil {
		t.Fatal(err)
	}
	o := r.h.dec.Load().outbox
	a := act.Action{DecisionID: "v1:hold:A:web:2026-12-05T20", Kind: act.Hold, SKU: "A", Site: "s1", Channel: "web",
		Start: time.Now(), Reason: "test", RuleSetVersion: "v1", Rule: "r"}
	if _, err := o.Enqueue(ctx, a); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 15*time.Second, "not ready, naming the actions stream", func() bool {
		rd := r.h.Readiness()
		return !rd.Ready && strings.Contains(strings.Join(rd.Reasons, ";"), cfg.Act.Stream)
	})
	testutil.WaitFor(t, 30*time.Second, "the action delivered", func() bool {
		rec, err := o.Get(ctx, a.DecisionID)
		return err == nil && rec.State == act.Done
	})
	testutil.WaitFor(t, 15*time.Second, "ready again", func() bool { return r.h.Readiness().Ready })
}

// TestNotReadyWhileDecisionStateMissing: the guard's bucket or the outbox's deleted while the hub
// runs left the replica ready, deciding into nothing. Neither may be created again empty by the
// running hub (the day's caps, the delivered actions would be forgotten): the replica says which is
// missing and why it is not created, leaves it missing, and is ready again once it is back.
func TestNotReadyWhileDecisionStateMissing(t *testing.T) {
	was := keptEvery
	keptEvery = 50 * time.Millisecond
	t.Cleanup(func() { keptEvery = was })
	n := natstest.JetStream(t)
	cfg := testConfig(t, `
hub: {id: st3, data_dir: "${DIR}", log: {level: error}}
http: {listen: "127.0.0.1:${HTTP_PORT}"}
nats: {servers: ["`+n.URL()+`"]}
commerce: {channels: [web]}
guard: {max_discount: 20}
monitor: {enabled: false}
`)
	_, js := natstest.Connect(t, n.URL())
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "GEMBA", Subjects: []string{"gemba.*.*.features", "gemba.*.*.status"}}); err != nil {
		t.Fatal(err)
	}
	r := start(t, cfg)
	testutil.WaitFor(t, 30*time.Second, "ready", func() bool { return r.h.Readiness().Ready })
	for _, bucket := range []string{"GEMBA_GUARD", cfg.Act.Bucket} {
		kv, err := js.KeyValue(ctx, bucket)
		if err != nil {
			t.Fatal(err)
		}
		st, err := kv.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		kc := jetstream.KeyValueConfig{Bucket: bucket, History: uint8(st.History())}
		if err := js.DeleteKeyValue(ctx, bucket); err != nil {
			t.Fatal(err)
		}
		testutil.WaitFor(t, 15*time.Second, "not ready, naming "+bucket+" and --recreate", func() bool {
			rd := r.h.Readiness()
			return !rd.Ready && strings.Contains(strings.Join(rd.Reasons, ";"), "--recreate "+bucket)
		})
		if _, err := js.KeyValue(ctx, bucket); err == nil {
			t.Errorf("%s created again empty while the hub runs", bucket)
		}
		if _, err := js.CreateKeyValue(ctx, kc); err != nil { // the operator restores it
			t.Fatal(err)
		}
		testutil.WaitFor(t, 15*time.Second, "ready once "+bucket+" is back", func() bool { return r.h.Readiness().Ready })
	}
	// Delivery goes on with the restored buckets.
	o := r.h.dec.Load().outbox
	a := act.Action{DecisionID: "v1:hold:A:web:2026-12-05T21", Kind: act.Hold, SKU: "A", Site: "s1", Channel: "web",
		Start: time.Now(), Reason: "test", RuleSetVersion: "v1", Rule: "r"}
	if _, err := o.Enqueue(ctx, a); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 30*time.Second, "the action delivered", func() bool {
		rec, err := o.Get(ctx, a.DecisionID)
		return err == nil && rec.State == act.Done
	})
}
