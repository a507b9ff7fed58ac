package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

// twinDoc is a replica named twin on the server at url, with the decision room on.
func twinDoc(url string) string {
	return fmt.Sprintf(`
hub: {id: twin, data_dir: "${DIR}", log: {level: info}}
http: {listen: "127.0.0.1:${HTTP_PORT}", write_token: w}
nats: {servers: ["%s"]}
commerce: {channels: [web]}
guard: {max_discount: 20}
monitor: {enabled: false}
`, url)
}

// startLogged runs a hub with its log in logs; it returns once the hub has started (its Ready).
func startLogged(t *testing.T, cfg *Config, logs *testutil.Buffer) *running {
	t.Helper()
	ready := make(chan string, 1)
	h, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(logs, nil)), Ready: ready})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{h: h, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- h.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	select {
	case <-ready:
	case err := <-r.done:
		r.cancel = nil
		t.Fatalf("Run: %v\n%s", err, logs)
	case <-time.After(60 * time.Second):
		t.Fatalf("hub not started\n%s", logs)
	}
	return r
}

// presenceKV is the replicas' presence bucket (GEMBA_REPLICAS) once a hub has created it.
func presenceKV(t *testing.T, js jetstream.JetStream) jetstream.KeyValue {
	t.Helper()
	var kv jetstream.KeyValue
	testutil.WaitFor(t, 10*time.Second, "the presence bucket GEMBA_REPLICAS", func() bool {
		var err error
		kv, err = js.KeyValue(context.Background(), "GEMBA_REPLICAS")
		return err == nil
	})
	return kv
}

// TestSameReplicaNameRefused: a second replica started with the name of a running one (hub.id,
// which defaults to the host name: two containers of one host, a copied config) would take the
// first one's decision claims, approvals and delivery leases for its own. It waits for the name's
// presence to lapse, sees it refreshed, and refuses to start with an error naming the name and the
// key to set; the first keeps running.
func TestSameReplicaNameRefused(t *testing.T) {
	n := natstest.JetStream(t)
	var logsA, logsB testutil.Buffer
	a := startLogged(t, testConfig(t, twinDoc(n.URL())), &logsA)

	h, err := New(testConfig(t, twinDoc(n.URL())), Options{Logger: slog.New(slog.NewTextHandler(&logsB, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), `"twin"`) || !strings.Contains(err.Error(), "hub.id") {
			t.Errorf("second replica: Run: %v; want an error naming the replica name twin and hub.id", err)
		}
	case <-time.After(60 * time.Second):
		cancel()
		<-done
		t.Fatalf("a second replica named twin runs beside the first one\n%s", logsB.String())
	}
	if !strings.Contains(logsB.String(), "waiting") {
		t.Errorf("the second replica did not log why it waited:\n%s", logsB.String())
	}
	if rd := a.h.Readiness(); strings.Contains(strings.Join(rd.Reasons, ";"), "twin") {
		t.Errorf("the first replica was disturbed: %v", rd.Reasons)
	}
}

// TestReplicaNameReleasedOnStop: a clean stop gives the name back at once: the presence key is gone
// when Run returns, and a replica of that name starts again without waiting.
func TestReplicaNameReleasedOnStop(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	var logs testutil.Buffer
	a := startLogged(t, testConfig(t, twinDoc(n.URL())), &logs)
	kv := presenceKV(t, js)
	if _, err := kv.Get(context.Background(), "twin"); err != nil {
		t.Fatalf("presence of the running replica: %v", err)
	}
	a.stop(t)
	if _, err := kv.Get(context.Background(), "twin"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("presence after a clean stop: %v; want it released (key not found)", err)
	}
	var logs2 testutil.Buffer
	startLogged(t, testConfig(t, twinDoc(n.URL())), &logs2)
	if strings.Contains(logs2.String(), "waiting") {
		t.Errorf("a restart after a clean stop waited:\n%s", logs2.String())
	}
}

// TestReplicaNameAfterKill: a replica killed without releasing its name (SIGKILL, a crash: its
// presence stays and stops being refreshed) is restarted under the same name: the new process
// waits, saying why, until the presence lapses, and then starts.
func TestReplicaNameAfterKill(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	ctx := context.Background()
	// The killed process's presence, refreshed until the new one has seen it (then the kill).
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "GEMBA_REPLICAS", History: 1, TTL: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	dead, _ := json.Marshal(map[string]any{"instance": "killed-one", "host": "h", "pid": 1})
	if _, err := kv.Put(ctx, "twin", dead); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, twinDoc(n.URL()))
	var logs testutil.Buffer
	ready := make(chan string, 1)
	h, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil)), Ready: ready})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	r := &running{h: h, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- h.Run(rctx) }()
	t.Cleanup(func() { r.stop(t) })
	testutil.WaitFor(t, 30*time.Second, "the new process waiting for the killed one's presence", func() bool {
		if strings.Contains(logs.String(), "waiting") {
			return true
		}
		_, _ = kv.Put(ctx, "twin", dead) // alive until then
		return false
	})
	select {
	case <-ready:
	case err := <-r.done:
		r.cancel = nil
		t.Fatalf("Run: %v\n%s", err, logs.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("the restarted replica did not start after the killed one's presence lapsed\n%s", logs.String())
	}
	e, err := kv.Get(ctx, "twin")
	if err != nil || strings.Contains(string(e.Value()), "killed-one") {
		t.Errorf("presence after the restart: %v; want the new instance's", err)
	}
}

// TestReplicaNameTakenOver: a running replica whose presence another instance has taken (it was
// paused past the lease, and a process of the same name started) stops deciding and acting: not
// ready with the reason, approvals refused, rather than both acting under one name.
func TestReplicaNameTakenOver(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	var logs testutil.Buffer
	a := startLogged(t, testConfig(t, twinDoc(n.URL())), &logs)
	kv := presenceKV(t, js)
	other, _ := json.Marshal(map[string]any{"instance": "the-other-one", "host": "elsewhere", "pid": 2})
	if _, err := kv.Put(context.Background(), "twin", other); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 30*time.Second, "not ready, the name taken over", func() bool {
		rd := a.h.Readiness()
		return !rd.Ready && strings.Contains(strings.Join(rd.Reasons, ";"), "taken over")
	})
	req, _ := http.NewRequest(http.MethodPost, "http://"+a.h.Addr()+"/api/v1/approvals/"+strings.Repeat("ab", 16)+"/approve", strings.NewReader(`{"by": "x", "reason": "y"}`))
	req.Header.Set("Authorization", "Bearer w")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("approve on a replica whose name was taken over: %d, want 503", resp.StatusCode)
	}
	a.stop(t)
	if e, err := kv.Get(context.Background(), "twin"); err != nil || !strings.Contains(string(e.Value()), "the-other-one") {
		t.Errorf("the stopped replica removed the other instance's presence: %v", err)
	}
}
