package opcua

import (
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"

	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
)

var readdSeq atomic.Int32

// A PLC program download removes a variable and adds it again. node-opcua (like most PLC servers)
// binds a monitored item to the node object: the old item reports BadNodeIdInvalid once and is
// never notified again, so only a new monitored item brings the signal back, on the same session.
func TestNodeVariableRemovedAndAddedAgainRecovers(t *testing.T) {
	ns := sharedNodeServer(t)
	name := fmt.Sprint("readd", readdSeq.Add(1))
	ns.command(t, "add "+name)
	cfg := decodeConfig(t, fmt.Sprintf(`endpoint: %s
security: {policy: None, mode: None}
publishing_interval: 100ms
reconnect: {min_backoff: 100ms, max_backoff: 1s, watchdog: 5s, quarantine_retry: 300ms}
nodes:
  - {node: "nsu=%s;s=%s", signal: readd}
  - {node: "nsu=%s;s=Int32", signal: ctl}
`, ns.url, nodeNSU, name, nodeNSU))
	r := startCollector(t, cfg, t.TempDir())
	testutil.WaitFor(t, 30*time.Second, "readd samples", func() bool { return r.sink.count("readd") >= 3 })

	ns.command(t, "remove "+name)
	testutil.WaitFor(t, 10*time.Second, "removed node quarantined", func() bool {
		return strings.HasPrefix(r.c.NodeStates()["readd"], stateQuarantined)
	})
	// several retries while the node is gone: it stays quarantined, the session stays up
	ctl := r.sink.count("ctl")
	testutil.WaitFor(t, 10*time.Second, "retries while gone", func() bool { return r.sink.count("ctl") > ctl+10 })
	if st := r.c.NodeStates()["readd"]; !strings.HasPrefix(st, stateQuarantined) {
		t.Fatalf("node state while removed = %q, want quarantined", st)
	}

	n := r.sink.count("readd")
	ns.command(t, "add "+name)
	testutil.WaitFor(t, 20*time.Second, "data of the re-added node", func() bool {
		return r.sink.count("readd") > n+3 && r.c.NodeStates()["readd"] == stateActive
	})
	for _, reason := range []string{"watchdog", "error", "channel_lost", "no_subscription"} {
		if v := metricValue(r.c.m.reconnects.WithLabelValues(reason)); v != 0 {
			t.Errorf("session rebuilt %v times (%s): the node must come back on the same session", v, reason)
		}
	}
	// one monitored item per node: no source time is stored twice
	seen := map[time.Time]int{}
	for _, s := range r.sink.all() {
		if s.Signal == "readd" {
			seen[s.Time]++
			if seen[s.Time] == 2 {
				t.Errorf("sample at %s stored twice: duplicate monitored items", s.Time.Format(time.RFC3339Nano))
			}
		}
	}
}

// After a session rebuild every new monitored item first sends the node's current value: the one
// already stored, with the same source time. Storing it again doubles the sample. A value with the
// same time but another value or status is new and is stored.
func TestSessionRebuildDoesNotStoreTheCurrentValueAgain(t *testing.T) {
	port := testutil.FreePort(t)
	p := newProxy(t, fmt.Sprintf("127.0.0.1:%d", port))
	g, stop, err := newGoServer(port, p.l.Addr().(*net.TCPAddr).Port)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	at := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)
	same := &ua.DataValue{EncodingMask: ua.DataValueValue | ua.DataValueSourceTimestamp, Value: ua.MustVariant(1.5), SourceTimestamp: at}
	g.add("rb.Same", 0.0)
	g.add("rb.Array", 0.0)
	g.add("rb.Value", 0.0)
	g.add("rb.Status", 0.0)
	g.mu.Lock()
	g.vals["rb.Same"] = same
	g.vals["rb.Array"] = &ua.DataValue{EncodingMask: ua.DataValueValue | ua.DataValueSourceTimestamp, Value: ua.MustVariant([]int32{1, 2}), SourceTimestamp: at}
	g.vals["rb.Value"] = same
	g.vals["rb.Status"] = same
	g.mu.Unlock()
	cfg := decodeConfig(t, goConfig("opc.tcp://"+p.addr(), "publishing_interval: 20ms", `  - {node: "ns=1;s=rb.Same", signal: same}
  - {node: "ns=1;s=rb.Array", signal: arr}
  - {node: "ns=1;s=rb.Value", signal: value}
  - {node: "ns=1;s=rb.Status", signal: status}
`))
	r := startCollector(t, cfg, t.TempDir())
	for _, sig := range []string{"same", "arr[1]", "value", "status"} {
		testutil.WaitFor(t, 10*time.Second, "first "+sig, func() bool { return r.sink.count(sig) == 1 })
	}

	for round := 1; round <= 2; round++ {
		// while the session is down, two nodes change at the same source time: value, then status
		g.mu.Lock()
		g.vals["rb.Value"] = &ua.DataValue{EncodingMask: ua.DataValueValue | ua.DataValueSourceTimestamp, Value: ua.MustVariant(1.5 + float64(round)), SourceTimestamp: at}
		g.vals["rb.Status"] = &ua.DataValue{EncodingMask: ua.DataValueValue | ua.DataValueStatusCode | ua.DataValueSourceTimestamp,
			Value: ua.MustVariant(1.5), Status: ua.StatusUncertain + ua.StatusCode(round), SourceTimestamp: at}
		g.mu.Unlock()
		p.Cut()
		testutil.WaitFor(t, 20*time.Second, fmt.Sprint("rebuild ", round), func() bool {
			return metricValue(r.c.m.reconnects.WithLabelValues("channel_lost")) >= float64(round)
		})
		testutil.WaitFor(t, 20*time.Second, fmt.Sprint("values of the new session ", round), func() bool {
			// the changed nodes come through; the unchanged ones either come again or are counted
			return r.sink.count("value") == 1+round && r.sink.count("status") == 1+round &&
				(r.sink.count("same") > 1 || testutil.Metric(t, r.reg, "gemba_opcua_repeated_values_total") >= float64(2*round))
		})
	}
	for _, sig := range []string{"same", "arr[0]", "arr[1]"} {
		if n := r.sink.count(sig); n != 1 {
			t.Errorf("%s: stored %d times across 2 session rebuilds, want 1 (same source time, value and status)", sig, n)
		}
	}
	if s, _ := r.sink.last("status"); s.Quality != signal.Uncertain {
		t.Errorf("last status sample = %+v, want the uncertain one", s)
	}
}
