package kpi

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

// publishing publishes record n (fired, active) until it is stored: a publish sent while a node
// stops can go unanswered; the log's message id stores a repeated one once.
func publishing(t *testing.T, log *audit.Log, n int) {
	t.Helper()
	testutil.WaitFor(t, 60*time.Second, fmt.Sprintf("record %d stored", n), func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := log.Publish(ctx, rec(n, audit.EventDecided, audit.OutcomeFired, audit.ModeActive, "overstock", 10, time.Second), 0)
		return err == nil
	})
}

// counted is what tr handed and counted: records read (each message once) and fired decisions.
func counted(tr *Tracker) (uint64, uint64) {
	return tr.Stats.Records.Load(), tr.Figures(context.Background()).Decisions[audit.OutcomeFired]
}

// A tracker whose log consumer (one replica, in memory) lived on a node that stops, its client
// connected to another node, counts a decision recorded after the stop within 5 s: the ordered
// consumer alone noticed only after two missed idle heartbeats (10 s), and the KPIs lagged that
// long. Across the new consumer every record is read once: none skipped, none twice.
func TestFollowConsumerNodeStops(t *testing.T) {
	nodes := natstest.Cluster(t, 3)
	ctx := context.Background()
	_, js := natstest.Connect(t, natstest.URLs(nodes...))
	log, err := audit.Open(ctx, js, audit.Config{Prefix: "gemba", Replicas: 3}, nil)
	if err != nil {
		t.Fatal(err)
	}
	publishing(t, log, 1)
	st, err := js.Stream(ctx, audit.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	// The server places the tracker's consumer on any of the stream's nodes: open again until it
	// is on a node the tracker's client is not connected to.
	var tr *Tracker
	host := natstest.OffClient(t, st, nodes, func(try int) (string, func()) {
		nc, js2 := natstest.Connect(t, nodes[try%len(nodes)].URL())
		natstest.Opening(t, "the tracker open", func() (err error) {
			tr, err = Open(ctx, js2, Options{Audit: audit.Config{Prefix: "gemba"}, Logger: testutil.Logger(t, slog.LevelDebug)})
			return err
		})
		if r, f := counted(tr); r != 1 || f != 1 {
			t.Fatalf("%d records (%d fired) counted when Open returned, want 1", r, f)
		}
		return nc.ConnectedServerName(), tr.Close
	})
	defer tr.Close()
	stopped := time.Now()
	host.Stop()
	publishing(t, log, 2)
	recorded := time.Now()
	testutil.WaitForState(t, 5*time.Second, "the tracker counting a decision recorded after its consumer's node stopped", func() (bool, string) {
		r, f := counted(tr)
		return f == 2, fmt.Sprintf("%d records, %d fired", r, f)
	})
	t.Logf("consumer's node stopped → record stored %v; stored → counted within %v", recorded.Sub(stopped), time.Since(recorded))
	for n := 3; n <= 5; n++ {
		publishing(t, log, n)
	}
	testutil.WaitForState(t, 10*time.Second, "the records after the new consumer counted", func() (bool, string) {
		r, f := counted(tr)
		return f == 5, fmt.Sprintf("%d records, %d fired", r, f)
	})
	if r, f := counted(tr); r != 5 || f != 5 {
		t.Errorf("%d records read, %d fired counted; want 5 and 5 (each record once)", r, f)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(tr.Collector())
	if v := testutil.Metric(t, reg, "gemba_hub_kpi_refollows_total"); v < 1 {
		t.Errorf("gemba_hub_kpi_refollows_total %v, want at least 1", v)
	}
}

// A consumer that stops delivering without a word (here the server pauses it: a node cut off says
// nothing either) is replaced: a decision recorded after it is counted within 5 s, once.
func TestFollowSilentConsumer(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	ctx := context.Background()
	log, err := audit.Open(ctx, js, audit.Config{Prefix: "gemba"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	publishing(t, log, 1)
	tr, err := Open(ctx, js, Options{Audit: audit.Config{Prefix: "gemba"}, Logger: testutil.Logger(t, slog.LevelDebug)})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	st, err := js.Stream(ctx, audit.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for name := range st.ConsumerNames(ctx).Name() {
		names = append(names, name)
	}
	if len(names) != 1 {
		t.Fatalf("consumers %v, want the tracker's one", names)
	}
	if _, err := js.PauseConsumer(ctx, audit.DefaultStream, names[0], time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	publishing(t, log, 2)
	testutil.WaitForState(t, 5*time.Second, "the tracker counting a decision recorded after its consumer fell silent", func() (bool, string) {
		r, f := counted(tr)
		return f == 2, fmt.Sprintf("%d records, %d fired", r, f)
	})
	publishing(t, log, 3)
	testutil.WaitFor(t, 10*time.Second, "the next record", func() bool { _, f := counted(tr); return f == 3 })
	if r, f := counted(tr); r != 3 || f != 3 {
		t.Errorf("%d records read, %d fired counted; want 3 and 3 (each record once)", r, f)
	}
	if n := tr.Stats.Refollows.Load(); n != 1 {
		t.Errorf("%d new consumers, want 1", n)
	}
}
