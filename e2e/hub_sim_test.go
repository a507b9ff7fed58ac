package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/gemba-io/gemba/agent"
	_ "github.com/gemba-io/gemba/collectors/all"
	"github.com/gemba-io/gemba/hub"
	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/sim"
)

// The plant under test: one step is one second of event time (the sim's Clock) and 30 simulated
// seconds of machine life, so states and SKUs change every few steps; features use 10 s windows.
const (
	simStep   = time.Second
	simWindow = 10 * time.Second
	simSpeed  = 30
	simWins   = 16 // windows compared
)

// TestHubMatchesSimulatorLedger runs the real agent (its packages) reading the simulator's
// Sparkplug B edge node over a real MQTT broker, and the hub, both on one embedded JetStream
// server. The test steps the plant itself, one second of event time per step, and compares what
// the hub's read API shows with the simulator's own production record (sim.Production):
//
//   - inventory: units produced per SKU equal the record's parts per SKU exactly, over the steps the
//     agent observed in closed windows (the first sample of a counter is its baseline, not an
//     increase: the record after step 1 is subtracted);
//   - units (key sku): each SKU's latest window equals the parts the record booked in it, exactly;
//   - availability (key line), every window: equal to the running share of the record's seconds in
//     that window within 1e-3. Event time is exact, but the edge node keeps its message times
//     unique, so line2.pack's samples are 1 ms after line1.pack's (up to 4 ms at the first step's
//     births): a state boundary may move by a few ms of a 10 s window (≤ 4e-4).
func TestHubMatchesSimulatorLedger(t *testing.T) {
	if testing.Short() && os.Getenv("CI") == "" { // CI runs everything
		t.Skip("runs an agent, a simulator and a hub (~15 s)")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	dir := t.TempDir()
	ns := startNATS(t, filepath.Join(dir, "nats"), -1)
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	mqttAddr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	broker, err := sim.StartBroker(mqttAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer broker.Close()

	// The hub first: it waits for the stream the agent creates.
	hcfg, err := hub.Parse([]byte(simHubConfig), lookup(map[string]string{"DIR": dir, "NATS": ns.ClientURL()}))
	if err != nil {
		t.Fatal(err)
	}
	api, stopHub := startHub(t, hcfg, log)
	defer stopHub() // before the NATS server stops

	acfg, err := agent.Parse([]byte(simAgentConfig), lookup(map[string]string{"DIR": dir, "NATS": ns.ClientURL(), "MQTT": "tcp://" + mqttAddr}))
	if err != nil {
		t.Fatal(err)
	}
	ag := agent.New(acfg, agent.Options{Logger: log.With("part", "agent")})
	actx, astop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := ag.Run(actx); err != nil {
			t.Errorf("agent: %v", err)
		}
	})
	defer func() { astop(); wg.Wait() }()

	// Event time starts 20 minutes ago on a window boundary: windows then close on the samples'
	// own times however fast the test steps (no watermark waits for the clock), and the
	// boundaries fall on steps.
	base := time.UnixMilli(time.Now().Add(-20*time.Minute).UnixMilli() / simWindow.Milliseconds() * simWindow.Milliseconds())
	var step int64 // steps taken; step i is stamped base + i s
	s, err := sim.New(sim.Options{Plant: sim.Config{Seed: 5, Tick: simStep, Speed: simSpeed}, Broker: "tcp://" + mqttAddr,
		ClientID: "e2e-hub-sim", Clock: func() time.Time { return base.Add(time.Duration(step) * simStep) }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// MQTT delivers only to subscriptions that exist: step once the agent listens.
	testutil.WaitFor(t, 20*time.Second, "the agent's Sparkplug subscription", func() bool {
		return len(broker.Topics.Subscribers("spBv1.0/plant1/DDATA/edge1/line1.pack").Subscriptions) > 0
	})

	// rec[i] is the record after step i (rec[0] before the first). Step 1 carries the births: the
	// agent's first sample of every signal, the counters' baseline.
	first, _ := s.Production()
	rec := []map[string]sim.Production{first}
	stepTo := func(n int64) {
		for step < n {
			step++
			s.Step()
			p, steps := s.Production()
			if int64(steps) != step {
				t.Fatalf("simulator at step %d, test at %d", steps, step)
			}
			rec = append(rec, p)
		}
	}
	stepTo(1)
	testutil.WaitFor(t, 20*time.Second, "the agent's first samples (births and data of both pack stations)", func() bool {
		return testutil.Metric(t, ag.Registry(), "gemba_collector_samples_total") >= 28
	})

	per := int64(simWindow / simStep) // steps per window
	lines := []string{"line1", "line2"}
	between := 0 // windows whose availability is strictly between 0 and 1
	for k := range int64(simWins) {
		start, end := base.Add(time.Duration(k)*simWindow), base.Add(time.Duration(k+1)*simWindow)
		// The window's last sample is step per*(k+1)-1; it closes when a sample passes its end
		// plus the allowed lateness (500 ms): the step after the end.
		stepTo(per*(k+1) + 1)
		for _, line := range lines {
			var got reading
			testutil.WaitFor(t, 20*time.Second, fmt.Sprintf("availability of %s for the window ending %s", line, end.Format(time.TimeOnly)), func() bool {
				got = reading{}
				return api.get(t, "/api/v1/features/availability/"+line, &got) && !got.WindowEnd.Before(end)
			})
			if !got.WindowEnd.Equal(end) || !got.WindowStart.Equal(start) {
				t.Fatalf("%s: the hub shows window %s..%s, want %s..%s", line, got.WindowStart, got.WindowEnd, start, end)
			}
			lo := max(per*k, 1) // the first window starts before the first sample: its known time only
			want := running(rec[per*(k+1)-1][line+".pack"], rec[lo-1][line+".pack"])
			if math.Abs(got.Value-want) > 1e-3 {
				t.Errorf("%s window %d (%s): hub availability %.4f, simulator running share %.4f", line, k, start.Format(time.TimeOnly), got.Value, want)
			}
			if want > 0 && want < 1 {
				between++
			}
		}
	}
	last := per*simWins - 1 // the last sample inside a closed window

	// Inventory: produced per SKU over every closed window = the parts booked after the baseline.
	want := map[string]float64{}
	for _, line := range lines {
		for sku, n := range rec[last][line+".pack"].Parts {
			if d := n - rec[1][line+".pack"].Parts[sku]; d > 0 {
				want[sku] = float64(d)
			}
		}
	}
	if len(want) < 4 {
		t.Fatalf("the run produced only %v: too few SKUs to test the attribution", want)
	}
	var got map[string]float64
	if !within(20*time.Second, func() bool {
		got = api.produced(t, "demo-plant")
		return fmt.Sprint(got) == fmt.Sprint(want)
	}) {
		t.Fatalf("inventory produced per SKU %v, the simulator's parts after the baseline %v", got, want)
	}

	// Units: the latest window of each SKU equals the parts booked in it.
	var units struct{ Values []reading }
	if !api.get(t, "/api/v1/features?name=units", &units) || len(units.Values) == 0 {
		t.Fatal("no units in the feature store")
	}
	for _, u := range units.Values {
		line := "line" + u.Key[2:3]                    // SKUs are <letter>-<line><n>0
		i0 := int64(u.WindowStart.Sub(base) / simStep) // the window's first and last samples
		i1 := int64(u.WindowEnd.Sub(base)/simStep) - 1
		if i1 > last {
			t.Fatalf("units of %s for a window (%s) that has not closed", u.Key, u.WindowEnd)
		}
		w := rec[i1][line+".pack"].Parts[u.Key] - rec[max(i0, 2)-1][line+".pack"].Parts[u.Key]
		if u.Value != float64(w) {
			t.Errorf("units of %s in %s..%s: hub %v, simulator %d", u.Key, u.WindowStart.Format(time.TimeOnly), u.WindowEnd.Format(time.TimeOnly), u.Value, w)
		}
	}
	if between < 3 {
		t.Errorf("only %d windows with availability strictly between 0 and 1: the comparison proves little", between)
	}
	var fleet struct{ Agents []json.RawMessage }
	if !api.get(t, "/api/v1/fleet", &fleet) || len(fleet.Agents) != 1 {
		t.Errorf("fleet: %d agents, want the one heartbeat source", len(fleet.Agents))
	}
	t.Logf("%d windows x 2 lines compared (%d with availability in (0,1)); produced per SKU %v", simWins, between, got)
}

// running is the running share of the seconds booked between two records.
func running(to, from sim.Production) float64 {
	var total float64
	for st, s := range to.Seconds {
		total += s - from.Seconds[st]
	}
	return (to.Seconds[sim.Running] - from.Seconds[sim.Running]) / total
}

type reading struct {
	Key         string    `json:"key"`
	Value       float64   `json:"value"`
	WindowStart time.Time `json:"window_start"`
	WindowEnd   time.Time `json:"window_end"`
	Partial     bool      `json:"partial"`
	Historical  bool      `json:"historical"`
}

func lookup(env map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	}
}

// hubAPI reads one hub's HTTP API.
type hubAPI struct{ base string }

// get decodes a 200 answer into v; false on any other status (not there yet).
func (a hubAPI) get(t testing.TB, path string, v any) bool {
	t.Helper()
	resp, err := http.Get(a.base + path)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return false
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("GET %s: %v: %s", path, err, body)
	}
	return true
}

// produced is the inventory's produced units per SKU at site, every page.
func (a hubAPI) produced(t testing.TB, site string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	q := url.Values{"site": {site}, "limit": {"1000"}}
	for {
		var page struct {
			Positions []struct {
				SKU      string  `json:"sku"`
				Produced float64 `json:"produced"`
			}
			Next string
		}
		if !a.get(t, "/api/v1/inventory?"+q.Encode(), &page) {
			return nil
		}
		for _, p := range page.Positions {
			if p.Produced != 0 {
				out[p.SKU] = p.Produced
			}
		}
		if page.Next == "" {
			return out
		}
		nq, _ := url.ParseQuery(page.Next)
		q.Set("after_site", nq.Get("after_site"))
		q.Set("after_sku", nq.Get("after_sku"))
	}
}

// startHub runs a hub in process and returns its API once it listens, and a stop that waits for
// its drain (idempotent; also run when the test ends).
func startHub(t *testing.T, cfg *hub.Config, log *slog.Logger) (hubAPI, func()) {
	t.Helper()
	h, err := hub.New(cfg, hub.Options{Logger: log.With("part", "hub")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("hub: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	testutil.WaitFor(t, 30*time.Second, "the hub's HTTP listener", func() bool { return h.Addr() != "" })
	return hubAPI{base: "http://" + h.Addr()}, stop
}

// within polls cond until it holds or the time is up, for failures that show what was seen.
func within(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond) // polling interval, not synchronisation
	}
	return true
}

const simHubConfig = `
hub:
  id: e2e-hub
  data_dir: ${DIR}/hub
  log: {level: warn, format: text}
  shutdown_timeout: 10s
http:
  listen: 127.0.0.1:0
nats:
  servers: ["${NATS}"]
ingest:
  ack_wait: 5s
  production:
    - {signal: "*.pack.parts", feature: units}
features:
  - {name: availability, signal: "*.pack.state", feature: availability, key: line, max_age: 1h}
  - {name: units, signal: "*.pack.parts", feature: units, key: sku, max_age: 1h}
graph:
  file: ../configs/demo/graph.yaml
`

// The demo agent's Sparkplug subscription and production features, with windows that close only on
// event time (idle_timeout off: the test pauses between windows) and a lateness that forgives the
// edge node's births arriving a few ms after the data of another device.
const simAgentConfig = `
agent:
  id: e2e-gw1
  site: demo-plant
  log: {level: warn, format: text}
  shutdown_timeout: 10s
http:
  enabled: false
buffer:
  dir: ${DIR}/buffer
uplink:
  nats:
    servers: ["${NATS}"]
    stream: GEMBA
    create_stream: true
  heartbeat: 1s
  historical_after: 1h
collectors:
  - name: plant-mqtt
    type: mqtt
    broker: ${MQTT}
    client_id: e2e-gw1-mqtt
    qos: 1
    subscriptions:
      - topic: "spBv1.0/plant1/#"
        format: sparkplugb
        signal: "{device}.{metric}"
features:
  - {signal: line1.pack.parts, kind: counter, window: 10s, allowed_lateness: 500ms, idle_timeout: -1s, compute: [delta], by: line1.pack.sku, rename: {delta: units}}
  - {signal: line2.pack.parts, kind: counter, window: 10s, allowed_lateness: 500ms, idle_timeout: -1s, compute: [delta], by: line2.pack.sku, rename: {delta: units}}
  - {signal: "*.pack.state", kind: state, window: 10s, allowed_lateness: 500ms, idle_timeout: -1s, compute: [availability], states: {running: [running]}}
`
