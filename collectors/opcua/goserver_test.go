package opcua

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/server"
	"github.com/gopcua/opcua/ua"

	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
)

// goServer is gopcua's in-process server (security None, anonymous).
type goServer struct {
	srv *server.Server
	ns  *server.NodeNameSpace
	url string

	mu   sync.Mutex
	vals map[string]*ua.DataValue
}

const goNSU = "urn:gemba:gotest"

var (
	sharedGoOnce sync.Once
	sharedGo     *goServer
	sharedGoErr  error
)

// sharedGoServer is one in-process server for every test that does not restart it: building
// one imports the whole standard nodeset, which takes seconds under -race. Tests use their own
// node names.
func sharedGoServer(t testing.TB) *goServer {
	t.Helper()
	sharedGoOnce.Do(func() {
		var stop func()
		sharedGo, stop, sharedGoErr = newGoServer(testutil.FreePort(t))
		if sharedGoErr == nil {
			sharedMu.Lock()
			sharedClose = append(sharedClose, stop)
			sharedMu.Unlock()
		}
	})
	if sharedGoErr != nil {
		t.Fatal(sharedGoErr)
	}
	return sharedGo
}

// newGoServer listens on port; alsoPorts are advertised too (a proxy in front of it: the server
// answers GetEndpoints only for the URL the client asked with).
func newGoServer(port int, alsoPorts ...int) (*goServer, func(), error) {
	opts := []server.Option{
		server.EndPoint("127.0.0.1", port),
		server.EnableSecurity("None", ua.MessageSecurityModeNone),
		server.EnableAuthMode(ua.UserTokenTypeAnonymous),
		server.SetLogger(slog.New(slog.DiscardHandler)),
	}
	for _, p := range alsoPorts {
		opts = append(opts, server.EndPoint("127.0.0.1", p))
	}
	srv := server.New(opts...)
	ns := server.NewNodeNameSpace(srv, goNSU)
	g := &goServer{srv: srv, ns: ns, url: fmt.Sprintf("opc.tcp://127.0.0.1:%d", port), vals: map[string]*ua.DataValue{}}
	ctx, cancel := context.WithCancel(context.Background())
	if err := srv.Start(ctx); err != nil {
		cancel()
		return nil, nil, err
	}
	return g, func() { _ = srv.Close(); cancel() }, nil
}

// add creates a variable s=<name> linked under the namespace's Objects folder (so browse sees it).
// Its value comes from a function reading under our lock: the server's own SetAttribute races
// with its Read service.
func (g *goServer) add(name string, v any) *ua.NodeID {
	g.mu.Lock()
	g.vals[name] = server.DataValueFromValue(v)
	g.mu.Unlock()
	n := g.ns.AddNewVariableStringNode(name, func() *ua.DataValue {
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.vals[name]
	})
	g.ns.Objects().AddRef(n, server.RefTypeIDHasComponent, true)
	return n.ID()
}

// set changes a value and notifies subscribers (gopcua's server needs the explicit call).
func (g *goServer) set(t testing.TB, nid *ua.NodeID, dv *ua.DataValue) {
	t.Helper()
	g.mu.Lock()
	g.vals[nid.StringID()] = dv
	g.mu.Unlock()
	g.srv.ChangeNotification(nid)
}

func dval(v any) *ua.DataValue {
	return &ua.DataValue{EncodingMask: ua.DataValueValue | ua.DataValueSourceTimestamp, Value: ua.MustVariant(v), SourceTimestamp: time.Now()}
}

func goConfig(url, extra, nodes string) string {
	if !strings.Contains(extra, "reconnect:") {
		extra += "\nreconnect: {min_backoff: 50ms, max_backoff: 500ms, quarantine_retry: 200ms}"
	}
	return fmt.Sprintf("endpoint: %s\nsecurity: {policy: None, mode: None}\n%s\nnodes:\n%s", url, extra, nodes)
}

func TestSubscribeDataTypesArraysAndQuality(t *testing.T) {
	g := sharedGoServer(t)
	when := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	ids := map[string]*ua.NodeID{}
	for name, v := range map[string]any{
		"Double": 1.5, "Float": float32(2.5), "Int16": int16(-3), "Int32": int32(-4), "Int64": int64(1 << 40),
		"UInt16": uint16(5), "UInt32": uint32(6), "UInt64": uint64(7), "Byte": byte(8), "SByte": int8(-9),
		"Boolean": true, "String": "sku-1", "DateTime": when, "Array": []float64{1, 2, 3, 4, 5},
		"Quality": 0.0, "UInt64Big": uint64(math.MaxUint64),
	} {
		ids[name] = g.add("types."+name, v)
	}
	var nodes strings.Builder
	for name := range ids {
		fmt.Fprintf(&nodes, "  - {node: \"nsu=%s;s=types.%s\", signal: t.%s}\n", goNSU, name, strings.ToLower(name))
	}
	cfg := decodeConfig(t, goConfig(g.url, "publishing_interval: 50ms\nmax_array: 3", nodes.String()))
	r := startCollector(t, cfg, t.TempDir())

	want := map[string]signal.Value{
		"t.double": signal.Float(1.5), "t.float": signal.Float(2.5), "t.int16": signal.Int(-3), "t.int32": signal.Int(-4),
		"t.int64": signal.Int(1 << 40), "t.uint16": signal.Int(5), "t.uint32": signal.Int(6), "t.uint64": signal.Int(7),
		"t.byte": signal.Int(8), "t.sbyte": signal.Int(-9), "t.boolean": signal.Bool(true), "t.string": signal.String("sku-1"),
		"t.datetime": signal.String("2026-03-04T05:06:07Z"), "t.uint64big": signal.String("18446744073709551615"),
		"t.array[0]": signal.Float(1), "t.array[1]": signal.Float(2), "t.array[2]": signal.Float(3),
	}
	for sig, v := range want {
		testutil.WaitFor(t, 10*time.Second, "sample "+sig, func() bool { s, ok := r.sink.last(sig); return ok && s.Value.Equal(v) })
	}
	if n := r.sink.count("t.array[3]"); n != 0 {
		t.Errorf("array element beyond max_array emitted %d times", n)
	}
	if got := metricValue(r.c.m.arrayDrops); got < 2 {
		t.Errorf("array drops metric = %v, want >= 2", got)
	}
	s, _ := r.sink.last("t.double")
	if s.Source != "plc:nsu="+goNSU+";s=types.Double" || s.Quality != signal.Good {
		t.Errorf("sample = %+v", s)
	}

	// quality: uncertain and bad carry the code name; the source timestamp is the sample time
	src := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	g.set(t, ids["Quality"], &ua.DataValue{EncodingMask: ua.DataValueValue | ua.DataValueStatusCode | ua.DataValueSourceTimestamp,
		Value: ua.MustVariant(7.0), Status: ua.StatusUncertainLastUsableValue, SourceTimestamp: src})
	testutil.WaitFor(t, 20*time.Second, "uncertain sample", func() bool {
		s, ok := r.sink.last("t.quality")
		return ok && s.Quality == signal.Uncertain && s.Reason == "UncertainLastUsableValue" && s.Time.Equal(src) && s.Value.Equal(signal.Float(7))
	})
	g.set(t, ids["Quality"], &ua.DataValue{EncodingMask: ua.DataValueStatusCode | ua.DataValueSourceTimestamp,
		Status: ua.StatusBadSensorFailure, SourceTimestamp: src.Add(time.Second)})
	testutil.WaitFor(t, 20*time.Second, "bad sample", func() bool {
		s, ok := r.sink.last("t.quality")
		return ok && s.Quality == signal.Bad && s.Reason == "BadSensorFailure" && s.Value.Kind() == signal.KindNone
	})
	// a change arrives as a new sample
	g.set(t, ids["Int32"], dval(int32(42)))
	testutil.WaitFor(t, 20*time.Second, "changed int", func() bool { s, ok := r.sink.last("t.int32"); return ok && s.Value.Equal(signal.Int(42)) })
	st, details := r.c.State()
	if st != "running" || details["security"] != "None/None" || details["nodes_active"] != fmt.Sprint(len(ids)) {
		t.Errorf("state = %s %v", st, details)
	}
}

func TestDeadbandFiltersSmallChanges(t *testing.T) {
	for _, mode := range []string{ModeSubscribe, ModePoll} {
		t.Run(mode, func(t *testing.T) {
			g := sharedGoServer(t)
			nid := g.add(mode+".Level", 10.0)
			marker := g.add(mode+".Marker", int32(0))
			cfg := decodeConfig(t, goConfig(g.url, "mode: "+mode+"\npublishing_interval: 20ms\npoll_interval: 20ms",
				"  - {node: \"ns=1;s="+mode+".Level\", signal: level, deadband: 1.0}\n"+
					"  - {node: \"ns=1;s="+mode+".Marker\", signal: marker}\n"))
			r := startCollector(t, cfg, t.TempDir())
			step := func(v float64, i int32) {
				g.set(t, nid, dval(v))
				g.set(t, marker, dval(i))
				// the marker changes with the level: once it is seen, the level was read too
				testutil.WaitFor(t, 20*time.Second, fmt.Sprint("marker ", i), func() bool {
					s, ok := r.sink.last("marker")
					return ok && s.Value.Equal(signal.Int(int64(i)))
				})
			}
			testutil.WaitFor(t, 20*time.Second, "first level", func() bool { return r.sink.count("level") > 0 })
			for i, v := range []float64{10.5, 11.2, 11.3, 10.9, 13} {
				step(v, int32(i+1))
			}
			var got []float64
			for _, s := range r.sink.all() {
				if s.Signal == "level" {
					f, _ := s.Value.Float()
					got = append(got, f)
				}
			}
			if fmt.Sprint(got) != "[10 11.2 13]" {
				t.Errorf("levels emitted = %v, want [10 11.2 13]", got)
			}
			if metricValue(r.c.m.deadband) == 0 {
				t.Errorf("deadband metric not counted")
			}
		})
	}
}

func TestPollModeWithQuarantine(t *testing.T) {
	g := sharedGoServer(t)
	g.add("poll.A", 1.0)
	g.add("poll.B", int32(2))
	cfg := decodeConfig(t, fmt.Sprintf(`endpoint: %s
security: {policy: None, mode: None}
reconnect: {quarantine_retry: 100ms}
groups:
  - name: slow
    mode: poll
    poll_interval: 50ms
    nodes:
      - {node: "ns=1;s=poll.A", signal: a}
      - {node: "ns=1;s=poll.Missing", signal: missing}
  - name: fast
    mode: poll
    poll_interval: 30ms
    nodes:
      - {node: "ns=1;s=poll.B", signal: b}
      - {node: "nsu=urn:not-there;s=X", signal: nons}
`, g.url))
	r := startCollector(t, cfg, t.TempDir())
	testutil.WaitFor(t, 10*time.Second, "polls", func() bool { return r.sink.count("a") >= 3 && r.sink.count("b") >= 3 })
	testutil.WaitFor(t, 20*time.Second, "quarantine", func() bool {
		ns := r.c.NodeStates()
		return strings.HasPrefix(ns["missing"], "quarantined: BadNodeIdUnknown") && strings.HasPrefix(ns["nons"], "quarantined: BadNamespaceUnknown")
	})
	if n := r.sink.count("missing"); n != 0 {
		t.Errorf("quarantined node emitted %d samples", n)
	}
	if v := metricValue(r.c.m.quarantined.WithLabelValues("missing")); v != 1 {
		t.Errorf("quarantine metric = %v", v)
	}
	_, d := r.c.State()
	if !strings.Contains(d["node missing"], "BadNodeIdUnknown") || d["nodes_quarantined"] != "2" {
		t.Errorf("state details = %v", d)
	}
	// the node appears on the server: the periodic retry brings it back
	g.add("poll.Missing", 9.0)
	testutil.WaitFor(t, 10*time.Second, "recovered node", func() bool { return r.sink.count("missing") > 0 })
	if s, _ := r.sink.last("missing"); !s.Value.Equal(signal.Float(9)) {
		t.Errorf("recovered sample = %+v", s)
	}
	if got := seriesCount(r.c.m.quarantined); got != 1 {
		t.Errorf("quarantine series = %d, want 1 (nons only)", got)
	}
}

func TestSubscribeQuarantineAndReturn(t *testing.T) {
	g := sharedGoServer(t)
	a := g.add("sq.A", 1.0)
	cfg := decodeConfig(t, goConfig(g.url, "publishing_interval: 50ms",
		"  - {node: \"ns=1;s=sq.A\", signal: a}\n  - {node: \"ns=1;s=sq.Gone\", signal: gone}\n"))
	r := startCollector(t, cfg, t.TempDir())
	testutil.WaitFor(t, 10*time.Second, "a", func() bool { return r.sink.count("a") > 0 })
	testutil.WaitFor(t, 20*time.Second, "gone quarantined", func() bool {
		return strings.HasPrefix(r.c.NodeStates()["gone"], "quarantined")
	})
	g.set(t, a, dval(2.0))
	testutil.WaitFor(t, 20*time.Second, "a=2", func() bool { s, _ := r.sink.last("a"); return s.Value.Equal(signal.Float(2)) })
	if n := r.sink.count("gone"); n != 0 {
		t.Errorf("quarantined node emitted %d samples", n)
	}
	// the node appears and changes: its monitored item delivers a good value and it is active again
	gone := g.add("sq.Gone", 3.0)
	g.set(t, gone, dval(4.0))
	testutil.WaitFor(t, 20*time.Second, "gone back", func() bool {
		s, ok := r.sink.last("gone")
		return ok && s.Value.Equal(signal.Float(4)) && r.c.NodeStates()["gone"] == stateActive
	})
}

func TestWatchdogProbeKeepsQuietSession(t *testing.T) {
	g := sharedGoServer(t)
	g.add("wd.A", 1.0)
	cfg := decodeConfig(t, goConfig(g.url, "publishing_interval: 50ms\nreconnect: {watchdog: 200ms, min_backoff: 50ms, max_backoff: 100ms}", "  - {node: \"ns=1;s=wd.A\", signal: a}\n"))
	r := startCollector(t, cfg, t.TempDir())
	testutil.WaitFor(t, 10*time.Second, "a", func() bool { return r.sink.count("a") > 0 })
	// quiet data for several watchdog periods: the probe read succeeds, nothing is rebuilt
	deadline := time.Now().Add(time.Second)
	testutil.WaitFor(t, 20*time.Second, "quiet period", func() bool { return time.Now().After(deadline) })
	if n := metricValue(r.c.m.reconnects.WithLabelValues("error")) + metricValue(r.c.m.reconnects.WithLabelValues("watchdog")); n != 0 {
		t.Errorf("quiet but healthy session rebuilt %v times", n)
	}
	if n := r.sink.count("a"); n != 1 {
		t.Errorf("got %d samples of an unchanged value, want 1", n)
	}
}

func TestEmitFailureEndsRun(t *testing.T) {
	g := sharedGoServer(t)
	g.add("emit.A", 1.0)
	cfg := decodeConfig(t, goConfig(g.url, "", "  - {node: \"ns=1;s=emit.A\", signal: a}\n"))
	r := startCollector(t, cfg, t.TempDir())
	r.sink.mu.Lock()
	r.sink.fail = errTest
	r.sink.mu.Unlock()
	err := r.runErr(t, 10*time.Second)
	mustContain(t, err, "emit", errTest.Error())
}

func TestServerCurrentTimeNodeIsReadable(t *testing.T) {
	// guards the watchdog probe's assumption on the in-process server
	g := sharedGoServer(t)
	if g.srv.Node(ua.NewNumericNodeID(0, id.Server_ServerStatus_CurrentTime)) == nil {
		t.Fatal("server has no CurrentTime node")
	}
}
