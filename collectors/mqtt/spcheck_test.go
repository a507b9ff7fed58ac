package mqtt

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gemba-io/gemba/collectors"
	"github.com/gemba-io/gemba/collectors/mqtt/sparkplug"
	"github.com/gemba-io/gemba/internal/testutil"
)

// spRig is a collector on spBv1.0/plant1/# with an edge node publishing to it.
type spRig struct {
	em   *memEmitter
	reg  *prometheus.Registry
	logs *testutil.Buffer
	e    *edgeNode
}

func startSpRig(t *testing.T, dataDir string) *spRig {
	t.Helper()
	b := startMochi(t)
	cfg := testConfig(b.url(), Subscription{Topic: "spBv1.0/plant1/#", Format: FormatSparkplugB})
	cfg.ClientID = "sp-check"
	r := &spRig{em: &memEmitter{}, reg: prometheus.NewRegistry(), logs: &testutil.Buffer{}}
	c := runCollector(t, cfg, collectors.Deps{Agent: "a", DataDir: dataDir, Metrics: r.reg,
		Logger: slog.New(slog.NewTextHandler(r.logs, nil))}, r.em)
	testutil.WaitFor(t, 10*time.Second, "connected", connectedState(c))
	r.e = &edgeNode{t: t, cl: newPublisher(t, b.url(), "edge"), group: "plant1", node: "n1", now: 1700000000000}
	return r
}

func (r *spRig) waitLast(t *testing.T, want string) string {
	t.Helper()
	testutil.WaitFor(t, 5*time.Second, want, func() bool {
		s := r.em.all()
		return len(s) > 0 && strings.HasPrefix(render(withRecvTime(s[len(s)-1:])), want)
	})
	return render(withRecvTime(r.em.all()))
}

// Issue 12 point 11: two metrics declaring one alias in a birth. Data by that alias cannot be
// attributed: it must be counted and logged, never stored under whichever metric came last.
func TestSparkplugDuplicateAliasCountedAndNotGuessed(t *testing.T) {
	r := startSpRig(t, t.TempDir())
	r.e.send("NBIRTH", "", metricSpec{name: "bdSeq", dt: sparkplug.Int64, value: uint64(0)},
		metricSpec{name: "A", alias: 1, dt: sparkplug.Double, value: 1.0},
		metricSpec{name: "B", alias: 1, dt: sparkplug.Double, value: 2.0},
		metricSpec{name: "C", alias: 2, dt: sparkplug.Double, value: 3.0})
	r.e.send("NDATA", "", metricSpec{alias: 1, noName: true, value: 5.0}, metricSpec{alias: 2, noName: true, value: 6.0})
	r.e.send("NDATA", "", metricSpec{name: "B", value: 7.0}) // by name it is unambiguous
	got := r.waitLast(t, "plant1.n1.B=float/7")
	want := "plant1.n1.A=float/1 plant1.n1.B=float/2 plant1.n1.C=float/3 plant1.n1.C=float/6 plant1.n1.B=float/7"
	if got != want {
		t.Errorf("samples:\n got %s\nwant %s", got, want)
	}
	// One for the birth, one for the data that used the alias.
	if v := counterValue(t, r.reg, "gemba_mqtt_bad_payloads_total", map[string]string{"reason": reasonDuplicateAlias}); v != 2 {
		t.Errorf("duplicate_alias = %v, want 2", v)
	}
	if l := r.logs.String(); !strings.Contains(l, "reason="+reasonDuplicateAlias) || !strings.Contains(l, "alias 1") {
		t.Errorf("no log line names the duplicate alias:\n%s", l)
	}
	// A rebirth request would only bring the same birth back.
	if v := counterValue(t, r.reg, "gemba_mqtt_sparkplug_rebirth_requests_total", nil); v != 0 {
		t.Errorf("rebirth requests = %v, want 0", v)
	}
}

// The ambiguity survives a restart (the birth is saved with both metrics), and a device rebirth
// that declares the alias once makes it usable again.
func TestSparkplugDuplicateAliasAcrossDevicesAndRestart(t *testing.T) {
	dir := t.TempDir()
	r := startSpRig(t, dir)
	r.e.send("NBIRTH", "", metricSpec{name: "bdSeq", dt: sparkplug.Int64, value: uint64(0)},
		metricSpec{name: "Up", alias: 1, dt: sparkplug.Double, value: 1.0})
	// The device reuses the node's alias: aliases are unique per edge node, devices included.
	r.e.send("DBIRTH", "d1", metricSpec{name: "T", alias: 1, dt: sparkplug.Double, value: 2.0})
	r.e.send("DDATA", "d1", metricSpec{alias: 1, noName: true, value: 3.0})
	r.e.send("DDATA", "d1", metricSpec{name: "T", value: 4.0})
	got := r.waitLast(t, "plant1.n1.d1.T=float/4")
	if want := "plant1.n1.Up=float/1 plant1.n1.d1.T=float/2 plant1.n1.d1.T=float/4"; got != want {
		t.Errorf("samples:\n got %s\nwant %s", got, want)
	}
	// The device is reborn without the alias: the node's metric owns it again.
	r.e.send("DBIRTH", "d1", metricSpec{name: "T", alias: 2, dt: sparkplug.Double, value: 5.0})
	r.e.send("NDATA", "", metricSpec{alias: 1, noName: true, value: 6.0})
	got = r.waitLast(t, "plant1.n1.Up=float/6")
	if !strings.HasSuffix(got, "plant1.n1.d1.T=float/5 plant1.n1.Up=float/6") {
		t.Errorf("after the device rebirth: %s", got)
	}
	if v := counterValue(t, r.reg, "gemba_mqtt_bad_payloads_total", map[string]string{"reason": reasonDuplicateAlias}); v != 2 {
		t.Errorf("duplicate_alias = %v, want 2", v)
	}
}

func TestSparkplugDuplicateAliasRestoredFromState(t *testing.T) {
	dir := t.TempDir()
	s := &sub{filter: "f", format: FormatSparkplugB}
	tm, err := parseTemplate(defaultSignal(FormatSparkplugB), FormatSparkplugB)
	if err != nil {
		t.Fatal(err)
	}
	s.signal = tm
	h := newSpHost()
	n := &spNode{bdSeq: 0, seq: 0, alive: true, aliases: map[uint64]*spMetric{}, devices: map[string]map[string]*spMetric{"": {}}}
	h.nodes[spKey{"g", "n"}] = n
	for _, name := range []string{"A", "B"} {
		md := &spMetric{name: name, alias: ptr(uint64(9)), datatype: sparkplug.Double, signal: "g.n." + name}
		n.devices[""][name] = md
		n.declareAlias(md)
	}
	data, err := h.snapshot("f")
	if err != nil {
		t.Fatal(err)
	}
	if err := writeFileAtomic(spStatePath(dir, "f"), data); err != nil {
		t.Fatal(err)
	}
	h2 := newSpHost()
	if err := s.loadSparkplug(h2, dir); err != nil {
		t.Fatal(err)
	}
	if md := h2.nodes[spKey{"g", "n"}].aliases[9]; md == nil || !md.ambiguous() {
		t.Fatalf("alias 9 after restore = %+v, want ambiguous", md)
	}
}

func ptr[T any](v T) *T { return &v }

// Issue 12 point 11: a data message that declares another datatype than the metric's birth. The
// birth is the contract: the value is kept (decoded by its own datatype) but stored Bad with the
// reason, counted and logged, instead of passing silently for a Good reading.
func TestSparkplugDatatypeDifferentFromBirthIsBad(t *testing.T) {
	r := startSpRig(t, "")
	r.e.send("NBIRTH", "", metricSpec{name: "bdSeq", dt: sparkplug.Int64, value: uint64(0)},
		metricSpec{name: "N", alias: 1, dt: sparkplug.Int32, value: uint32(5)})
	r.e.send("NDATA", "", metricSpec{alias: 1, noName: true, dt: sparkplug.Double, value: 2.5})
	r.e.send("NDATA", "", metricSpec{alias: 1, noName: true, dt: sparkplug.Int32, value: uint32(6)}) // same type: fine
	got := r.waitLast(t, "plant1.n1.N=int/6")
	want := "plant1.n1.N=int/5 plant1.n1.N=float/2.5!bad(datatype Double differs from the birth's Int32) plant1.n1.N=int/6"
	if got != want {
		t.Errorf("samples:\n got %s\nwant %s", got, want)
	}
	if v := counterValue(t, r.reg, "gemba_mqtt_bad_payloads_total", map[string]string{"reason": reasonDatatypeMismatch}); v != 1 {
		t.Errorf("datatype_mismatch = %v, want 1", v)
	}
	if l := r.logs.String(); !strings.Contains(l, "reason="+reasonDatatypeMismatch) {
		t.Errorf("no log line for the datatype mismatch:\n%s", l)
	}
}
