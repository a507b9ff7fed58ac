package kpi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/decide/experiment"
	"github.com/gemba-io/gemba/hub/decide/guard"
	"github.com/gemba-io/gemba/hub/decide/rules"
	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

type lifts struct{ err error }

func (l lifts) Lifts(context.Context) ([]Lift, error) {
	if l.err != nil {
		return nil, l.err
	}
	return []Lift{{Rule: "overstock", Arm: "10", Lift: 0.12, Low: 0.05, High: 0.19, Level: 0.95, Treated: 400, Held: 100}}, nil
}

func rec(n int, event, outcome, mode, rule string, discount float64, lag time.Duration) audit.Record {
	at := time.Date(2026, 12, 4, 10, 0, n, 0, time.UTC)
	kind := rules.Promote
	if outcome == audit.OutcomeHeld {
		kind = rules.Hold
	}
	return audit.Record{DecisionID: fmt.Sprintf("%032x", n), Event: event, Outcome: outcome, Mode: mode, Time: at,
		RuleSet: audit.RuleSetRef{Name: "promo", Version: "v1"}, Rule: audit.RuleRef{Name: rule}, SKU: "B-1", Channel: "web",
		Action: rules.Action{Kind: kind, Channels: []string{"web"}, Discount: discount},
		Inputs: []audit.Input{{Name: "temp", Key: "line1", EventTime: at.Add(-lag)}, {Name: "units", Key: "B-1", EventTime: at.Add(-time.Hour)}}}
}

func TestKPIsFromTheDecisionLog(t *testing.T) {
	n := natstest.JetStream(t)
	nc, js := natstest.Connect(t, n.URL())
	ctx := context.Background()
	log, err := audit.Open(ctx, js, audit.Config{Prefix: "gemba"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []audit.Record{
		rec(1, audit.EventDecided, audit.OutcomeFired, audit.ModeActive, "overstock", 10, 40*time.Millisecond),
		rec(2, audit.EventDecided, audit.OutcomeFired, audit.ModeActive, "overstock", 15, 3*time.Second),
		rec(3, audit.EventDecided, audit.OutcomeHeld, audit.ModeActive, "line-down", 0, 200*time.Millisecond),
		rec(4, audit.EventDecided, audit.OutcomeSuppressed, audit.ModeActive, "overstock", 30, time.Second),
		rec(5, audit.EventDecided, audit.OutcomeAwaitingApproval, audit.ModeActive, "overstock", 40, time.Second),
		rec(6, audit.EventDecided, audit.OutcomeShadow, audit.ModeShadow, "overstock", 20, time.Second),
	} {
		if _, err := log.Publish(ctx, r, 0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := log.RecordMonitor(ctx, audit.MonitorEvent{ID: "q1", Kind: "drift", State: "breach", Feature: "temp", Key: "line1",
		Time: time.Now(), Why: "PSI 0.4"}); err != nil {
		t.Fatal(err)
	}
	// A message that is no record: not counted, said with its sequence.
	if err := nc.Publish("gemba.decisions."+fmt.Sprintf("%032x", 99), []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "the broken message stored", func() bool {
		st, err := js.Stream(ctx, audit.DefaultStream)
		return err == nil && st.CachedInfo() != nil && func() bool { i, err := st.Info(ctx); return err == nil && i.State.Msgs == 8 }()
	})
	tr, err := Open(ctx, js, Options{Audit: audit.Config{Prefix: "gemba"}, Lifts: lifts{}})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	f := tr.Figures(ctx)
	want := map[string]uint64{audit.OutcomeFired: 2, audit.OutcomeHeld: 1, audit.OutcomeSuppressed: 1, audit.OutcomeAwaitingApproval: 1}
	for o, n := range want {
		if f.Decisions[o] != n {
			t.Errorf("%s: %d, want %d (%v)", o, f.Decisions[o], n, f.Decisions)
		}
	}
	if f.Shadow != 1 || tr.Stats.Malformed.Load() != 1 || f.Quality["drift/breach"] != 1 {
		t.Errorf("shadow %d malformed %d quality %v", f.Shadow, tr.Stats.Malformed.Load(), f.Quality)
	}
	if f.Discount.Promotions != 2 || f.Discount.PointsTotal != 25 || f.Discount.Max != 15 {
		t.Errorf("discount: %+v (want 2 fired promotions, 25 points: suppressed, awaiting and shadow give nothing)", f.Discount)
	}
	// Latency from the newest input (not the hour-old one), of the three acting decisions.
	if f.Latency.Count != 3 || f.Latency.P50S != 0.25 || f.Latency.P99S != 5 {
		t.Errorf("latency: %+v", f.Latency)
	}
	if len(f.Lifts) != 1 || f.Lifts[0].Arm != "10" || f.LiftNote != "" {
		t.Errorf("lifts: %+v %q", f.Lifts, f.LiftNote)
	}
	// An approval that lands later is counted as it arrives.
	ap := rec(5, audit.EventApproved, audit.OutcomeFired, audit.ModeActive, "overstock", 40, time.Hour)
	if _, err := log.Append(ctx, ap); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "the approval counted", func() bool { return tr.Figures(ctx).Decisions[audit.OutcomeFired] == 3 })
	if f := tr.Figures(ctx); f.Latency.Count != 3 || f.Discount.PointsTotal != 65 {
		t.Errorf("after the approval: latency %+v (a person's wait is not signal-to-action), discount %+v", f.Latency, f.Discount)
	}
	// Metrics and the read API.
	reg := prometheus.NewRegistry()
	reg.MustRegister(tr.Collector())
	if v := testutil.Metric(t, reg, "gemba_hub_kpi_decisions", "outcome", "fired"); v != 3 {
		t.Errorf("decisions metric: %v", v)
	}
	if v := testutil.Metric(t, reg, "gemba_hub_kpi_lift", "rule", "overstock"); v != 0.12 {
		t.Errorf("lift metric: %v", v)
	}
	srv := httptest.NewServer(tr.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/api/v1/kpis")
	if err != nil {
		t.Fatal(err)
	}
	var got Figures
	err = json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	if err != nil || got.Decisions[audit.OutcomeFired] != 3 || len(got.Rules) != 2 {
		t.Errorf("GET: %+v %v", got, err)
	}
	resp, err = http.Post(srv.URL+"/api/v1/kpis", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", resp.StatusCode)
	}
	// Without experiments, or with their error, the figures say why there is no lift.
	tr.o.Lifts = lifts{err: errors.New("no experiment running")}
	if f := tr.Figures(ctx); len(f.Lifts) != 0 || f.LiftNote != "experiments: no experiment running" {
		t.Errorf("lift note: %+v %q", f.Lifts, f.LiftNote)
	}
}

func TestOpenWithoutLog(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := Open(ctx, js, Options{Audit: audit.Config{Prefix: "gemba", Stream: "NOPE"}}); err == nil {
		t.Fatal("opened without a decision log")
	}
}

func TestFromHoldout(t *testing.T) {
	var units []experiment.UnitOutcome
	for i := range 200 {
		g, sales := experiment.Treated, 12.0+float64(i%5)
		if i%5 == 0 {
			g, sales = experiment.Held, 10.0+float64(i%3)
		}
		units = append(units, experiment.UnitOutcome{SKU: fmt.Sprint("S", i), Channel: "web", Group: g, Sales: sales, Baseline: 10})
	}
	r, err := experiment.Lift(units, 0.2, 0.95)
	if err != nil {
		t.Fatal(err)
	}
	l := FromHoldout("overstock", "10", r)
	if l.Lift != r.Lift || l.Low > l.Lift || l.High < l.Lift || l.Treated != 160 || l.Held != 40 || l.SRM || l.Level != 0.95 {
		t.Errorf("lift %+v from %+v", l, r)
	}
}

// The decision log's newest message can be gone when a replica starts: decision records carry a TTL
// (audit retention) while rule changes are kept, so after a quiet spell longer than the retention the
// stream's last sequence names an expired record. Open must still return once what is there is
// counted, not wait for a message that will never come.
func TestOpenAfterTheNewestRecordExpired(t *testing.T) {
	n := natstest.JetStream(t)
	nc, js := natstest.Connect(t, n.URL())
	ctx := context.Background()
	log, err := audit.Open(ctx, js, audit.Config{Prefix: "gemba", Retention: time.Second, DuplicateWindow: time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A rule change (kept), then a decision record that expires after a second.
	if err := nc.Publish(log.Config().RulesSubject(), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := log.Publish(ctx, rec(1, audit.EventDecided, audit.OutcomeFired, audit.ModeActive, "overstock", 10, time.Second), 1); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 15*time.Second, "the decision record expires", func() bool {
		st, err := js.Stream(ctx, audit.DefaultStream)
		if err != nil {
			return false
		}
		i, err := st.Info(ctx)
		return err == nil && i.State.Msgs == 1 && i.State.LastSeq == 2
	})
	octx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	tr, err := Open(octx, js, Options{Audit: audit.Config{Prefix: "gemba"}})
	if err != nil {
		t.Fatalf("Open with the newest record expired: %v", err)
	}
	defer tr.Close()
	if f := tr.Figures(ctx); len(f.Decisions) != 0 || tr.Stats.Malformed.Load() != 0 {
		t.Errorf("figures %+v, malformed %d", f.Decisions, tr.Stats.Malformed.Load())
	}
}

// A record published again after the log's duplicate window (a replica re-publishing a replayed
// decision) is counted once, and a promotion released before it acted (kill switch, abandoned
// delivery, reconcile) gives no discount: the figures are what was acted on.
func TestRepublishedAndReleasedNotCounted(t *testing.T) {
	n := natstest.JetStream(t)
	nc, js := natstest.Connect(t, n.URL())
	ctx := context.Background()
	log, err := audit.Open(ctx, js, audit.Config{Prefix: "gemba"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := rec(11, audit.EventDecided, audit.OutcomeFired, audit.ModeActive, "overstock", 10, time.Second)
	b := rec(12, audit.EventDecided, audit.OutcomeFired, audit.ModeActive, "overstock", 30, time.Second)
	for _, r := range []audit.Record{a, b} {
		if _, err := log.Publish(ctx, r, 0); err != nil {
			t.Fatal(err)
		}
	}
	again, _ := json.Marshal(a) // past the duplicate window: JetStream stores it again
	if err := nc.Publish("gemba.decisions."+a.DecisionID, again); err != nil {
		t.Fatal(err)
	}
	rel := b
	rel.Event, rel.Outcome, rel.Time = audit.EventReleased, audit.OutcomeReleased, b.Time.Add(time.Minute)
	if _, err := log.Append(ctx, rel); err != nil {
		t.Fatal(err)
	}
	tr, err := Open(ctx, js, Options{Audit: audit.Config{Prefix: "gemba"}})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	testutil.WaitFor(t, 5*time.Second, "the release counted", func() bool { return tr.Figures(ctx).Decisions[audit.OutcomeReleased] == 1 })
	f := tr.Figures(ctx)
	if f.Decisions[audit.OutcomeFired] != 2 {
		t.Errorf("fired %d, want 2 (the re-published record counted once)", f.Decisions[audit.OutcomeFired])
	}
	if f.Discount.Promotions != 1 || f.Discount.PointsTotal != 10 || f.Discount.Max != 10 {
		t.Errorf("discount %+v, want 1 promotion of 10 points (one counted twice, the other released)", f.Discount)
	}
	if rf := f.Rules[0]; rf.Discount.Promotions != 1 || rf.Discount.PointsTotal != 10 {
		t.Errorf("rule discount %+v", rf.Discount)
	}
}

// A promotion released when its delivery was dead-lettered, reserved again by the replay of that
// dead letter (reacquired: it acts after all), and released again when the replay was
// dead-lettered too, gave nothing: the second release takes back what the reacquired record
// counted. One released and reacquired once is given, once. Each record stored twice (a replica
// re-publishing it after the duplicate window) is counted once.
func TestReleasedAgainAfterReplayNotCounted(t *testing.T) {
	n := natstest.JetStream(t)
	nc, js := natstest.Connect(t, n.URL())
	ctx := context.Background()
	log, err := audit.Open(ctx, js, audit.Config{Prefix: "gemba"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	later := func(r audit.Record, event, outcome string, replay int, after time.Duration) audit.Record {
		r.Event, r.Outcome, r.Replay, r.Time, r.Inputs = event, outcome, replay, r.Time.Add(after), nil
		return r
	}
	a := rec(21, audit.EventDecided, audit.OutcomeFired, audit.ModeActive, "overstock", 10, time.Second) // released again
	b := rec(22, audit.EventDecided, audit.OutcomeFired, audit.ModeActive, "overstock", 30, time.Second) // acts after its replay
	recs := []audit.Record{a, b,
		later(a, audit.EventReleased, audit.OutcomeReleased, 0, time.Minute),
		later(b, audit.EventReleased, audit.OutcomeReleased, 0, time.Minute),
		later(a, audit.EventReacquired, audit.OutcomeFired, 1, 2*time.Minute),
		later(b, audit.EventReacquired, audit.OutcomeFired, 1, 2*time.Minute),
		later(a, audit.EventReleased, audit.OutcomeReleased, 1, 3*time.Minute),
	}
	for _, r := range recs {
		if r.Event == audit.EventDecided {
			_, err = log.Publish(ctx, r, 0)
		} else {
			_, err = log.Append(ctx, r)
		}
		if err != nil {
			t.Fatal(err)
		}
		again, _ := json.Marshal(r) // past the duplicate window: JetStream stores it again
		if err := nc.Publish("gemba.decisions."+r.DecisionID, again); err != nil {
			t.Fatal(err)
		}
	}
	tr, err := Open(ctx, js, Options{Audit: audit.Config{Prefix: "gemba"}})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	testutil.WaitFor(t, 5*time.Second, "every record read", func() bool { return tr.Stats.Records.Load() == uint64(2*len(recs)) })
	f := tr.Figures(ctx)
	if f.Discount.Promotions != 1 || f.Discount.PointsTotal != 30 || f.Discount.Max != 30 {
		t.Errorf("discount %+v, want 1 promotion of 30 points (the one reacquired; the other released again)", f.Discount)
	}
	if rf := f.Rules[0]; rf.Discount.Promotions != 1 || rf.Discount.PointsTotal != 30 {
		t.Errorf("rule discount %+v", rf.Discount)
	}
	if f.Decisions[audit.OutcomeReleased] != 3 || f.Decisions[audit.OutcomeFired] != 4 {
		t.Errorf("decisions %v, want 3 released and 4 fired records (2 decided, 2 reacquired), each counted once", f.Decisions)
	}
}

// Reconcile releases an allowed decision whose replica stopped before recording it; a replica that
// was only slow records its decided record after the release. The promotion never ran: no discount.
func TestReleasedBeforeDecidedNotCounted(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	ctx := context.Background()
	log, err := audit.Open(ctx, js, audit.Config{Prefix: "gemba"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := rec(31, audit.EventDecided, audit.OutcomeFired, audit.ModeActive, "overstock", 20, time.Second)
	rel := d
	rel.Event, rel.Outcome, rel.Inputs = audit.EventReleased, audit.OutcomeReleased, nil
	if _, err := log.Append(ctx, rel); err != nil {
		t.Fatal(err)
	}
	if _, err := log.Publish(ctx, d, 0); err != nil {
		t.Fatal(err)
	}
	tr, err := Open(ctx, js, Options{Audit: audit.Config{Prefix: "gemba"}})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	testutil.WaitFor(t, 5*time.Second, "both records read", func() bool { return tr.Stats.Records.Load() == 2 })
	if f := tr.Figures(ctx); f.Discount.Promotions != 0 || f.Discount.PointsTotal != 0 {
		t.Errorf("discount %+v, want none (released by reconcile before its decided record was written)", f.Discount)
	}
}

// A decision suppressed by the kill switch is decided again once the switch is reset (a round of
// its own, guard.Verdict.Round), and may be suppressed again (a cap): two suppressions, counted as two.
func TestDecidedAgainInANewRoundCounted(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	ctx := context.Background()
	log, err := audit.Open(ctx, js, audit.Config{Prefix: "gemba"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for round := range 2 {
		r := rec(41, audit.EventDecided, audit.OutcomeSuppressed, audit.ModeActive, "overstock", 10, time.Second)
		r.Time = r.Time.Add(time.Duration(round) * time.Hour)
		r.Verdict = &guard.Verdict{DecisionID: r.DecisionID, Outcome: guard.Suppress, Round: round}
		if _, err := log.Publish(ctx, r, 0); err != nil {
			t.Fatal(err)
		}
	}
	tr, err := Open(ctx, js, Options{Audit: audit.Config{Prefix: "gemba"}})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	testutil.WaitFor(t, 5*time.Second, "both records read", func() bool { return tr.Stats.Records.Load() == 2 })
	if f := tr.Figures(ctx); f.Decisions[audit.OutcomeSuppressed] != 2 {
		t.Errorf("suppressed %d, want 2 (one per round)", f.Decisions[audit.OutcomeSuppressed])
	}
}
