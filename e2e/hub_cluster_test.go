package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub"
	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/promtext"
	"github.com/gemba-io/gemba/internal/testutil"
	gsig "github.com/gemba-io/gemba/signal"
)

// ledgerMsg is one agent message: its subject, identity (Nats-Msg-Id) and envelope.
type ledgerMsg struct {
	subject, id string
	data        []byte
}

// featureLedger builds n feature messages of one agent as its uplink sends them (schema 2 envelope,
// buffer sequences from first, the Msg-Id of signal.MsgID), each with perMsg units-per-SKU records,
// and adds the units per SKU to total.
func featureLedger(agent string, first uint64, n, perMsg, skus int, total map[string]float64) []ledgerMsg {
	base := time.Now().Add(-time.Hour).Truncate(10 * time.Second).UTC()
	msgs := make([]ledgerMsg, n)
	seq := first
	for i := range msgs {
		start := base.Add(time.Duration(int(first)+i) * 10 * time.Second)
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
		h := gsig.Header{Schema: gsig.SchemaVersion, Agent: agent, Site: "plant-e2e", Stream: gsig.StreamFeatures,
			ConfigVersion: "e2e", Incarnation: "inc-" + agent, FirstSeq: seq, LastSeq: seq + uint64(perMsg) - 1, Count: perMsg,
			Oldest: end, Newest: end, Sent: time.Now().UTC()}
		seq += uint64(perMsg)
		msgs[i] = ledgerMsg{subject: gsig.Subject("gemba", h.Site, h.Agent, h.Stream), id: h.MsgID(),
			data: gsig.AppendBatch(nil, &gsig.Batch{Header: h, Features: fs})}
	}
	return msgs
}

// TestHubOnClusterNodeKilledUnderLoad runs the hub (nats.replicas: 3) on a 3-node cluster started in
// process, with the agents' stream and every hub bucket at R3. While feature messages flow in, the
// node leading the agents' stream is shut down; the hub keeps ingesting through the other two, the
// node comes back at the end, and a last load passes through the healed cluster. Publishers retry
// with the same Msg-Id until acknowledged, as the agent's uplink does. Nothing lost or doubled: the
// inventory equals the ledger exactly, every message is settled, one dedup marker per identity.
func TestHubOnClusterNodeKilledUnderLoad(t *testing.T) {
	ctx, log := clusterTest(t, 3*time.Minute)
	nodes, js, hcfg := clusterHub(ctx, t)
	api, stopHub := startHub(t, hcfg, log)
	defer stopHub()
	metric := func(name string) float64 {
		m, err := promtext.Scrape(api.base + "/metrics")
		if err != nil {
			return -1
		}
		return m.Sum(name)
	}
	testutil.WaitFor(t, 60*time.Second, "the hub ready", func() bool {
		var r struct{ Ready bool }
		api.get(t, "/readyz", &r)
		return r.Ready
	})

	publish := func(m ledgerMsg) { publishRetry(ctx, t, js, m) }
	const n, perMsg, skus = 300, 4, 30
	first := map[string]float64{}
	msgs := featureLedger("gw1", 1, n, perMsg, skus, first)
	want := maps.Clone(first)
	after := featureLedger("gw1", uint64(n*perMsg+1), 50, perMsg, skus, want) // once the node is back

	leader := func(stream string) string {
		s, err := js.Stream(ctx, stream)
		if err != nil || s.CachedInfo().Cluster == nil {
			return ""
		}
		return s.CachedInfo().Cluster.Leader
	}
	var killed *natstest.Node
	t0 := time.Now()
	for i, m := range msgs {
		publish(m)
		if i == n/3 {
			testutil.WaitFor(t, 30*time.Second, "the hub applying messages", func() bool {
				return metric("gemba_hub_ingest_messages_total") > 0
			})
			name := leader("GEMBA")
			for _, nd := range nodes {
				if nd.Opts.ServerName == name {
					killed = nd
				}
			}
			if killed == nil {
				t.Fatalf("no leader of GEMBA among the nodes (%q)", name)
			}
			t.Logf("stopping %s, leader of GEMBA (inventory bucket led by %s, dedup by %s), after %d of %d messages, %v applied",
				name, leader("KV_GEMBA_INVENTORY"), leader("KV_GEMBA_DEDUP"), i+1, n, metric("gemba_hub_ingest_messages_total"))
			killed.Stop()
			t.Logf("%.1fs: stopped", time.Since(t0).Seconds())
		}
	}
	// The hub kept ingesting on two nodes: all of it is in the inventory before the node is back.
	var got map[string]float64
	if !within(90*time.Second, func() bool {
		got = api.produced(t, "plant-e2e")
		return fmt.Sprint(got) == fmt.Sprint(first)
	}) {
		t.Fatalf("with %s down: produced %v, want %v", killed.Opts.ServerName, got, first)
	}
	t.Logf("%.1fs: all applied with %s down", time.Since(t0).Seconds(), killed.Opts.ServerName)
	killed.Start()
	for _, m := range after {
		publish(m)
	}

	t.Logf("%.1fs: restarted and published", time.Since(t0).Seconds())
	cons, err := js.Consumer(ctx, "GEMBA", "gemba-hub")
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 60*time.Second, "every message acknowledged", func() bool {
		ci, err := cons.Info(ctx)
		return err == nil && ci.NumPending == 0 && ci.NumAckPending == 0
	})
	if !within(30*time.Second, func() bool {
		got = api.produced(t, "plant-e2e")
		return fmt.Sprint(got) == fmt.Sprint(want)
	}) {
		for sku, w := range want {
			if got[sku] != w {
				t.Errorf("%s: produced %v, ledger %v", sku, got[sku], w)
			}
		}
		t.FailNow()
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
	if markers != n+len(after) {
		t.Errorf("dedup bucket holds %d identities, want %d", markers, n+len(after))
	}
	// A retried publish JetStream stored twice (its duplicate window lost in the election) is one
	// duplicate for the hub; a duplicate delivered again may be counted again.
	st, err := js.Stream(ctx, "GEMBA")
	if err != nil {
		t.Fatal(err)
	}
	extra := float64(st.CachedInfo().State.Msgs) - float64(n+len(after))
	d, re := metric("gemba_hub_ingest_duplicates_total"), metric("gemba_hub_ingest_redelivered_total")
	if d < extra || d > extra+re {
		t.Errorf("%v duplicates for %v extra stored copies and %v redeliveries", d, extra, re)
	}
	t.Logf("%v messages, %v redelivered, %v duplicates, %v stored twice, %v batches handed back", metric("gemba_hub_ingest_messages_total"),
		re, d, extra, metric("gemba_hub_ingest_errors_total"))
}

// clusterTest is a cluster test's context (ended after d, or with the test) and quiet logger; -short
// leaves these tests out unless CI is set (CI runs everything).
func clusterTest(t *testing.T, d time.Duration) (context.Context, *slog.Logger) {
	t.Helper()
	if testing.Short() && os.Getenv("CI") == "" {
		t.Skip("runs a 3-node NATS cluster (~30 s)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}

// clusterHub starts a 3-node cluster in process with the agents' stream at R3, as an agent with
// uplink.nats.replicas: 3 creates it, and returns the nodes, a JetStream context on them and a hub
// configuration (nats.replicas: 3: every hub store at R3) for it.
func clusterHub(ctx context.Context, t *testing.T) ([]*natstest.Node, jetstream.JetStream, *hub.Config) {
	t.Helper()
	nodes := natstest.Cluster(t, 3)
	_, js := natstest.Connect(t, natstest.URLs(nodes...))
	// Right after the meta leader is elected the servers may not all be known as peers yet.
	var err error
	if !within(30*time.Second, func() bool {
		_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: "GEMBA", Subjects: []string{"gemba.*.*.samples", "gemba.*.*.features", "gemba.*.*.status"},
			Retention: jetstream.LimitsPolicy, MaxBytes: -1, Replicas: 3, Duplicates: 20 * time.Minute,
			Storage: jetstream.FileStorage, Discard: jetstream.DiscardNew})
		return err == nil
	}) {
		t.Fatalf("create the R3 stream: %v", err)
	}
	hcfg, err := hub.Parse([]byte(`
hub:
  id: e2e-hub
  data_dir: ${DIR}
  shutdown_timeout: 10s
http: {listen: "127.0.0.1:0"}
nats:
  servers: ["${URL1}", "${URL2}", "${URL3}"]
  replicas: 3
ingest:
  batch: 64          # fewer messages in hand than ack_wait's worth of R3 writes under -race
  production:
    - {signal: "*.pack.parts", feature: units}
`), lookup(map[string]string{"DIR": filepath.Join(t.TempDir(), "hub"),
		"URL1": nodes[0].URL(), "URL2": nodes[1].URL(), "URL3": nodes[2].URL()}))
	if err != nil {
		t.Fatal(err)
	}
	return nodes, js, hcfg
}

// publishRetry stores a message, retrying through elections and reconnects with its Msg-Id, as the
// agent's uplink does.
func publishRetry(ctx context.Context, t *testing.T, js jetstream.JetStream, m ledgerMsg) {
	for {
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := js.Publish(pctx, m.subject, m.data, jetstream.WithMsgID(m.id))
		pcancel()
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("publish %s: %v", m.id, err)
		}
	}
}

// TestHubRestartsOnCluster: the only hub replica on a 3-node cluster (its stores at R3) is stopped
// mid-load three times, and the messages sent while none runs wait in the agents' stream; each new
// replica (the same configuration, as after a restart) takes the shared consumer over and drains
// them. Earlier benchmark rounds saw that consumer without a leader for minutes once its only client
// had stopped; here ingest never stalls: the last replica has every message settled, the consumer
// has a leader, and the inventory equals the ledger.
func TestHubRestartsOnCluster(t *testing.T) {
	ctx, log := clusterTest(t, 4*time.Minute)
	_, js, hcfg := clusterHub(ctx, t)
	const rounds, perRound, perMsg, skus = 3, 40, 4, 20
	want := map[string]float64{}
	msgs := featureLedger("gw1", 1, rounds*perRound, perMsg, skus, want)
	ready := func(api hubAPI) {
		t.Helper()
		testutil.WaitFor(t, 90*time.Second, "the replica ready", func() bool {
			var r struct{ Ready bool }
			api.get(t, "/readyz", &r)
			return r.Ready
		})
	}
	t0 := time.Now()
	for r := range rounds {
		api, stop := startHub(t, hcfg, log)
		ready(api)
		chunk := msgs[r*perRound : (r+1)*perRound]
		for _, m := range chunk[:perRound/2] {
			publishRetry(ctx, t, js, m)
		}
		testutil.WaitFor(t, 60*time.Second, "the replica applying", func() bool {
			m, err := promtext.Scrape(api.base + "/metrics")
			return err == nil && m.Sum("gemba_hub_ingest_messages_total") > 0
		})
		stop()
		for _, m := range chunk[perRound/2:] { // no replica running: they wait in the stream
			publishRetry(ctx, t, js, m)
		}
		t.Logf("%.1fs: replica %d stopped, %d messages sent in all", time.Since(t0).Seconds(), r+1, (r+1)*perRound)
	}
	api, stop := startHub(t, hcfg, log)
	defer stop()
	ready(api)
	cons, err := js.Consumer(ctx, "GEMBA", "gemba-hub")
	if err != nil {
		t.Fatal(err)
	}
	var ci *jetstream.ConsumerInfo
	if !within(90*time.Second, func() bool {
		ci, err = cons.Info(ctx)
		return err == nil && ci.NumPending == 0 && ci.NumAckPending == 0 && ci.AckFloor.Stream >= uint64(len(msgs))
	}) {
		t.Fatalf("not drained after the last restart: %+v, %v", ci, err)
	}
	if ci.Cluster == nil || ci.Cluster.Leader == "" {
		t.Errorf("the shared consumer has no leader: %+v", ci.Cluster)
	}
	var got map[string]float64
	if !within(30*time.Second, func() bool {
		got = api.produced(t, "plant-e2e")
		return fmt.Sprint(got) == fmt.Sprint(want)
	}) {
		t.Fatalf("produced %v, ledger %v", got, want)
	}
	t.Logf("%.1fs: %d messages through %d restarts, the inventory equals the ledger", time.Since(t0).Seconds(), len(msgs), rounds)
}
