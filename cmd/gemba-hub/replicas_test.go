package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/promtext"
	"github.com/gemba-io/gemba/internal/testutil"
	gsig "github.com/gemba-io/gemba/signal"
)

// replica is one gemba-hub child process.
type replica struct {
	name   string
	cmd    *exec.Cmd
	base   string // http://host:port
	stderr *testutil.Buffer
	exited chan struct{}
	err    error
}

func startReplica(t *testing.T, dir, name, natsURL string) *replica {
	t.Helper()
	port := testutil.FreePort(t)
	file := writeFile(t, filepath.Join(dir, name+".yaml"), fmt.Sprintf(`hub: {id: %s, data_dir: %s/%s, shutdown_timeout: 10s, log: {level: warn, format: text}}
http: {listen: "127.0.0.1:%d"}
nats: {servers: ["%s"]}
ingest:
  ack_wait: 2s       # a killed replica's messages come back quickly
  batch: 64
  production:
    - {signal: "*.pack.parts", feature: units}
features:
  - {name: units, signal: "*.pack.parts", feature: units, key: sku, max_age: 1h}
`, name, dir, name, port, natsURL))
	r := runReplica(t, name, "", file)
	r.base = fmt.Sprintf("http://127.0.0.1:%d", port)
	return r
}

// runReplica starts `gemba-hub run -c file [extra...]` in dir as replica name, killed when the test ends.
func runReplica(t *testing.T, name, dir, file string, extra ...string) *replica {
	t.Helper()
	r := &replica{name: name, cmd: hubCmd(dir, nil, append([]string{"run", "-c", file}, extra...)...), stderr: &testutil.Buffer{},
		exited: make(chan struct{})}
	r.cmd.Stderr = r.stderr
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.err = r.cmd.Wait(); close(r.exited) }()
	t.Cleanup(func() {
		_ = r.cmd.Process.Kill()
		<-r.exited
	})
	return r
}

func (r *replica) ready() bool {
	_, code := readyz(r.base)
	return code == http.StatusOK
}

// metric sums a metric of the replica's /metrics (-1 when unreadable).
func (r *replica) metric(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	m, err := promtext.Scrape(r.base + "/metrics")
	if err != nil {
		return -1
	}
	return m.Sum(name, labels...)
}

// ledgerMsg is one agent message of the test's ledger: an envelope and its identity.
type ledgerMsg struct {
	subject, id string
	data        []byte
}

// agentLedger builds n feature messages from two agents, each with perMsg units-per-SKU records,
// as gemba-agent's uplink sends them (schema 2 envelope, buffer sequences, the Msg-Id of
// signal.MsgID), and the units per SKU they add up to.
func agentLedger(n, perMsg, skus int) ([]ledgerMsg, map[string]float64) {
	base := time.Now().Add(-time.Hour).Truncate(10 * time.Second).UTC()
	total := map[string]float64{}
	seq := map[string]uint64{}
	msgs := make([]ledgerMsg, n)
	for i := range msgs {
		agent := fmt.Sprintf("gw%d", i%2+1)
		start := base.Add(time.Duration(i) * 10 * time.Second)
		end := start.Add(10 * time.Second)
		fs := make([]gsig.Feature, perMsg)
		for j := range fs {
			k := (i*perMsg + j) % skus
			sku := fmt.Sprintf("SKU-%03d", k)
			v := float64(1 + (i*7+j*3)%20)
			fs[j] = gsig.Feature{Signal: fmt.Sprintf("line%d.pack.parts", k%3+1), Name: "units", WindowStart: start, WindowEnd: end,
				Value: v, Count: 10, Labels: gsig.Labels{{Key: "sku", Value: sku}}}
			total[sku] += v
		}
		first := seq[agent] + 1
		seq[agent] += uint64(perMsg)
		h := gsig.Header{Schema: gsig.SchemaVersion, Agent: agent, Site: "plant-e2e", Stream: gsig.StreamFeatures,
			ConfigVersion: "e2e", Incarnation: "inc-" + agent, FirstSeq: first, LastSeq: seq[agent], Count: perMsg,
			Oldest: end, Newest: end, Sent: time.Now().UTC()}
		msgs[i] = ledgerMsg{subject: gsig.Subject("gemba", h.Site, h.Agent, h.Stream), id: h.MsgID(),
			data: gsig.AppendBatch(nil, &gsig.Batch{Header: h, Features: fs})}
	}
	return msgs, total
}

// TestTwoReplicasOneKilledMidLoad runs two gemba-hub processes on one shared consumer while a known
// ledger of agent feature messages is published, SIGKILLs one in the middle, then re-sends copies
// of already published messages without their Msg-Id (as a replay beyond JetStream's duplicate
// window would store them). Every unit is applied exactly once: the survivor's inventory equals the
// ledger exactly, every message is settled, the dedup bucket holds one marker per identity, and the
// survivor counts one duplicate per copy (more only for duplicates JetStream delivered again).
func TestTwoReplicasOneKilledMidLoad(t *testing.T) {
	if testing.Short() && os.Getenv("CI") == "" { // CI runs everything
		t.Skip("runs two hub processes (~20 s)")
	}
	dir := t.TempDir()
	ns := natstest.JetStream(t)
	createAgentStream(t, ns.URL(), 1)

	a, b := startReplica(t, dir, "hub-a", ns.URL()), startReplica(t, dir, "hub-b", ns.URL())
	testutil.WaitFor(t, 60*time.Second, "both replicas ready", func() bool { return a.ready() && b.ready() })

	const n, perMsg, skus, copies = 1500, 4, 40, 200
	msgs, want := agentLedger(n, perMsg, skus)
	_, js := natstest.Connect(t, ns.URL())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	publish := func(m ledgerMsg, withID bool) {
		opts := []jetstream.PublishOpt{}
		if withID {
			opts = append(opts, jetstream.WithMsgID(m.id))
		}
		if _, err := js.Publish(ctx, m.subject, m.data, opts...); err != nil {
			t.Fatalf("publish %s: %v", m.id, err)
		}
	}

	// A steady load; replica A dies a third of the way through, while both are applying it.
	killAt := n / 3
	for i, m := range msgs {
		publish(m, true)
		if i == killAt {
			testutil.WaitFor(t, 30*time.Second, "both replicas applying messages", func() bool {
				return a.metric(t, "gemba_hub_ingest_messages_total") > 0 && b.metric(t, "gemba_hub_ingest_messages_total") > 0
			})
			// A burst just before the kill, so that hub-a dies with messages in hand (the hub is fast
			// enough to be idle between paced messages). The loop publishes them again below: same
			// Msg-Id, dropped by JetStream as duplicates.
			for _, m := range msgs[i+1 : min(i+1+300, len(msgs))] {
				publish(m, true)
			}
			if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			<-a.exited
			t.Logf("hub-a killed after %d of %d messages were published", i+1, n)
		}
		if i%50 == 0 {
			time.Sleep(20 * time.Millisecond) // pacing the load, not synchronisation
		}
	}
	for i := range copies { // stored again: JetStream only deduplicates a Msg-Id
		publish(msgs[i*killAt/copies], false)
	}

	// Everything settled on the shared consumer, then the state is complete.
	cons, err := js.Consumer(ctx, "GEMBA", "gemba-hub")
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 60*time.Second, "every message acknowledged", func() bool {
		ci, err := cons.Info(ctx)
		return err == nil && ci.NumPending == 0 && ci.NumAckPending == 0
	})
	got := map[string]float64{}
	testutil.WaitFor(t, 10*time.Second, "the survivor's inventory", func() bool {
		got = map[string]float64{}
		var page struct {
			Positions []struct {
				SKU      string  `json:"sku"`
				Produced float64 `json:"produced"`
			} `json:"positions"`
		}
		if !hubGet(b.base+"/api/v1/inventory?site=plant-e2e", &page) {
			return false
		}
		for _, p := range page.Positions {
			got[p.SKU] = p.Produced
		}
		return len(got) == skus
	})
	for sku, w := range want {
		if got[sku] != w {
			t.Errorf("%s: produced %v, ledger %v", sku, got[sku], w)
		}
	}

	kv, err := js.KeyValue(ctx, "GEMBA_DEDUP")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	markers := 0
	for range keys.Keys() {
		markers++
	}
	if markers != n {
		t.Errorf("dedup bucket holds %d identities, want %d (one per ledger message)", markers, n)
	}
	// Each copy is caught once; a duplicate delivered again (its ack raced ack_wait) is caught again.
	if d, re := b.metric(t, "gemba_hub_ingest_duplicates_total"), b.metric(t, "gemba_hub_ingest_redelivered_total"); d < copies || d > copies+re {
		t.Errorf("survivor counted %v duplicates with %v redeliveries, want %d (one per copy) up to %v", d, re, copies, copies+re)
	}
	if re := b.metric(t, "gemba_hub_ingest_redelivered_total"); re == 0 {
		t.Errorf("nothing was redelivered: the kill found hub-a with no message in hand, which tests nothing")
	}
	if e := b.metric(t, "gemba_hub_ingest_malformed_total"); e != 0 {
		t.Errorf("%v messages terminated as malformed", e)
	}
	t.Logf("survivor: %v messages, %v redelivered, production outcomes applied %v / duplicate %v",
		b.metric(t, "gemba_hub_ingest_messages_total"), b.metric(t, "gemba_hub_ingest_redelivered_total"),
		b.metric(t, "gemba_hub_ingest_production_total", "outcome", "applied"),
		b.metric(t, "gemba_hub_ingest_production_total", "outcome", "duplicate"))

	// The survivor still drains cleanly.
	if err := b.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-b.exited:
		if b.err != nil {
			t.Errorf("hub-b after SIGTERM: %v\n%s", b.err, b.stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Errorf("hub-b did not exit after SIGTERM\n%s", b.stderr.String())
	}
	if t.Failed() {
		t.Logf("hub-a stderr:\n%s\nhub-b stderr:\n%s", tail(a.stderr.String()), tail(b.stderr.String()))
	}
}

func tail(s string) string {
	lines := strings.Split(s, "\n")
	return strings.Join(lines[max(0, len(lines)-40):], "\n")
}

// hubGet decodes a 200 answer of the hub's API into v.
func hubGet(url string, v any) bool {
	resp, err := http.Get(url)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	return resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(v) == nil
}
