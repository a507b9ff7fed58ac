package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"go.yaml.in/yaml/v3"

	"github.com/gemba-io/gemba/internal/promtext"
	"github.com/gemba-io/gemba/internal/testutil"
)

// alertRules returns the YAML block of docs/operations.md that follows the alert-rules marker.
func alertRules(t *testing.T) string {
	t.Helper()
	doc, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "<!-- alert-rules")
	if !ok {
		t.Fatal("docs/operations.md has no <!-- alert-rules marker")
	}
	_, rest, ok = strings.Cut(rest, "```yaml\n")
	block, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("no ```yaml block after the alert-rules marker")
	}
	return block
}

var (
	ruleMetric = regexp.MustCompile(`gemba_[a-z_]+`)
	// increase(name{matchers}[range]): the counters whose rise fires an alert.
	ruleIncrease = regexp.MustCompile(`increase\((gemba_[a-z_]+)(\{[^}]*\})?\[`)
	ruleMatcher  = regexp.MustCompile(`(\w+)="([^"]*)"`)
)

// readyz returns /readyz's status code and body.
func readyz(t *testing.T, addr string) (int, Readiness) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r Readiness
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, r
}

// TestHealthFollowsTheOPCUAServer is issue 18's health acceptance test, all real: gopcua's OPC UA
// server, an embedded NATS, the Badger buffer, the agent's HTTP listener. One of the PLC's three
// nodes does not exist (quarantined): the agent is up and degraded. The server is killed: /readyz
// turns 503 and gemba_collector_up 0 within the collector's reconnect interval (polled, not
// timed); it comes back when the server does. Every metric the documented alert rules use is in
// the first scrape, and promtool runs those rules over each scrape: the right alert fires in each
// state and no other.
func TestHealthFollowsTheOPCUAServer(t *testing.T) {
	dir := t.TempDir()
	ns := startNATS(t)
	opc := startOPC(t, testutil.FreePort(t), 0, "c1", "c2")
	yml := fmt.Sprintf(`
agent: {id: gw-health, site: plant1, shutdown_timeout: 5s, restart: {initial: 50ms, max: 200ms}}
http: {listen: "127.0.0.1:0"}
buffer: {dir: %s, max_bytes: 64MiB}
uplink: {nats: {servers: [%s], create_stream: true}}
collectors:
  - name: plc
    type: opcua
    endpoint: %s
    security: {policy: None, mode: None}
    reconnect: {min_backoff: 50ms, max_backoff: 500ms, quarantine_retry: 200ms}
    nodes:
      - {node: "%s", signal: plc.c1}
      - {node: "%s", signal: plc.c2}
      - {node: "%s", signal: plc.missing}
`, filepath.Join(dir, "buffer"), ns.ClientURL(), opc.url(), opc.node("c1"), opc.node("c2"), opc.node("missing"))
	cfg, err := Parse([]byte(yml), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan string, 1)
	a := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Ready: ready})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("agent did not start: %v", err)
	}
	metricsURL := "http://" + addr + "/metrics"
	rules := alertRules(t)

	// The first scrape has every metric the rules name, counters at 0.
	first, err := promtext.Scrape(metricsURL)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, n := range ruleMetric.FindAllString(rules, -1) {
		names[n] = true
	}
	if len(names) < 5 {
		t.Fatalf("the rules name only %v", names)
	}
	for n := range names {
		f, ok := first[n]
		if !ok || len(f.GetMetric()) == 0 {
			t.Errorf("the first scrape lacks %s, which an alert rule uses", n)
			continue
		}
		if f.GetType() == dto.MetricType_COUNTER && promtext.Metrics(first).Sum(n) != 0 {
			t.Errorf("%s is %v at start", n, promtext.Metrics(first).Sum(n))
		}
	}

	plcCheck := func(r Readiness) Check {
		for _, c := range r.Checks {
			if c.Name == "collector plc" {
				return c
			}
		}
		return Check{}
	}
	gauge := func(name string) float64 { return testutil.Metric(t, a.Registry(), name, "collector", "plc") }
	var code int
	var r Readiness
	testutil.WaitFor(t, 30*time.Second, "connected, degraded by the missing node", func() bool {
		code, r = readyz(t, addr)
		return code == 200 && r.Status == StatusDegraded && gauge("gemba_collector_up") == 1 && gauge("gemba_collector_degraded") == 1
	})
	if c := plcCheck(r); !c.OK || !c.Degraded || !strings.Contains(c.Reason, "1 of 3 nodes quarantined (plc.missing: quarantined: BadNodeIdUnknown") {
		t.Errorf("degraded check: %+v", c)
	}
	// The heartbeat says so in the documented enum, valid against the wire schema.
	if st := a.Status().Collectors["plc"].State; st != "degraded" {
		t.Errorf("heartbeat state %q with a node quarantined, want degraded", st)
	}
	checkStatusSchema(t, a.Status())
	degraded, err := promtext.Scrape(metricsURL)
	if err != nil {
		t.Fatal(err)
	}

	opc.kill()
	testutil.WaitFor(t, 30*time.Second, "/readyz 503 and gemba_collector_up 0 with the server gone", func() bool {
		code, r = readyz(t, addr)
		return code == 503 && r.Status == StatusNotReady && !plcCheck(r).OK && gauge("gemba_collector_up") == 0
	})
	if c := plcCheck(r); !strings.Contains(c.Reason, "reconnecting") {
		t.Errorf("down check: %+v", c)
	}
	if st := a.Status().Collectors["plc"].State; st != "reconnecting" {
		t.Errorf("heartbeat state %q with the server gone, want reconnecting", st)
	}
	checkStatusSchema(t, a.Status())
	down, err := promtext.Scrape(metricsURL)
	if err != nil {
		t.Fatal(err)
	}

	opc.start()
	testutil.WaitFor(t, 30*time.Second, "recovery once the server is back", func() bool {
		code, r = readyz(t, addr)
		return code == 200 && gauge("gemba_collector_up") == 1
	})

	t.Run("promtool", func(t *testing.T) {
		promtool, err := exec.LookPath("promtool")
		if err != nil {
			if os.Getenv("CI") != "" {
				t.Fatal("promtool missing: run scripts/install-peers.sh")
			}
			t.Skip("promtool missing (scripts/install-peers.sh installs it); CI fails here")
		}
		alerts := ruleAlerts(t, rules)
		groups := []promGroup{
			// Connected with a quarantined node: degraded fires, nothing else.
			scrapeGroup("degraded", degraded, nil, alerts, map[string][]map[string]string{
				"GembaCollectorDegraded": {{"collector": "plc"}}}),
			// The server gone: down fires, nothing else.
			scrapeGroup("down", down, nil, alerts, map[string][]map[string]string{
				"GembaCollectorDown": {{"collector": "plc"}}}),
		}
		// The counters the rules watch, rising from the real series' labels: their alerts fire.
		rising := map[string]bool{}
		exp := map[string][]map[string]string{}
		for _, al := range alerts {
			for _, m := range ruleIncrease.FindAllStringSubmatch(al.expr, -1) {
				rising[m[1]] = true
				f := down[m[1]]
				if f == nil {
					t.Fatalf("%s (alert %s) not in the scrape", m[1], al.name)
				}
			series:
				for _, s := range f.GetMetric() {
					ls := labelMap(s)
					for _, mm := range ruleMatcher.FindAllStringSubmatch(m[2], -1) {
						if ls[mm[1]] != mm[2] {
							continue series
						}
					}
					exp[al.name] = append(exp[al.name], ls)
				}
			}
		}
		groups = append(groups, scrapeGroup("counters rising", down, rising, alerts, mergeExp(exp,
			map[string][]map[string]string{"GembaCollectorDown": {{"collector": "plc"}}})))
		runPromtool(t, promtool, rules, groups)
	})
}

type alertRule struct {
	name, expr string
	labels     map[string]string
	summary    string
}

// ruleAlerts reads the alert rules' names, expressions, labels and summaries.
func ruleAlerts(t *testing.T, rules string) []alertRule {
	t.Helper()
	var doc struct {
		Groups []struct {
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal([]byte(rules), &doc); err != nil {
		t.Fatalf("alert rules: %v", err)
	}
	var out []alertRule
	for _, g := range doc.Groups {
		for _, r := range g.Rules {
			out = append(out, alertRule{r.Alert, r.Expr, r.Labels, r.Annotations["summary"]})
		}
	}
	return out
}

func labelMap(m *dto.Metric) map[string]string {
	ls := map[string]string{}
	for _, l := range m.GetLabel() {
		ls[l.GetName()] = l.GetValue()
	}
	return ls
}

func mergeExp(a, b map[string][]map[string]string) map[string][]map[string]string {
	for k, v := range b {
		a[k] = append(a[k], v...)
	}
	return a
}

// promtool's unit test file, written as JSON (which YAML reads).
type promGroup struct {
	Name        string          `json:"name"`
	Interval    string          `json:"interval"`
	InputSeries []promSeries    `json:"input_series"`
	AlertTests  []promAlertTest `json:"alert_rule_test"`
}

type promSeries struct {
	Series string `json:"series"`
	Values string `json:"values"`
}

type promAlertTest struct {
	EvalTime  string          `json:"eval_time"`
	AlertName string          `json:"alertname"`
	ExpAlerts []promExpAlerts `json:"exp_alerts"`
}

type promExpAlerts struct {
	Labels      map[string]string `json:"exp_labels"`
	Annotations map[string]string `json:"exp_annotations"`
}

// scrapeGroup turns a scrape into 30 minutes of input series (each series holding its scraped
// value; those in rising go up by one a minute) and expects, at 30m, exactly the alerts in fire
// (labels of the series; the rule's labels and summary are added here) and none of the others.
func scrapeGroup(name string, scrape promtext.Metrics, rising map[string]bool, alerts []alertRule, fire map[string][]map[string]string) promGroup {
	g := promGroup{Name: name, Interval: "1m"}
	var fams []string
	for n := range scrape {
		if strings.HasPrefix(n, "gemba_") {
			fams = append(fams, n)
		}
	}
	sort.Strings(fams)
	for _, n := range fams {
		for _, m := range scrape[n].GetMetric() {
			var v float64
			switch {
			case m.Counter != nil:
				v = m.Counter.GetValue()
			case m.Gauge != nil:
				v = m.Gauge.GetValue()
			case m.Untyped != nil:
				v = m.Untyped.GetValue()
			default:
				continue // histograms and summaries: no rule uses them
			}
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+"="+strconv.Quote(l.GetValue()))
			}
			step := "+0"
			if rising[n] {
				step = "+1"
			}
			g.InputSeries = append(g.InputSeries, promSeries{
				Series: n + "{" + strings.Join(ls, ",") + "}",
				Values: strconv.FormatFloat(v, 'g', -1, 64) + step + "x30",
			})
		}
	}
	for _, al := range alerts {
		at := promAlertTest{EvalTime: "30m", AlertName: al.name, ExpAlerts: []promExpAlerts{}}
		for _, ls := range fire[al.name] {
			labels := map[string]string{}
			for k, v := range ls {
				labels[k] = v
			}
			for k, v := range al.labels {
				labels[k] = v
			}
			summary := al.summary
			for k, v := range ls {
				summary = strings.ReplaceAll(summary, "{{ $labels."+k+" }}", v)
			}
			at.ExpAlerts = append(at.ExpAlerts, promExpAlerts{Labels: labels, Annotations: map[string]string{"summary": summary}})
		}
		g.AlertTests = append(g.AlertTests, at)
	}
	return g
}

func runPromtool(t *testing.T, promtool, rules string, groups []promGroup) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "rules.yml"), []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	test, err := json.MarshalIndent(map[string]any{"rule_files": []string{"rules.yml"}, "evaluation_interval": "1m", "tests": groups}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "test.yml"), test, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(promtool, "test", "rules", "test.yml")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "SUCCESS") {
		t.Fatalf("promtool: %s", out)
	}
}
