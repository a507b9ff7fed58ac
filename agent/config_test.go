package agent

import (
	"errors"
	"strings"
	"testing"

	_ "github.com/gemba-io/gemba/collectors/mqtt"
	_ "github.com/gemba-io/gemba/collectors/opcua"
	"github.com/gemba-io/gemba/config"
)

const mqttCollector = `
collectors:
  - name: sensors
    type: mqtt
    broker: tcp://127.0.0.1:1883
    client_id: gw1-sensors
    subscriptions:
      - topic: plant/+/+/telemetry
        format: json
        signal: "{topic.1}.{topic.2}.{field}"
        fields: [{path: parts, type: int}, {path: sku, type: string}]
`

func TestFeatureByMustNameAProducibleSignal(t *testing.T) {
	ok := baseConfig + mqttCollector + `
features:
  - {signal: line1.press.parts, kind: counter, window: 1m, compute: [delta], by: line1.press.sku}
`
	if _, err := Parse([]byte(ok), noEnv); err != nil {
		t.Fatalf("a templated signal the collector can produce was rejected: %v", err)
	}
	bad := baseConfig + mqttCollector + `
features:
  - {signal: line1.press.parts, kind: counter, window: 1m, compute: [delta], by: line1.press.recipe}
`
	_, err := Parse([]byte(bad), noEnv)
	var ps config.Problems
	if !errors.As(err, &ps) || len(ps) != 1 || ps[0].Path != "features[0].by" || ps[0].Line == 0 {
		t.Fatalf("want one problem at features[0].by with a line, got %v", err)
	}
}

func TestDuplicateCollectorNames(t *testing.T) {
	yml := baseConfig + `
collectors:
  - {name: a, type: mqtt, broker: "tcp://127.0.0.1:1", client_id: x, subscriptions: [{topic: t, format: value, signal: s}]}
  - {name: a, type: mqtt, broker: "tcp://127.0.0.1:1", client_id: y, subscriptions: [{topic: t, format: value, signal: s}]}
`
	_, err := Parse([]byte(yml), noEnv)
	if err == nil || !strings.Contains(err.Error(), `collectors[1].name: duplicate collector name "a"`) {
		t.Fatalf("got %v", err)
	}
}

func TestConfigVersionTracksDataShapingChangesNotSecrets(t *testing.T) {
	v := func(yml string, env map[string]string) string {
		c, err := Parse([]byte(yml), func(k string) (string, bool) { s, ok := env[k]; return s, ok })
		if err != nil {
			t.Fatal(err)
		}
		return c.Version()
	}
	base := baseConfig + "uplink: {nats: {user: u, password: \"${PW}\"}}\n"
	a := v(base, map[string]string{"PW": "one"})
	if b := v(base, map[string]string{"PW": "two"}); a != b {
		t.Errorf("a secret change changed the version: %s vs %s", a, b)
	}
	if c := v(base+mqttCollector, map[string]string{"PW": "one"}); c == a {
		t.Errorf("adding a collector kept the version %s", a)
	}
	eff, _ := mustParse(t, base, map[string]string{"PW": "hunter2"}).Effective()
	if strings.Contains(string(eff), "hunter2") {
		t.Errorf("effective config shows the secret")
	}
}

func TestAgentSettingsValidation(t *testing.T) {
	yml := `
agent: {id: "gw.1", site: "", log: {level: loud, format: xml}, shutdown_timeout: 0s, restart: {initial: 1m, max: 1s}, max_chunk: 1B}
http: {listen: "nope"}
buffer: {dir: /tmp/x}
`
	_, err := Parse([]byte(yml), noEnv)
	for _, want := range []string{"agent.id:", "agent.site:", "agent.log.level:", "agent.log.format:", "agent.shutdown_timeout:", "agent.restart:", "agent.max_chunk:", "http.listen:"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
}

func noEnv(string) (string, bool) { return "", false }

func mustParse(t *testing.T, yml string, env map[string]string) *Config {
	t.Helper()
	c, err := Parse([]byte(yml), func(k string) (string, bool) { s, ok := env[k]; return s, ok })
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestFeatureByChecksOPCUANodes(t *testing.T) {
	yml := baseConfig + `
collectors:
  - name: plc
    type: opcua
    endpoint: opc.tcp://127.0.0.1:4840
    security: {policy: None, mode: None}
    nodes:
      - {node: "ns=2;s=Parts", signal: line1.press.parts}
      - {node: "ns=2;s=Sku", signal: line1.press.sku}
features:
  - {signal: line1.press.parts, kind: counter, window: 1m, compute: [delta], by: line1.press.sku}
  - {signal: line1.press.parts, kind: counter, window: 1m, compute: [delta], by: line1.press.recipe}
`
	_, err := Parse([]byte(yml), noEnv)
	if err == nil || !strings.Contains(err.Error(), "features[1].by") || strings.Contains(err.Error(), "features[0].by") {
		t.Fatalf("got %v", err)
	}
}

// TestSectionsLeftOutAreValidated: a config without an agent section is not valid, it lacks a site.
func TestSectionsLeftOutAreValidated(t *testing.T) {
	for _, doc := range []string{"", "http: {enabled: false}\n", "agent:\n"} {
		_, err := Parse([]byte(doc), func(string) (string, bool) { return "", false })
		if err == nil || !strings.Contains(err.Error(), "agent.site: required") {
			t.Errorf("%q: got %v, want agent.site: required", doc, err)
		}
	}
}
