package chaos

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	gsig "github.com/gemba-io/gemba/signal"
	"github.com/gemba-io/gemba/sim"
)

// HubOptions size the hub scenarios: gemba-hub replicas (the built binary, as separate processes)
// deciding on a feature load while something fails.
type HubOptions struct {
	Dir    string    // working directory (a subdirectory per scenario)
	HubBin string    // the gemba-hub binary
	Log    io.Writer // progress lines
	// Load is how long live features flow in each scenario; Rate is crossings (SKUs reported made
	// for the first time) per second. Each crossing is one decision.
	Load time.Duration
	Rate int
	// KillEvery paces the replica kills; WebhookDown and NodeDown are how long the endpoint and
	// the NATS node stay down; Burst is how many crossings the replayed backlog holds.
	KillEvery, WebhookDown, NodeDown time.Duration
	Burst                            int
	// Settle bounds the wait, after the load, for every decision to be recorded, published and posted.
	// It must exceed the engine's reconcile grace (3 × decide.op_timeout + 1 min = 90 s): a decision
	// allowed but refused by the decision log's fence (a rules change landed first) is released only
	// then, and counts as allowed until it is.
	Settle time.Duration
}

// HubShort is what `go test` runs: about a minute and a half for every hub scenario together.
func HubShort(dir, hubBin string, log io.Writer) HubOptions {
	return HubOptions{Dir: dir, HubBin: hubBin, Log: log, Load: 8 * time.Second, Rate: 20,
		KillEvery: 2 * time.Second, WebhookDown: 4 * time.Second, NodeDown: 3 * time.Second, Burst: 100, Settle: 2 * time.Minute}
}

// HubFull is what `make chaos` runs: a minute of load, a webhook down for a minute.
func HubFull(dir, hubBin string, log io.Writer) HubOptions {
	return HubOptions{Dir: dir, HubBin: hubBin, Log: log, Load: 75 * time.Second, Rate: 40,
		KillEvery: 4 * time.Second, WebhookDown: time.Minute, NodeDown: 20 * time.Second, Burst: 1000, Settle: 4 * time.Minute}
}

// HubScenario is one fault against the hub; Act runs while the load flows.
type HubScenario struct {
	Name     string
	Cluster  bool // three NATS nodes, every stream and bucket at R3
	Replicas int  // gemba-hub processes
	Act      func(ctx context.Context, e *HubEnv) error
}

// HubEnv is one hub scenario's world.
type HubEnv struct {
	o     HubOptions
	name  string
	dir   string
	nodes []*node
	hubs  []*hubProc
	hook  *receiver
	nc    *nats.Conn
	js    jetstream.JetStream
	cap   int // guard.daily.max_promotions

	mu        sync.Mutex
	live      []string // crossing SKUs acknowledged by the stream, live
	hist      []string // crossing SKUs acknowledged, in the replayed (historical) backlog
	deep      map[string]bool
	liveSeq   uint64
	changes   []string // what Act did, for the summary
	versionV2 string   // the rules file the rollback scenario activates
}

const hubSite, hubLine = "hs1", "hl1"

func (e *HubEnv) logf(format string, args ...any) {
	fmt.Fprintf(e.o.Log, "  [%s] %s\n", e.name, fmt.Sprintf(format, args...))
}

// maxCrossings bounds the SKUs the graph lists for the load.
func (o HubOptions) maxCrossings() int { return int(o.Load.Seconds()*float64(o.Rate)*1.5) + 200 }

// rulesYAML promotes every SKU reported made: 10 % (15 % in v2), and 30 % for a very large count,
// which the guard's max_discount of 20 must suppress.
func rulesYAML(v2 bool) string {
	d := 10
	if v2 {
		d = 15
	}
	return fmt.Sprintf(`name: chaos
hit_policy: first
rules:
  - name: promote-deep
    when: has(features.units) && !features.units.stale && features.units.value > 500.0
    promote: {channels: [web], discount: 30, duration: 24h}
  - name: promote-made
    when: has(features.units) && !features.units.stale && features.units.value > 0.0
    promote: {channels: [web], discount: %d, duration: 24h}
`, d)
}

func (e *HubEnv) writeFiles(replicas int) error {
	var g strings.Builder
	fmt.Fprintf(&g, "version: chaos\nsites: [{id: %s}]\nlines: [{id: %s, site: %s}]\nchannels: [{id: web}]\nskus:\n", hubSite, hubLine, hubSite)
	n := e.o.maxCrossings()
	for i := range n {
		fmt.Fprintf(&g, "  - {id: L-%05d}\n", i)
	}
	for i := range e.o.Burst {
		fmt.Fprintf(&g, "  - {id: H-%05d}\n", i)
	}
	g.WriteString("edges:\n")
	for i := range n {
		fmt.Fprintf(&g, "  - {kind: produces, from: %s, to: L-%05d}\n  - {kind: sold_via, from: L-%05d, to: web}\n", hubLine, i, i)
	}
	for i := range e.o.Burst {
		fmt.Fprintf(&g, "  - {kind: produces, from: %s, to: H-%05d}\n  - {kind: sold_via, from: H-%05d, to: web}\n", hubLine, i, i)
	}
	files := map[string]string{"graph.yaml": g.String(), "rules.yaml": rulesYAML(false), "rules-v2.yaml": rulesYAML(true)}
	urls := make([]string, len(e.nodes))
	for i, nd := range e.nodes {
		urls[i] = fmt.Sprintf("%q", nd.url())
	}
	// The cap is below the crossings the load makes: the daily count guardrail is reached.
	e.cap = max(10, int(e.o.Load.Seconds()*float64(e.o.Rate)*0.6))
	for i := range replicas {
		port, err := sim.FreePort()
		if err != nil {
			return err
		}
		name := fmt.Sprintf("hub-%c", 'a'+i)
		files[name+".yaml"] = fmt.Sprintf(`hub: {id: %s, data_dir: %s, shutdown_timeout: 10s, log: {level: warn, format: text}}
http: {listen: "127.0.0.1:%d"}
nats: {servers: [%s], replicas: %d}
ingest: {ack_wait: 2s, batch: 64}
commerce: {channels: [web]}
features:
  - {name: units, signal: "*.pack.parts", feature: units, key: sku, max_age: 10m}
graph: {file: graph.yaml}
decide: {rules: rules.yaml, bucket: 1h, timer: 30s}
guard: {max_discount: 20, cooldown: 1h, daily: {max_promotions: %d}, claim_lease: 2s}
act:
  lease: 2s
  poll: 100ms
  retry: {initial: 200ms, max: 2s, max_attempts: 100000, max_age: 1h}
  channels:
    web: {webhook: {url: "http://%s/hook", secret: "%s", timeout: 1s}}
`, name, filepath.Join(e.dir, name), port, strings.Join(urls, ", "), len(e.nodes), e.cap, e.hook.addr, hookSecret)
		e.hubs = append(e.hubs, &hubProc{name: name, cfgFile: filepath.Join(e.dir, name+".yaml"),
			base: fmt.Sprintf("http://127.0.0.1:%d", port), logFile: filepath.Join(e.dir, name+".log")})
	}
	for f, text := range files {
		if err := os.WriteFile(filepath.Join(e.dir, f), []byte(text), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func setupHub(ctx context.Context, o HubOptions, sc HubScenario) (*HubEnv, error) {
	dir := filepath.Join(o.Dir, "hub-"+sc.Name)
	_ = os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	e := &HubEnv{o: o, name: sc.Name, dir: dir, deep: map[string]bool{}}
	var err error
	if e.nodes, err = startNodes(dir, sc.Cluster); err != nil {
		return e, err
	}
	if e.hook, err = startReceiver(); err != nil {
		return e, err
	}
	if e.nc, e.js, err = connectNodes(e.nodes); err != nil {
		return e, err
	}
	if err := createAgentStream(ctx, e.js, len(e.nodes)); err != nil {
		return e, err
	}
	if err := e.writeFiles(max(1, sc.Replicas)); err != nil {
		return e, err
	}
	// The first replica creates the streams and buckets (on a cluster each is a raft group to
	// elect, tens of seconds on 2 busy cores); the others start once they exist, as a rolling
	// deployment would, instead of racing to create the same ones.
	if err := e.startHub(e.hubs[0]); err != nil {
		return e, err
	}
	if err := e.waitHubsReady(ctx, e.hubs[:1], 120*time.Second); err != nil {
		return e, err
	}
	for _, h := range e.hubs[1:] {
		if err := e.startHub(h); err != nil {
			return e, err
		}
	}
	return e, e.waitHubsReady(ctx, e.hubs, 60*time.Second)
}

// waitHubsReady waits until every replica answers /readyz with 200 and the decision room's
// stores exist.
func (e *HubEnv) waitHubsReady(ctx context.Context, hubs []*hubProc, d time.Duration) error {
	t0 := time.Now()
	defer func() { e.logf("%d replica(s) ready in %v", len(hubs), time.Since(t0).Round(100*time.Millisecond)) }()
	deadline := time.Now().Add(d)
	for _, h := range hubs {
		for !e.hubReady(h) {
			if h.exited() {
				return fmt.Errorf("%s exited: %s", h.name, tail(h.logFile))
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s not ready after %v: %s", h.name, d, tail(h.logFile))
			}
			if err := sleepCtx(ctx, 200*time.Millisecond); err != nil {
				return err
			}
		}
	}
	for {
		_, err1 := e.js.KeyValue(ctx, "GEMBA_GUARD")
		_, err2 := e.js.Stream(ctx, "ACTIONS")
		if err1 == nil && err2 == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("decision room not there after %v: %v %v", d, err1, err2)
		}
		if err := sleepCtx(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
}

func (e *HubEnv) hubReady(h *hubProc) bool {
	rd, err := hubReadiness(h.base)
	return err == nil && rd
}

func (e *HubEnv) teardown() {
	for _, h := range e.hubs {
		h.stop(15 * time.Second)
	}
	if e.nc != nil {
		e.nc.Close()
	}
	if e.hook != nil {
		e.hook.close()
	}
	stopNodes(e.nodes)
}

// publish stores one agent message, retrying with its Msg-Id through reconnects and elections as
// the agent's uplink does, until ctx ends.
func (e *HubEnv) publish(ctx context.Context, subject string, data []byte, id string) error {
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := e.js.Publish(pctx, subject, data, jetstream.WithMsgID(id))
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("publish %s: %w", id, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// batch builds one features message of agent: units of each SKU in a window ending at end.
func batch(agent string, first uint64, skus []string, values []float64, end time.Time, historical bool, sent time.Time) (string, []byte, string) {
	fs := make([]gsig.Feature, len(skus))
	for i, s := range skus {
		fs[i] = gsig.Feature{Signal: hubLine + ".pack.parts", Name: "units", WindowStart: end.Add(-10 * time.Second), WindowEnd: end,
			Value: values[i], Count: 10, Labels: gsig.Labels{{Key: "sku", Value: s}}}
	}
	h := gsig.Header{Schema: gsig.SchemaVersion, Agent: agent, Site: hubSite, Stream: gsig.StreamFeatures, ConfigVersion: "chaos",
		Incarnation: "inc-" + agent, FirstSeq: first, LastSeq: first + uint64(len(skus)) - 1, Count: len(skus),
		Oldest: end, Newest: end, Sent: sent, Historical: historical}
	if historical {
		h.Delay = sent.Sub(end)
	}
	return gsig.Subject("gemba", hubSite, agent, gsig.StreamFeatures), gsig.AppendBatch(nil, &gsig.Batch{Header: h, Features: fs}), h.MsgID()
}

// load publishes live crossings for d: every 100 ms a message with Rate/10 SKUs reported made for
// the first time (every seventh with a very large count, for the max_discount guardrail).
func (e *HubEnv) load(ctx context.Context, d time.Duration) error {
	per := max(1, e.o.Rate/10)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	end := time.Now().Add(d)
	limit := e.o.maxCrossings()
	for time.Now().Before(end) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		e.mu.Lock()
		n := len(e.live)
		e.mu.Unlock()
		if n+per > limit {
			return nil // the graph lists no more SKUs
		}
		skus, values := make([]string, per), make([]float64, per)
		for i := range skus {
			skus[i], values[i] = fmt.Sprintf("L-%05d", n+i), float64(1+(n+i)%9)
			if (n+i)%7 == 3 {
				values[i] = 900
			}
		}
		now := time.Now().UTC()
		subj, data, id := batch("gw1", e.liveSeq+1, skus, values, now, false, now)
		if err := e.publish(ctx, subj, data, id); err != nil {
			return err
		}
		e.mu.Lock()
		e.liveSeq += uint64(per)
		e.live = append(e.live, skus...)
		for i, s := range skus {
			if values[i] > 500 {
				e.deep[s] = true
			}
		}
		e.mu.Unlock()
	}
	return nil
}

// replayBurst publishes the backlog of an agent back from an outage: Burst crossings in windows
// that ended minutes ago, marked historical, as fast as the stream takes them.
func (e *HubEnv) replayBurst(ctx context.Context) error {
	const per = 20
	var seq uint64
	base := time.Now().UTC().Add(-5 * time.Minute)
	for i := 0; i < e.o.Burst; i += per {
		var skus []string
		var values []float64
		for j := i; j < min(i+per, e.o.Burst); j++ {
			skus = append(skus, fmt.Sprintf("H-%05d", j))
			values = append(values, 5)
		}
		end := base.Add(time.Duration(i/per) * 10 * time.Second)
		subj, data, id := batch("gw2", seq+1, skus, values, end, true, time.Now().UTC())
		if err := e.publish(ctx, subj, data, id); err != nil {
			return err
		}
		seq += uint64(len(skus))
		e.mu.Lock()
		e.hist = append(e.hist, skus...)
		e.mu.Unlock()
	}
	return nil
}

func (e *HubEnv) note(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	e.logf("%s", s)
	e.mu.Lock()
	e.changes = append(e.changes, s)
	e.mu.Unlock()
}
