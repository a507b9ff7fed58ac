package hubbench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub"
	"github.com/gemba-io/gemba/hub/act"
	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/promtext"
	"github.com/gemba-io/gemba/internal/testutil"
)

// BenchmarkDecideCluster is issue 17's "1 replica on embedded NATS vs 3 replicas on a 3-node cluster"
// for everything but the ingest rate (BenchmarkIngest, BenchmarkIngestCluster): feature → promotion
// p50/p99 at 5,000 records/s, rule evaluations per second, and RSS per replica. The load and the
// checks are BenchmarkDecideLatency's (50 agents × 98 records, every other batch a crossing per line
// for a SKU seen nowhere else; every crossing must be promoted, each decision published once,
// decisions acted on = promotions = messages on ACTIONS), with every replica in its own process (this
// binary re-run as the hub) so that /proc/<pid> gives each one's VmRSS, VmHWM and CPU. The NATS nodes
// of the cluster and the load generator are in the benchmark's process; the embedded replica's
// server is in the replica's process, as gemba-hub runs it. 1replica-3nodes separates what the
// cluster costs from what the replicas do. Run with -benchtime 1x.
func BenchmarkDecideCluster(b *testing.B) {
	p := plant{agents: 50, lines: 1, machines: 4, fields: 6, skus: 50}
	for _, v := range []struct {
		name     string
		replicas int
		cluster  bool
	}{
		{"1replica-embedded", 1, false},
		{"1replica-3nodes", 1, true},
		{"3replicas-3nodes", 3, true},
	} {
		b.Run(v.name, func(b *testing.B) {
			for b.Loop() {
				clusterDecideRound(b, p, v.replicas, v.cluster, 5000, 10*time.Second, 2*time.Second)
			}
		})
	}
}

// replicaSet is the replicas of one round and how to reach their NATS.
type replicaSet struct {
	procs []*hubProc
	urls  string
	nodes []*natstest.Node // nil when embedded
	cfg   *hub.Config      // the first replica's, but for its data dir and id (names of subjects and streams)
}

// startReplicas writes each replica's hub.yaml (the decide config; on a cluster, the nodes' URLs
// at R3) and starts the processes: the first alone, so that it creates the R3 streams and
// buckets (replicas creating the same ones at once take far longer), then the others together.
func startReplicas(b *testing.B, p plant, dir string, windows, replicas int, cluster bool) *replicaSet {
	b.Helper()
	base := decideConfig(b, p, dir, 0, windows, true) // writes the graph and the rules
	rs := &replicaSet{cfg: base}
	natsLine := ""
	if cluster {
		rs.nodes = natstest.Cluster(b, 3)
		rs.urls = natstest.URLs(rs.nodes...)
		nc, js := connect(b, rs.urls)
		agentsStreamR3(b, js)
		nc.Close()
		var servers []string
		for _, nd := range rs.nodes {
			servers = append(servers, fmt.Sprintf("%q", nd.URL()))
		}
		natsLine = "nats: {servers: [" + strings.Join(servers, ", ") + "], replicas: 3}"
	}
	var dirs []string
	for i := range replicas {
		rdir := filepath.Join(dir, fmt.Sprintf("hub-%d", i))
		if err := os.MkdirAll(rdir, 0o755); err != nil {
			b.Fatal(err)
		}
		listen := "127.0.0.1:0"
		if !cluster {
			port := testutil.FreePort(b)
			listen = fmt.Sprintf("127.0.0.1:%d", port)
			rs.urls = "nats://" + listen
			offline(b, rdir, func(js jetstream.JetStream) { agentsStream(b, js) })
		}
		y := fmt.Sprintf(hubYAML+decideYAML, rdir, listen, base.Graph.File, base.Decide.Rules)
		if cluster {
			old := fmt.Sprintf("nats: {embedded: {listen: %q}}", listen)
			if !strings.Contains(y, old) {
				b.Fatal("hubYAML's nats line changed: update startReplicas")
			}
			y = strings.Replace(y, old, natsLine, 1)
		}
		y = strings.Replace(y, "id: bench-hub", fmt.Sprintf("id: bench-hub-%d", i), 1)
		if err := os.WriteFile(filepath.Join(rdir, "hub.yaml"), []byte(y), 0o644); err != nil {
			b.Fatal(err)
		}
		dirs = append(dirs, rdir)
	}
	start := func(d string) *hubProc {
		pr := spawnHub(b, d)
		rs.procs = append(rs.procs, pr)
		return pr
	}
	if err := start(dirs[0]).ready(3 * time.Minute); err != nil {
		rs.stop(b)
		b.Fatal(err)
	}
	for _, d := range dirs[1:] {
		start(d)
	}
	for _, pr := range rs.procs[1:] {
		if err := pr.ready(3 * time.Minute); err != nil {
			rs.stop(b)
			b.Fatal(err)
		}
	}
	return rs
}

func (rs *replicaSet) stop(b *testing.B) {
	b.Helper()
	for _, pr := range rs.procs {
		pr.stop(b)
	}
	rs.procs = nil
}

// sum scrapes every replica's /metrics and adds up one counter.
func (rs *replicaSet) sum(b *testing.B, name string, labels ...string) (total float64, each []float64) {
	b.Helper()
	for _, pr := range rs.procs {
		m, err := promtext.Scrape("http://" + pr.addr + "/metrics")
		if err != nil {
			b.Fatalf("metrics of hub process %s: %v", pr.pid, err)
		}
		v := m.Sum(name, labels...)
		total += v
		each = append(each, v)
	}
	return total, each
}

// cpu is the CPU time so far of the replicas' processes and of this one (nodes, load, watchers).
func (rs *replicaSet) cpu() (replicas, self time.Duration) {
	for _, pr := range rs.procs {
		replicas += procCPU(pr.pid)
	}
	return replicas, cpuTime()
}

// routed waits until a subscription of nc receives what is published on every node: the
// promotions subscription made on nc before it is then known to the whole cluster (a node sends
// a connection's interest to its routes in order).
func routed(b *testing.B, nc *nats.Conn, nodes []*natstest.Node) {
	b.Helper()
	got := make(chan string, 64)
	sub, err := nc.Subscribe("hubbench.probe.*", func(m *nats.Msg) { got <- m.Subject })
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	for i, nd := range nodes {
		pc, err := nats.Connect(nd.URL())
		if err != nil {
			b.Fatal(err)
		}
		subj := fmt.Sprintf("hubbench.probe.%d", i)
		tick := time.NewTicker(50 * time.Millisecond)
		deadline := time.After(10 * time.Second)
	wait:
		for {
			_ = pc.Publish(subj, nil)
			select {
			case s := <-got:
				if s == subj {
					break wait
				}
			case <-tick.C:
			case <-deadline:
				pc.Close()
				tick.Stop()
				b.Fatalf("node %s: the subscriptions of the benchmark's connection not routed within 10s", nd.URL())
			}
		}
		tick.Stop()
		pc.Close()
	}
}

func clusterDecideRound(b *testing.B, p plant, replicas int, cluster bool, rate int, runFor, warmup time.Duration) {
	b.StopTimer() // timed by hand
	window := time.Duration(float64(time.Second) * float64(p.agents*p.perWindow()) / float64(rate))
	windows := int(runFor / window)
	counted := int(warmup/window) + 1
	dir := b.TempDir()
	load0 := loadAvg()
	setup := time.Now()
	rs := startReplicas(b, p, dir, windows, replicas, cluster)
	defer rs.stop(b)
	setupTook := time.Since(setup)
	nc, js := connect(b, rs.urls)
	defer nc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var mu sync.Mutex
	sent := map[string]time.Time{}     // by crossing SKU: just before its batch's publish
	arrived := map[string]time.Time{}  // by crossing SKU: its first promotion
	published := map[string]int{}      // promotions seen, by message id (decision id)
	decisionsOf := map[string]string{} // decision id → SKU
	promoted, err := nc.Subscribe(rs.cfg.Act.Prefix+".actions.promotions.>", func(m *nats.Msg) {
		now := time.Now()
		var msg act.Message
		if err := json.Unmarshal(m.Data, &msg); err != nil {
			b.Errorf("promotion on %s undecodable: %v", m.Subject, err)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		published[msg.ID]++
		decisionsOf[msg.ID] = msg.SKU
		if _, ok := arrived[msg.SKU]; !ok && msg.Event == act.EventStart {
			arrived[msg.SKU] = now
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = promoted.Unsubscribe() }()
	if cluster {
		routed(b, nc, rs.nodes)
	}

	evals0, _ := rs.sum(b, "gemba_hub_decide_evaluations_total")
	dec0, _ := rs.sum(b, "gemba_hub_decide_decisions_total")
	t0 := time.Now().Truncate(time.Second)
	start := time.Now()
	rcpu0, scpu0 := rs.cpu()
	records, crossings := crossingLoad(b, js, p, windows, window, t0, start, func(sku string, at time.Time) {
		mu.Lock()
		sent[sku] = at
		mu.Unlock()
	}, func(sku string) bool {
		mu.Lock()
		defer mu.Unlock()
		_, done := arrived[sku]
		return done
	}, nil)
	el := time.Since(start)
	evals1, evalsEach := rs.sum(b, "gemba_hub_decide_evaluations_total")
	dec1, _ := rs.sum(b, "gemba_hub_decide_decisions_total")

	// Correctness first: nothing missed, nothing twice.
	promotedSKUs := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(arrived)
	}
	testutil.WaitFor(b, time.Minute, "a promotion for every crossing", func() bool { return promotedSKUs() == crossings })
	rcpu, scpu := rs.cpu()
	wall := time.Since(start) // the load and the last promotions
	rcpu, scpu = rcpu-rcpu0, scpu-scpu0
	cpu := rcpu + scpu
	drained(b, js, time.Minute)
	st, err := js.Stream(ctx, rs.cfg.Act.Stream)
	if err != nil {
		b.Fatal(err)
	}
	var acted float64
	var npub int
	var inStream uint64
	testutil.WaitFor(b, 30*time.Second, "decisions acted on (all replicas) = promotions received = messages on "+rs.cfg.Act.Stream, func() bool {
		acted, _ = rs.sum(b, "gemba_hub_decide_acted_total")
		info, err := st.Info(ctx)
		if err != nil {
			return false
		}
		inStream = info.State.Msgs
		mu.Lock()
		npub = len(published)
		mu.Unlock()
		return acted == float64(npub) && inStream == uint64(npub)
	})
	again := 0 // crossings decided again in a later bucket before their reset landed: new decisions
	mu.Lock()
	perSKU := map[string]int{}
	for id, n := range published {
		if n != 1 {
			b.Errorf("decision %s published %d times", id, n)
		}
		perSKU[decisionsOf[id]]++
	}
	for _, n := range perSKU {
		again += n - 1
	}
	mu.Unlock()
	if npub < crossings {
		b.Errorf("%d promotions for %d crossings", npub, crossings)
	}
	ingested, _ := rs.sum(b, "gemba_hub_ingest_records_total", "stream", "features")
	dups, _ := rs.sum(b, "gemba_hub_ingest_duplicates_total")
	if ingested < float64(records) {
		b.Errorf("the replicas applied %v records, want %d", ingested, records)
	}

	// Memory of each replica process, read from outside after the load: now and its peak.
	var rss, peak []float64
	for _, pr := range rs.procs {
		r, h := memStatus(pr.pid)
		rss, peak = append(rss, r), append(peak, h)
	}
	selfRSS, _ := memStatus("self")

	var total []time.Duration
	mu.Lock()
	for sku, t := range sent {
		var w, a, l int
		if _, err := fmt.Sscanf(sku, "HOT-%04d-%03d-%d", &w, &a, &l); err != nil || w < counted {
			continue
		}
		total = append(total, arrived[sku].Sub(t))
	}
	mu.Unlock()
	if len(total) == 0 {
		b.Fatal("no crossing counted")
	}
	slices.Sort(total)
	q := func(f float64) float64 { return float64(total[int(f*float64(len(total)-1))].Microseconds()) / 1000 }
	evals := (evals1 - evals0) / el.Seconds()
	b.ReportMetric(float64(records)/el.Seconds(), "records/s")
	b.ReportMetric(float64(len(total)), "crossings")
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(q(1), "max-ms")
	b.ReportMetric(evals, "evaluations/s")
	b.ReportMetric((dec1-dec0)/el.Seconds(), "decisions/s")
	b.ReportMetric(slices.Max(rss), "max-replica-rss-MiB")
	b.ReportMetric(slices.Max(peak), "max-replica-peak-rss-MiB")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(records), "cpu-ns/record")
	where := "embedded NATS in the replica's process"
	if cluster {
		where = "3 nodes in the benchmark's process"
	}
	b.Logf("load average %s at the start, %s at the end; %d replica(s), %s: ready in %.1fs; %d records at %.0f records/s, %d crossings (%d timed): publish → promotion p50 %.1f / p99 %.1f / max %.1f ms",
		load0, loadAvg(), replicas, where, setupTook.Seconds(), records, float64(records)/el.Seconds(), crossings, len(total), q(0.5), q(0.99), q(1))
	b.Logf("checks: %d crossings promoted, %d promotions each published once (%d crossings decided again in a later bucket), acted %v = ACTIONS %d; %v records applied (%v duplicates dropped)",
		promotedSKUs(), npub, again, acted, inStream, ingested, dups)
	b.Logf("engine: %.0f evaluations/s in all (per replica %v over %.1fs), %.0f decisions/s; CPU of every process %.1f µs/record (%.2f cores: replicas %.2f, the benchmark's process %.2f)",
		evals, evalsEach, el.Seconds(), (dec1-dec0)/el.Seconds(), float64(cpu.Microseconds())/float64(records), cpu.Seconds()/wall.Seconds(),
		rcpu.Seconds()/wall.Seconds(), scpu.Seconds()/wall.Seconds())
	b.Logf("RSS per replica process (VmRSS / VmHWM MiB): %s; the benchmark's process (NATS nodes if any, load, watchers) VmRSS %.0f MiB",
		pairs(rss, peak), selfRSS)
	b.StartTimer()
}

func pairs(a, b []float64) string {
	var s []string
	for i := range a {
		s = append(s, fmt.Sprintf("%.1f / %.1f", a[i], b[i]))
	}
	return strings.Join(s, ", ")
}
