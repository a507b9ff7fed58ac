package outcome

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/decide/experiment"
	"github.com/gemba-io/gemba/hub/decide/guard"
	"github.com/gemba-io/gemba/hub/decide/rules"
	"github.com/gemba-io/gemba/hub/monitor/kpi"
	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

// storing stores record r until it is stored: a publish sent while a node stops can go unanswered;
// the log's message id stores a repeated one once.
func storing(t *testing.T, log *audit.Log, r audit.Record) {
	t.Helper()
	testutil.WaitFor(t, 60*time.Second, "record "+r.Event+" of "+r.SKU+" stored", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		var err error
		if r.Event == audit.EventDecided {
			_, err = log.Publish(ctx, r, 0)
		} else {
			_, err = log.Append(ctx, r)
		}
		return err == nil
	})
}

// A measurer whose log consumer (one replica, in memory) lived on a node that stops, its client
// connected to another node, keeps a decision recorded after the stop within 5 s: the ordered
// consumer alone noticed only after two missed idle heartbeats (10 s), and the outcomes lagged
// that long. Across the new consumer every record is handed once: A's decided record, handed again
// after its release, would count a second release; C's, skipped, would never be measured.
func TestFollowConsumerNodeStops(t *testing.T) {
	nodes := natstest.Cluster(t, 3)
	ctx := context.Background()
	_, js := natstest.Connect(t, natstest.URLs(nodes...))
	acfg := audit.Config{Prefix: "gemba", Replicas: 3}
	acfg.Defaults()
	log, err := audit.Open(ctx, js, acfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	a := fired(id("A"), "A", start, 10, 24*time.Hour)
	storing(t, log, a)
	st, err := js.Stream(ctx, acfg.Stream)
	if err != nil {
		t.Fatal(err)
	}
	// The server places the measurer's consumer on any of the stream's nodes: open again until it
	// is on a node the measurer's client is not connected to. Its windows are not over: it keeps
	// the decisions and measures nothing.
	var m *Measurer
	var stop func()
	host := natstest.OffClient(t, st, nodes, func(try int) (string, func()) {
		nc, js2 := natstest.Connect(t, nodes[try%len(nodes)].URL())
		m = New(js2, nil, Options{Audit: acfg, Commerce: "COMMERCE", Prefix: "gemba", Every: time.Hour,
			Logger: testutil.Logger(t, slog.LevelDebug), Now: func() time.Time { return start }})
		rctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() { _ = m.Run(rctx) })
		testutil.WaitFor(t, 10*time.Second, "A kept", func() bool { return m.Stats.Units.Load() == 1 })
		stop = func() { cancel(); wg.Wait() }
		return nc.ConnectedServerName(), stop
	})
	defer func() { stop() }()
	stopped := time.Now()
	host.Stop()
	storing(t, log, fired(id("B"), "B", start, 10, 24*time.Hour))
	recorded := time.Now()
	units := func() (bool, string) {
		m.mu.Lock()
		defer m.mu.Unlock()
		return len(m.units) == 2, fmt.Sprintf("%d units kept, %d released", len(m.units), m.Stats.Released.Load())
	}
	testutil.WaitForState(t, 5*time.Second, "the measurer keeping a decision recorded after its consumer's node stopped", units)
	t.Logf("consumer's node stopped → record stored %v; stored → kept within %v", recorded.Sub(stopped), time.Since(recorded))
	storing(t, log, audit.Record{DecisionID: a.DecisionID, Event: audit.EventReleased, Outcome: audit.OutcomeReleased, Mode: audit.ModeActive,
		Time: start.Add(time.Minute), RuleSet: audit.RuleSetRef{Version: "v1"}, Rule: audit.RuleRef{Name: "b"}, SKU: "A", Site: "s1",
		Channel: "web", Action: a.Action})
	storing(t, log, fired(id("C"), "C", start, 5, 24*time.Hour))
	testutil.WaitForState(t, 10*time.Second, "A released and C kept", func() (bool, string) {
		ok, s := units()
		return ok && m.Stats.Units.Load() == 3 && m.Stats.Released.Load() == 1, s
	})
	m.mu.Lock()
	defer m.mu.Unlock()
	if u, r := m.Stats.Units.Load(), m.Stats.Released.Load(); m.units[id("B")] == nil || m.units[id("C")] == nil || u != 3 || r != 1 {
		t.Errorf("units %v, %d kept, %d released: want B and C kept, A released once", m.units, u, r)
	}
	if n := m.Stats.Refollows.Load(); n < 1 {
		t.Errorf("%d new consumers, want at least 1", n)
	}
}

// A consumer that stops delivering without a word (here the server pauses it: a node cut off says
// nothing either) is replaced: a decision recorded after it is kept within 5 s. The ordered
// consumer alone never noticed (its server still sent heartbeats).
func TestFollowSilentConsumer(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	acfg := audit.Config{Prefix: "gemba"}
	acfg.Defaults()
	log, err := audit.Open(ctx, js, acfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	storing(t, log, fired(id("A"), "A", start, 10, 24*time.Hour))
	m := New(js, nil, Options{Audit: acfg, Commerce: "COMMERCE", Prefix: "gemba", Every: time.Hour,
		Logger: testutil.Logger(t, slog.LevelDebug), Now: func() time.Time { return start }})
	var wg sync.WaitGroup
	wg.Go(func() { _ = m.Run(ctx) })
	defer wg.Wait()
	defer cancel()
	testutil.WaitFor(t, 10*time.Second, "A kept", func() bool { return m.Stats.Units.Load() == 1 })
	st, err := js.Stream(ctx, acfg.Stream)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for name := range st.ConsumerNames(ctx).Name() {
		names = append(names, name)
	}
	if len(names) != 1 {
		t.Fatalf("consumers %v, want the measurer's one", names)
	}
	if _, err := js.PauseConsumer(ctx, acfg.Stream, names[0], time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	storing(t, log, fired(id("B"), "B", start, 10, 24*time.Hour))
	testutil.WaitForState(t, 5*time.Second, "the measurer keeping a decision recorded after its consumer fell silent", func() (bool, string) {
		return m.Stats.Units.Load() == 2, fmt.Sprintf("%d units", m.Stats.Units.Load())
	})
	if n := m.Stats.Refollows.Load(); n != 1 {
		t.Errorf("%d new consumers, want 1", n)
	}
}

// A measurer started on a log that holds decisions whose windows are over measures them all in its
// first round: the round waits for the log to be read. It ran as soon as the consumer was made,
// on the few decisions (often none) read by then, and the rest waited for the next round (10
// minutes): the lifts were missing or computed on a part of the units until then, after every start.
func TestFirstRoundAfterTheLogIsRead(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	js, log, acfg, ccfg, store := setup(ctx, t)
	start := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	sell := seller(ctx, t, js)
	sell("X", start.Add(-14*24*time.Hour), 1, 1) // the stream holds two weeks of sales
	const n = 100
	for i := range n {
		sku := fmt.Sprint("S", i)
		sell(sku, start.Add(-7*24*time.Hour+time.Hour), 10, 1) // a week's baseline of 10
		outcome, g := audit.OutcomeFired, experiment.Treated
		if i%2 == 1 {
			outcome, g = audit.OutcomeHeldOut, experiment.Held
		}
		sell(sku, start.Add(2*time.Hour), float64(10+i%4), 1)
		r := audit.Record{DecisionID: id(sku), Event: audit.EventDecided, Outcome: outcome, Mode: audit.ModeActive, Time: start,
			RuleSet: audit.RuleSetRef{Name: "x", Version: "v1"}, Rule: audit.RuleRef{Name: "clear"}, SKU: sku, Site: "s1", Channel: "web",
			Action:     rules.Action{Kind: rules.Promote, Channels: []string{"web"}, Discount: 10, Duration: 24 * time.Hour},
			Experiment: &audit.ExperimentRef{ID: "clear", Holdout: &experiment.Assignment{Salt: "clear", Share: 0.5, Group: g}}}
		if outcome == audit.OutcomeFired {
			r.Verdict = &guard.Verdict{DecisionID: r.DecisionID, Outcome: guard.Allow, ActionTime: start}
		}
		if _, err := log.Publish(ctx, r, 0); err != nil {
			t.Fatal(err)
		}
	}
	m := New(js, store, Options{Audit: acfg, Commerce: ccfg.Stream, Prefix: "gemba", Every: time.Hour,
		Now: func() time.Time { return start.Add(3 * 24 * time.Hour) }})
	var wg sync.WaitGroup
	wg.Go(func() { _ = m.Run(ctx) })
	defer wg.Wait()
	defer cancel()
	var lifts []kpi.Lift
	testutil.WaitForState(t, 20*time.Second, "the first round's lift", func() (bool, string) {
		lifts, _ = m.Lifts(ctx)
		return len(lifts) > 0, fmt.Sprintf("%d measured in %d rounds", m.Stats.Measured.Load(), m.Stats.Rounds.Load())
	})
	if l := lifts[0]; len(lifts) != 1 || l.Treated != n/2 || l.Held != n/2 || m.Stats.Rounds.Load() != 1 {
		t.Errorf("lifts %+v after %d rounds, want the holdout's over %d treated and %d held-out units from the first", lifts, m.Stats.Rounds.Load(), n/2, n/2)
	}
}
