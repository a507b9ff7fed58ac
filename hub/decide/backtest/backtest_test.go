package backtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub/decide/guard"
	"github.com/gemba-io/gemba/hub/decide/rules"
)

func streamNames(t *testing.T, js jetstream.JetStream) []string {
	t.Helper()
	var out []string
	l := js.StreamNames(context.Background())
	for n := range l.Name() {
		out = append(out, n)
	}
	if err := l.Err(); err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

func lastSeq(t *testing.T, js jetstream.JetStream, name string) uint64 {
	t.Helper()
	s, err := js.Stream(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo().State.LastSeq
}

// line renders a decision as the test expects it.
func line(d Decision) string {
	return fmt.Sprintf("%s %s %s %s %s %s", d.Time.Format("15:04:05"), d.SKU, d.Channel, d.Rule, d.Action.Kind, d.Verdict())
}

// The scripted day: holds while l1 is down and A is short (none before From, while the state warms up), a promotion once A is over-stocked and
// l1 runs again, and the next hour's promotion stopped by the cooldown. Nothing is published to
// the hub's NATS.
func TestBacktestScriptedDay(t *testing.T) {
	cfg, _ := testConfig(t)
	js := hubNATS(t, cfg)
	publishHistory(t, js, cfg)
	before := streamNames(t, js)
	lastSeqs := map[string]uint64{}
	for _, name := range before {
		lastSeqs[name] = lastSeq(t, js, name)
	}

	// Anything the backtest published on the hub's subjects (actions, decisions, KV) would show here.
	nc := js.Conn()
	var mu sync.Mutex
	var seen []string
	sub, err := nc.Subscribe(">", func(m *nats.Msg) {
		if strings.HasPrefix(m.Subject, "_INBOX.") {
			return // the ordered consumers' deliveries and API replies
		}
		mu.Lock()
		seen = append(seen, m.Subject)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	var got []Decision
	sum, err := Run(context.Background(), Options{JS: js, Config: cfg, Rules: testSet(t), From: at(9, 0), To: at(14, 0),
		Out: func(d Decision) { got = append(got, d) }, TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, d := range got {
		lines = append(lines, line(d))
	}
	want := []string{
		"10:00:10 A retail hold-short hold held",
		"10:00:10 A web hold-short hold held",
		"11:00:00 A retail hold-short hold held",
		"11:00:00 A web hold-short hold held",
		"12:00:00 A retail hold-short hold held", // the window ending 12:00:00 is still down
		"12:00:00 A web hold-short hold held",
		"12:30:00 A retail promote-over promote fired",
		"12:30:00 A web promote-over promote fired",
		"13:00:00 A retail promote-over promote suppressed by cooldown",
		"13:00:00 A web promote-over promote suppressed by cooldown",
	}
	SortDecisions(got)
	lines = lines[:0]
	for _, d := range got {
		lines = append(lines, line(d))
	}
	if !slices.Equal(lines, want) {
		t.Fatalf("decisions:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	for _, d := range got {
		if want := guard.DecisionID(testSet(t).Version(), d.Rule, d.SKU, d.Channel, guard.TimeBucket(d.Time, time.Hour)); d.ID != want {
			t.Errorf("%s: id %s, want %s", line(d), d.ID, want)
		}
		if d.Action.Kind == rules.Promote && (d.Action.Discount != 10 || d.Action.Duration != 24*time.Hour) {
			t.Errorf("%s: action %+v", line(d), d.Action)
		}
	}
	if sum.Decisions != 10 || sum.ByOutcome["held"] != 6 || sum.ByOutcome["fired"] != 2 || sum.ByOutcome["suppressed"] != 2 ||
		sum.ByGuardrail["cooldown"] != 2 ||
		sum.ByRule["hold-short"] != 6 || sum.ByChannel["web"] != 5 {
		t.Errorf("summary %+v", sum)
	}
	// 5 h 10 min of 10 s windows (from 08:50: the warm-up; the one ending at To is out), 3 features each; 7 sales and 2 counts.
	if sum.Features != 3*(31*60-1) || sum.Sales != 7 || sum.Snapshots != 2 || sum.Malformed != 0 {
		t.Errorf("inputs: %d features, %d sales, %d counts, %d malformed", sum.Features, sum.Sales, sum.Snapshots, sum.Malformed)
	}
	t.Logf("replayed %s in %s (%.0f× real time)", sum.To.Sub(sum.From), sum.Wall, sum.Speed)
	if sum.Speed <= 0 || sum.Wall <= 0 {
		t.Errorf("speed %v wall %v", sum.Speed, sum.Wall)
	}

	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	// The ordered consumers' deliveries carry the stored messages' subjects; anything else (an
	// action, a decision record, a KV write, a request beyond creating consumers) is a publish.
	for _, s := range seen {
		switch {
		case s == "gemba.s1.agent-1.features", strings.HasPrefix(s, "gemba.commerce."),
			strings.HasPrefix(s, "$JS.EVENT.ADVISORY."), strings.HasPrefix(s, "$JS.API.CONSUMER."),
			strings.HasPrefix(s, "$JS.API.STREAM.INFO."), strings.HasPrefix(s, "$JS.API.STREAM.MSG.GET."), s == "$JS.API.INFO":
		default:
			t.Errorf("the backtest sent %s on the hub's NATS", s)
		}
	}
	for name, seq := range lastSeqs {
		if now := lastSeq(t, js, name); now != seq {
			t.Errorf("stream %s grew from %d to %d", name, seq, now)
		}
	}
	if after := streamNames(t, js); !slices.Equal(before, after) {
		t.Errorf("streams before %v, after %v (no ACTIONS, decision log or bucket may appear)", before, after)
	}
}

// A replay stopped half-way returns the context's error and leaves nothing behind: the private
// server is shut down (goleak checks its goroutines) and its store removed.
func TestBacktestCancelled(t *testing.T) {
	cfg, _ := testConfig(t)
	js := hubNATS(t, cfg)
	publishHistory(t, js, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tmp := t.TempDir()
	n := 0
	_, err := Run(ctx, Options{JS: js, Config: cfg, Rules: testSet(t), From: at(9, 0), To: at(14, 0), TempDir: tmp,
		Out: func(Decision) { n++; cancel() }})
	if !errors.Is(err, context.Canceled) || n != 1 {
		t.Fatalf("err %v after %d decisions, want context.Canceled after the first", err, n)
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Fatalf("the private store was left in %s: %v", tmp, left)
	}
}

func TestBacktestRefusesBadOptions(t *testing.T) {
	cfg, _ := testConfig(t)
	noGuard := *cfg
	noGuard.Guard = nil
	noGraph := *cfg
	noGraph.Graph.File = ""
	for _, c := range []struct {
		o    Options
		want string
	}{
		{Options{Config: cfg, Rules: testSet(t), From: at(9, 0), To: at(10, 0)}, "no connection"},
		{Options{JS: hubNATS(t, cfg), Config: &noGuard, Rules: testSet(t), From: at(9, 0), To: at(10, 0)}, "no guard section"},
		{Options{JS: hubNATS(t, cfg), Config: cfg, From: at(9, 0), To: at(10, 0)}, "no rule set"},
		{Options{JS: hubNATS(t, cfg), Config: cfg, Rules: testSet(t), From: at(10, 0), To: at(10, 0)}, "the span is empty"},
		{Options{JS: hubNATS(t, cfg), Config: &noGraph, Rules: testSet(t), From: at(9, 0), To: at(10, 0)}, "no knowledge graph"},
	} {
		if _, err := Run(context.Background(), c.o); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("err %v, want one mentioning %q", err, c.want)
		}
	}
}

// Messages the hub would terminate (not an envelope, an envelope on another agent's subject, a
// sale without its fields) are counted and skipped; the replay decides the same.
func TestBacktestSkipsMalformed(t *testing.T) {
	cfg, _ := testConfig(t)
	js := hubNATS(t, cfg)
	ctx := context.Background()
	for subj, data := range map[string]string{
		"gemba.s1.agent-1.features": "not json",
		"gemba.s1.agent-9.features": `{"schema":1,"agent":"agent-1","site":"s1","stream":"features","config_version":"c","first_seq":1,"last_seq":1,"count":0,"records":[]}`,
		"gemba.commerce.sales.web":  `{"schema":1,"order_id":"x"}`,
	} {
		if _, err := js.Publish(ctx, subj, []byte(data)); err != nil {
			t.Fatal(err)
		}
	}
	publishHistory(t, js, cfg)
	var n int
	sum, err := Run(ctx, Options{JS: js, Config: cfg, Rules: testSet(t), From: at(9, 0), To: at(14, 0), TempDir: t.TempDir(),
		Out: func(Decision) { n++ }})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Malformed != 3 || n != 10 || sum.Sales != 7 {
		t.Fatalf("%d malformed, %d decisions, %d sales; want 3, 10, 7", sum.Malformed, n, sum.Sales)
	}
}
