package hubbench

import (
	"bytes"
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
	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/state/features"
	"github.com/gemba-io/gemba/hub/state/kvkey"
	"github.com/gemba-io/gemba/internal/promtext"
	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
)

// decideYAML turns the part-1 replica into a deciding one: every SKU decides once per second
// (so each crossing is a new decision), and no guardrail but the maximum discount can stop a
// promotion (no cooldown, no caps, no approval).
const decideYAML = `
decide: {rules: %q, bucket: 1s, timer: 1h, lines: {availability: availability, running_above: 0.5}}
guard: {max_discount: 90, cooldown: 0s, daily: {max_promotions: 0, max_budget: 0}, approval: {above_discount: 0}}
act: {channels: {web: {}}}
`

// hotRules promotes a SKU whose units feature jumps above what the plant ever makes (≤ 9 per window).
const hotRules = `name: bench-hot
hit_policy: first
rules:
  - name: promote-hot
    when: has(features.units) && !features.units.stale && features.units.value > 100.0
    promote: {channels: [web], discount: 10, duration: 1h}
`

// hotValue is a crossing record's units: far above the threshold.
const hotValue = 1000

// hot is the SKU a crossing on agent a's line l in window w is about: never crossed again.
func (p plant) hot(a, w, l int) string { return fmt.Sprintf("HOT-%04d-%03d-%d", w, a, l) }

// crosses says whether agent a's window w carries crossings (one per line): every other batch, so
// crossings are spread over agents and time.
func crosses(a, w int) bool { return (a+w)%2 == 0 }

// decideGraphYAML is the plant's graph plus what a decision needs: the web channel, each plant SKU
// made by two agents' first lines, and every SKU a crossing will be about, made by its agent's line.
func (p plant) decideGraphYAML(windows int) string {
	var b strings.Builder
	b.WriteString(p.graphYAML()) // ends with its skus list: more follow
	for w := 1; w <= windows; w++ {
		for a := range p.agents {
			for l := range p.lines {
				if crosses(a, w) {
					fmt.Fprintf(&b, "  - {id: %s}\n", p.hot(a, w, l))
				}
			}
		}
	}
	b.WriteString("channels: [{id: web}]\nedges:\n")
	for s := range min(p.skus, 1000) {
		sku := fmt.Sprintf("SKU-%06d", s)
		for _, a := range []int{s % p.agents, (s + 1) % p.agents} {
			fmt.Fprintf(&b, "  - {kind: produces, from: %s, to: %s}\n", p.line(a, 0), sku)
		}
		fmt.Fprintf(&b, "  - {kind: sold_via, from: %s, to: web}\n", sku)
	}
	for w := 1; w <= windows; w++ {
		for a := range p.agents {
			for l := range p.lines {
				if crosses(a, w) {
					fmt.Fprintf(&b, "  - {kind: produces, from: %s, to: %s}\n", p.line(a, l), p.hot(a, w, l))
					fmt.Fprintf(&b, "  - {kind: sold_via, from: %s, to: web}\n", p.hot(a, w, l))
				}
			}
		}
	}
	return b.String()
}

// productionYAML is hubYAML's production mapping: units also move the inventory (and so notify
// the engine through the inventory bucket as well as the features bucket).
const productionYAML = `
  production:
    - {signal: "*.pack.parts", feature: units}
`

// decideConfig is hubConfig with the decision room on; without production, units are a feature only.
func decideConfig(tb testing.TB, p plant, dir string, port, windows int, production bool) *hub.Config {
	tb.Helper()
	gf, rf := filepath.Join(dir, "graph.yaml"), filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(gf, []byte(p.decideGraphYAML(windows)), 0o644); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(rf, []byte(hotRules), 0o644); err != nil {
		tb.Fatal(err)
	}
	y := hubYAML + decideYAML
	if !production {
		if !strings.Contains(y, productionYAML) {
			tb.Fatal("hubYAML's production mapping changed: update productionYAML")
		}
		y = strings.Replace(y, productionYAML, "\n", 1)
	}
	cfg, err := hub.Parse([]byte(fmt.Sprintf(y, dir, fmt.Sprintf("127.0.0.1:%d", port), gf, rf)), os.LookupEnv)
	if err != nil {
		tb.Fatal(err)
	}
	return cfg
}

// BenchmarkDecideLatency is the decision latency target (a feature arriving in JetStream → the
// promotion published on <prefix>.actions.promotions.<channel>: p99 ≤ 25 ms at 5,000 records/s, one
// replica, embedded NATS). Agents publish their windows as in BenchmarkLatency; every other
// batch also carries, per line, a units record of 1,000 for a SKU seen nowhere else, which the rule
// promotes (and the next window sets it back to 0).
// Each crossing is timed from just before its batch's publish to its promotion's arrival, and,
// to say where the time goes, to its stages as another process sees them: the value in the features
// bucket, the production in the inventory bucket, the guard's claim and verdict, the decision record
// on the decision log, the action in the outbox bucket. Only crossings
// after the first 2 s count. Run with -benchtime 1x. The units-only variants do not count units as
// production: the engine hears of a crossing through the features bucket alone.
func BenchmarkDecideLatency(b *testing.B) {
	small := plant{agents: 50, lines: 1, machines: 4, fields: 6, skus: 50}
	big := plant{agents: 6, lines: 5, machines: 4, fields: 10, skus: 50}
	for _, v := range []struct {
		name       string
		p          plant
		production bool
		// mayMiss: crossings the engine never hears of are counted ("missed") instead of failing the
		// round, for diagnosis. Off everywhere since the feature store notifies a value whose ack
		// came before its echo (it did not, and 15-40 % of units-only crossings went undecided).
		mayMiss bool
	}{
		{"50agents-98records", small, true, false},
		{"6agents-810records", big, true, false},
		{"50agents-98records-units-only", small, false, false},
		{"6agents-810records-units-only", big, false, false},
	} {
		b.Run(v.name, func(b *testing.B) {
			for b.Loop() {
				decideRound(b, v.p, v.production, v.mayMiss, 5000, 10*time.Second, 2*time.Second)
			}
		})
	}
}

// stage is when one crossing reached each point of its path (zero: not seen).
type stage struct {
	sent, stored, feature, inventory, claim, verdict, record, outbox, action time.Time
}

func decideRound(b *testing.B, p plant, production, mayMiss bool, rate int, runFor, warmup time.Duration) {
	window := time.Duration(float64(time.Second) * float64(p.agents*p.perWindow()) / float64(rate))
	windows := int(runFor / window)
	counted := int(warmup/window) + 1
	dir := b.TempDir()
	cfg := decideConfig(b, p, dir, testutil.FreePort(b), windows, production)
	offline(b, dir, func(js jetstream.JetStream) { agentsStream(b, js) })
	b.StopTimer()
	h := startHub(b, cfg)
	defer h.halt(b)
	nc, js := connect(b, "nats://"+cfg.NATS.Embedded.Listen)
	defer nc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var mu sync.Mutex
	stages := map[string]*stage{} // by SKU
	published := map[string]int{} // promotions seen, by message id (decision id)
	at := func(sku string, f func(*stage)) {
		mu.Lock()
		defer mu.Unlock()
		if s := stages[sku]; s != nil {
			f(s)
		}
	}
	set := func(t *time.Time, now time.Time) {
		if t.IsZero() {
			*t = now
		}
	}
	// The promotions, as a shop's consumer sees them.
	promoted, err := nc.Subscribe(cfg.Act.Prefix+".actions.promotions.>", func(m *nats.Msg) {
		now := time.Now()
		var msg act.Message
		if err := json.Unmarshal(m.Data, &msg); err != nil {
			b.Errorf("promotion on %s undecodable: %v", m.Subject, err)
			return
		}
		mu.Lock()
		published[msg.ID]++
		mu.Unlock()
		if msg.Event == act.EventStart {
			at(msg.SKU, func(s *stage) { set(&s.action, now) })
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = promoted.Unsubscribe() }()
	// The decision records (only the crossings decide: nothing else matches the rule).
	recorded, err := nc.Subscribe(cfg.Audit.Prefix+".decisions.*", func(m *nats.Msg) {
		now := time.Now()
		var rec audit.Record
		if json.Unmarshal(m.Data, &rec) == nil && rec.Outcome == audit.OutcomeFired {
			at(rec.SKU, func(s *stage) { set(&s.record, now) })
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = recorded.Unsubscribe() }()
	watch := func(bucket, keys string, fn func(jetstream.KeyValueEntry, time.Time)) {
		kv, err := js.KeyValue(ctx, bucket)
		if err != nil {
			b.Fatal(err)
		}
		w, err := kv.Watch(ctx, keys, jetstream.UpdatesOnly())
		if err != nil {
			b.Fatal(err)
		}
		go func() {
			for e := range w.Updates() {
				if e != nil {
					fn(e, time.Now())
				}
			}
		}()
		b.Cleanup(func() { _ = w.Stop() })
	}
	// The units values in the feature store (only units: every record's value would load the CPU).
	var lr features.LogReader // the subscription's callbacks run one at a time
	fsub, err := nc.Subscribe(featureLog+">", func(m *nats.Msg) {
		now := time.Now()
		lines, err := lr.Lines(m.Header, m.Data)
		if err != nil {
			b.Error(err)
			return
		}
		for line := range bytes.SplitSeq(lines, []byte{'\n'}) {
			if !bytes.Contains(line, []byte(`"name":"units"`)) {
				continue
			}
			var v struct{ Key string }
			if json.Unmarshal(line, &v) == nil {
				at(v.Key, func(s *stage) { set(&s.feature, now) })
			}
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = fsub.Unsubscribe() })
	// The production the crossing counts (inventory keys are site.sku).
	watch(cfg.Inventory.Bucket, ">", func(e jetstream.KeyValueEntry, now time.Time) {
		parts, err := kvkey.Split(e.Key(), 2)
		if err == nil {
			at(parts[1], func(s *stage) { set(&s.inventory, now) })
		}
	})
	// The guard's decision key: claimed (Create), then its verdict (compare-and-set).
	watch(cfg.Guard.Bucket, "dec.>", func(e jetstream.KeyValueEntry, now time.Time) {
		var rec struct {
			Status   string `json:"status"`
			Proposal struct {
				SKU string `json:"sku"`
			} `json:"proposal"`
		}
		if json.Unmarshal(e.Value(), &rec) == nil {
			at(rec.Proposal.SKU, func(s *stage) {
				set(&s.claim, now)
				if rec.Status != "claimed" {
					set(&s.verdict, now)
				}
			})
		}
	})
	watch(cfg.Act.Bucket, ">", func(e jetstream.KeyValueEntry, now time.Time) {
		var rec act.Record
		if json.Unmarshal(e.Value(), &rec) == nil {
			at(rec.Action.SKU, func(s *stage) { set(&s.outbox, now) })
		}
	})

	metrics := func() promtext.Metrics {
		m, err := promtext.Scrape("http://" + h.h.Addr() + "/metrics")
		if err != nil {
			b.Fatal(err)
		}
		return m
	}
	m0 := metrics()
	t0 := time.Now().Truncate(time.Second)
	start := time.Now()
	cpu0 := cpuTime()
	sched0 := readSched()
	// A crossing's units fall back to 0 in its agent's first window after its promotion arrived (so
	// that later evaluations, e.g. on its line's next availability, do not decide again in a later
	// bucket, and a slow round is not overtaken by its own reset); with mayMiss in the next window
	// whatever happened, so that a crossing the engine never heard of stays missed rather than
	// decided late on another input.
	records, crossings := crossingLoad(b, js, p, windows, window, t0, start, func(sku string, at time.Time) {
		mu.Lock()
		stages[sku] = &stage{sent: at}
		mu.Unlock()
	}, func(sku string) bool {
		mu.Lock()
		defer mu.Unlock()
		return mayMiss || !stages[sku].action.IsZero()
	}, func(sku string, t time.Time) { at(sku, func(s *stage) { set(&s.stored, t) }) })
	el := time.Since(start)
	m1 := metrics()
	defer func() {
		if !b.Failed() {
			return
		}
		// How far the crossings got: which stage a failing run stops at.
		mu.Lock()
		defer mu.Unlock()
		var n [6]int
		for _, s := range stages {
			for i, t := range []time.Time{s.feature, s.inventory, s.claim, s.record, s.outbox, s.action} {
				if !t.IsZero() {
					n[i]++
				}
			}
		}
		b.Logf("of %d crossings seen: units in features KV %d, production in inventory KV %d, guard claim %d, decision record %d, outbox %d, promotion %d",
			len(stages), n[0], n[1], n[2], n[3], n[4], n[5])
	}()
	promotedSKUs := func() int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, s := range stages {
			if !s.action.IsZero() {
				n++
			}
		}
		return n
	}
	if !mayMiss {
		testutil.WaitFor(b, time.Minute, "a promotion for every crossing", func() bool { return promotedSKUs() == crossings })
	} else {
		// Every crossing promoted, or none more for 5 s: the misses are counted, not waited for.
		tick := time.NewTicker(100 * time.Millisecond)
		for last, prev := time.Now(), -1; time.Since(last) < 5*time.Second; {
			<-tick.C
			n := promotedSKUs()
			if n == crossings {
				break
			}
			if n != prev {
				last, prev = time.Now(), n
			}
		}
		tick.Stop()
	}
	missed := crossings - promotedSKUs()
	cpu := cpuTime() - cpu0
	schedQ, schedMax, _, gcMax := readSched().since(sched0, 0.99)
	drained(b, js, time.Minute)

	// Every decision acted on is published once, and only crossings are promoted. A crossing may be
	// decided again in a later 1 s bucket (evaluated again before its units fall back): a new
	// decision, counted apart. The hub may still be finishing decisions (a loaded machine): the
	// counts must agree once it has.
	st, err := js.Stream(ctx, cfg.Act.Stream)
	if err != nil {
		b.Fatal(err)
	}
	var acted float64
	var npub int
	var inStream uint64
	testutil.WaitFor(b, 30*time.Second, "decisions acted on = promotions received = messages on "+cfg.Act.Stream, func() bool {
		acted = metrics().Sum("gemba_hub_decide_acted_total")
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
	mu.Lock()
	for id, n := range published {
		if n != 1 {
			b.Errorf("decision %s published %d times", id, n)
		}
	}
	mu.Unlock()
	if npub < crossings-missed {
		b.Errorf("%d promotions for %d crossings promoted", npub, crossings-missed)
	}

	// Each stage from the publish: the hub decides on whichever of the units value (features bucket)
	// or the production it counts (inventory bucket) it sees first, so the stages overlap.
	var total, hubPart []time.Duration   // hubPart: from the agent's message stored in its stream
	from := map[string][]time.Duration{} // stage → durations from the publish
	hops := map[string][]time.Duration{} // record → outbox → promotion: one after another in the hub
	mu.Lock()
	for sku, s := range stages {
		var w, a, l int
		if _, err := fmt.Sscanf(sku, "HOT-%04d-%03d-%d", &w, &a, &l); err != nil || w < counted {
			continue
		}
		if s.action.IsZero() {
			continue // missed (mayMiss): counted apart
		}
		total = append(total, s.action.Sub(s.sent))
		if !s.stored.IsZero() {
			hubPart = append(hubPart, s.action.Sub(s.stored))
		}
		for name, t := range map[string]time.Time{"stored in the agents' stream": s.stored, "units in features KV": s.feature, "production in inventory KV": s.inventory,
			"guard claim": s.claim, "guard verdict": s.verdict, "decision record": s.record, "outbox record": s.outbox} {
			if !t.IsZero() {
				from[name] = append(from[name], t.Sub(s.sent))
			}
		}
		// The engine re-evaluates on whichever store tells it first.
		input := s.feature
		if !s.inventory.IsZero() && (input.IsZero() || s.inventory.Before(input)) {
			input = s.inventory
		}
		if !input.IsZero() && !s.claim.IsZero() && !s.verdict.IsZero() && !s.record.IsZero() && !s.outbox.IsZero() {
			hop := func(name string, from, to time.Time) { hops[name] = append(hops[name], to.Sub(from)) }
			hop("first input stored → claim", input, s.claim)
			hop("claim → verdict", s.claim, s.verdict)
			hop("verdict → record", s.verdict, s.record)
			hop("record → outbox", s.record, s.outbox)
			hop("outbox → promotion", s.outbox, s.action)
		}
	}
	mu.Unlock()
	if len(total) == 0 {
		b.Fatal("no crossing counted")
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	q := func(ds []time.Duration, f float64) float64 {
		if len(ds) == 0 {
			return 0
		}
		return ms(ds[int(f*float64(len(ds)-1))])
	}
	slices.Sort(total)
	line := func(title string, m map[string][]time.Duration, order ...string) {
		var parts []string
		for _, name := range order {
			ds := m[name]
			slices.Sort(ds)
			parts = append(parts, fmt.Sprintf("%s %.1f / %.1f / %.1f (%d)", name, q(ds, 0.5), q(ds, 0.99), q(ds, 1), len(ds)))
		}
		b.Logf("%s (p50 / p99 / max ms, count): %s", title, strings.Join(parts, "; "))
	}
	evals := m1.Sum("gemba_hub_decide_evaluations_total") - m0.Sum("gemba_hub_decide_evaluations_total")
	decisions := m1.Sum("gemba_hub_decide_decisions_total") - m0.Sum("gemba_hub_decide_decisions_total")
	b.ReportMetric(float64(records)/el.Seconds(), "records/s")
	b.ReportMetric(float64(len(total)), "crossings")
	b.ReportMetric(float64(missed), "missed")
	if missed > 0 {
		b.Logf("MISSED: %d of %d crossings never promoted (the engine was not told of the value; see the variant's note)", missed, crossings)
	}
	b.ReportMetric(q(total, 0.5), "p50-ms")
	b.ReportMetric(q(total, 0.99), "p99-ms")
	b.ReportMetric(q(total, 1), "max-ms")
	b.ReportMetric(evals/el.Seconds(), "evaluations/s")
	b.ReportMetric(decisions/el.Seconds(), "decisions/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(records), "cpu-ns/record")
	b.Logf("%d records at %.0f records/s, window %s, %d crossings timed: publish → promotion p50 %.1f / p99 %.1f / max %.1f ms",
		records, float64(records)/el.Seconds(), window, len(total), q(total, 0.5), q(total, 0.99), q(total, 1))
	line("from the publish to", from, "stored in the agents' stream", "units in features KV", "production in inventory KV", "guard claim", "guard verdict",
		"decision record", "outbox record")
	line("hops (as seen by watchers)", hops, "first input stored → claim", "claim → verdict", "verdict → record", "record → outbox", "outbox → promotion")
	slices.Sort(hubPart)
	if len(hubPart) > 0 {
		b.ReportMetric(q(hubPart, 0.99), "hub-p99-ms")
		b.Logf("the hub's part, from the agent's message stored in its stream to the promotion: p50 %.1f / p99 %.1f / max %.1f ms (%d)",
			q(hubPart, 0.5), q(hubPart, 0.99), q(hubPart, 1), len(hubPart))
	}
	b.Logf("engine during the load: %.0f evaluations/s, %.0f decisions/s; %d crossings, %d promotions", evals/el.Seconds(),
		decisions/el.Seconds(), crossings, npub)
	b.ReportMetric(ms(schedMax), "sched-max-ms")
	b.Logf("this process during the load: goroutines waited for a core p99 %.2f ms, max %.2f ms; longest GC pause %.2f ms",
		ms(schedQ), ms(schedMax), ms(gcMax))
	b.StartTimer()
}

// crossingLoad publishes agents' windows as they close, spread over the window, for windows
// windows: every other batch of an agent carries one crossing per line (units of hotValue for a
// SKU seen nowhere else, told to sent with its publish time), and a crossing's units are set back
// to 0 in its agent's first window after reset(sku) is true. It returns the records and crossings
// published. stored, when set, is told when the server acknowledged the message of each crossing
// (the agent's message stored in its stream).
func crossingLoad(b *testing.B, js jetstream.JetStream, p plant, windows int, window time.Duration, t0, start time.Time,
	sent func(sku string, at time.Time), reset func(sku string) bool, stored func(sku string, at time.Time)) (records, crossings int) {
	type hotKey struct{ a, l int }
	// Acks are awaited at most a minute past the load.
	actx, cancel := context.WithTimeout(context.Background(), time.Duration(windows)*window+time.Minute)
	defer cancel()
	var acks sync.WaitGroup
	defer acks.Wait()
	unreset := map[hotKey][]string{} // per agent and line, the crossings whose units are still hotValue
	p.paced(windows, window, start, func(wi, a int, now time.Time) {
		bt := p.batch(a, wi, t0, window, now)
		var hot []string
		for l := range p.lines {
			units := func(sku string, v float64) {
				bt.Features = append(bt.Features, signal.Feature{Signal: p.line(a, l) + ".pack.parts", Name: "units",
					WindowStart: bt.Oldest, WindowEnd: bt.Newest, Value: v, Count: 10,
					Labels: signal.Labels{{Key: "sku", Value: sku}}})
			}
			if crosses(a, wi) {
				units(p.hot(a, wi, l), hotValue)
				sent(p.hot(a, wi, l), now)
				hot = append(hot, p.hot(a, wi, l))
				crossings++
			}
			k := hotKey{a, l}
			var keep []string
			for _, sku := range unreset[k] {
				if !reset(sku) {
					keep = append(keep, sku)
					continue
				}
				units(sku, 0)
			}
			unreset[k] = keep
			if crosses(a, wi) {
				unreset[k] = append(unreset[k], p.hot(a, wi, l))
			}
		}
		bt.Count = len(bt.Features)
		records += bt.Count
		f, err := js.PublishMsgAsync(msg(bt))
		if err != nil {
			b.Fatal(err)
		}
		if stored != nil && len(hot) > 0 {
			whenStored(actx, &acks, f, func(at time.Time) {
				for _, sku := range hot {
					stored(sku, at)
				}
			})
		}
	})
	return records, crossings
}
