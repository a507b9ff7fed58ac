package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
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

// A collector's name is a directory under agent.data_dir (its certificates, sessions, journals)
// and the source label of its metrics: "../x" would put its state outside the data dir, "a:b"
// split the writer's source label. Such names are config errors.
func TestCollectorNameIsAPlainName(t *testing.T) {
	for _, name := range []string{"../etc", "a/b", ".hidden", "a:b", "a b"} {
		yml := baseConfig + fmt.Sprintf(`
collectors:
  - {name: %q, type: mqtt, broker: "tcp://127.0.0.1:1", subscriptions: [{topic: t, format: value, signal: s}]}
`, name)
		_, err := Parse([]byte(yml), noEnv)
		if err == nil || !strings.Contains(err.Error(), "collectors[0].name: ") || !strings.Contains(err.Error(), "letters, digits") {
			t.Errorf("name %q: got %v, want a problem at collectors[0].name", name, err)
		}
	}
	if _, err := Parse([]byte(baseConfig+`
collectors:
  - {name: press-plc_2.a, type: mqtt, broker: "tcp://127.0.0.1:1", subscriptions: [{topic: t, format: value, signal: s}]}
`), noEnv); err != nil {
		t.Fatalf("a plain name refused: %v", err)
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
agent: {id: "gw.1", site: "", log: {level: loud, format: xml}, shutdown_timeout: 0s, restart: {initial: 1m, max: 1s}, max_chunk: 1B, memory_limit: 1MiB}
http: {listen: "nope"}
buffer: {dir: /tmp/x}
`
	_, err := Parse([]byte(yml), noEnv)
	for _, want := range []string{"agent.id:", "agent.site:", "agent.log.level:", "agent.log.format:", "agent.shutdown_timeout:", "agent.restart:", "agent.max_chunk:", "agent.memory_limit:", "http.listen:"} {
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

// onlyProblemAt fails unless err is Problems holding exactly one problem, at path with a line and
// a message containing msg.
func onlyProblemAt(t *testing.T, err error, path, msg string) config.Problem {
	t.Helper()
	var ps config.Problems
	if !errors.As(err, &ps) || len(ps) != 1 || ps[0].Path != path || ps[0].Line == 0 || !strings.Contains(ps[0].Msg, msg) {
		t.Fatalf("want one problem at %s (with a line) saying %q, got %v", path, msg, err)
	}
	return ps[0]
}

// TestLoadBoundsSizeAndAliases: the agent's loader refuses an oversized file without reading it
// all and an alias bomb before decoding it (issue 12, point 8).
func TestLoadBoundsSizeAndAliases(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big.yaml")
	data := []byte(baseConfig + "# " + strings.Repeat("x", 5<<20) + "\n")
	if err := os.WriteFile(big, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(big, noEnv); !errors.Is(err, config.ErrTooLarge) || !strings.Contains(err.Error(), big) {
		t.Fatalf("5MiB config: %v", err)
	}

	var bomb strings.Builder
	bomb.WriteString(baseConfig + "collectors:\n  - &c0 {name: a, type: mqtt, broker: \"tcp://127.0.0.1:1\", subscriptions: [{topic: t, format: value, signal: s}]}\n")
	prev := "[*c0, *c0, *c0, *c0, *c0, *c0, *c0, *c0]"
	for i := 1; i <= 6; i++ {
		fmt.Fprintf(&bomb, "  - &c%d %s\n", i, prev)
		prev = strings.ReplaceAll(prev, fmt.Sprintf("*c%d", i-1), fmt.Sprintf("*c%d", i))
	}
	_, err := Parse([]byte(bomb.String()), noEnv)
	if p := onlyProblemAt(t, err, "collectors[5][0]", "alias *c4 expands"); p.Line != 11 {
		t.Fatalf("alias bomb reported at line %d, want 11", p.Line)
	}
}

// TestEffectiveRedactsURLCredentials: `validate --print` must not show a password written in a
// server URL, as the logs do not (issue 12, point 9).
func TestEffectiveRedactsURLCredentials(t *testing.T) {
	yml := baseConfig + `uplink: {nats: {servers: ["nats://gw:hunter2@hub:4222", "tls://s3cr3t-token@hub2:4222"]}}
collectors:
  - {name: m, type: mqtt, broker: "tcp://u:mqttpw@127.0.0.1:1883", subscriptions: [{topic: t, format: value, signal: s}]}
`
	c := mustParse(t, yml, nil)
	eff, err := c.Effective()
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"hunter2", "s3cr3t-token", "mqttpw"} {
		if strings.Contains(string(eff), secret) {
			t.Errorf("effective config shows %q:\n%s", secret, eff)
		}
	}
	if !strings.Contains(string(eff), "nats://[redacted]@hub:4222") || !strings.Contains(string(eff), "id: gw-test") {
		t.Errorf("effective config lost its shape:\n%s", eff)
	}
	// The version hashes the redacted rendering: a password in a URL is a secret like any other.
	other := mustParse(t, strings.ReplaceAll(yml, "hunter2", "other"), nil)
	if other.Version() != c.Version() {
		t.Errorf("a URL password changed the config version")
	}
}

// TestEmptyVariableIsAnError: "${STATE}/buffer" with STATE set but empty used to become "/buffer"
// (issue 12, point 10).
func TestEmptyVariableIsAnError(t *testing.T) {
	yml := "agent: {id: gw, site: plant1}\nbuffer:\n  dir: \"${STATE}/buffer\"\n"
	_, err := Parse([]byte(yml), func(k string) (string, bool) { return "", k == "STATE" })
	onlyProblemAt(t, err, "buffer.dir", "set but empty")
	c, err := Parse([]byte(strings.ReplaceAll(yml, "${STATE}", "${STATE:-${HOME_DIR:-/srv}}")), func(k string) (string, bool) { return "", k == "STATE" })
	if err != nil || c.Buffer.Dir != "/srv/buffer" {
		t.Fatalf("nested default: %v", err)
	}
}

const opcuaNodes = `
  - name: %s
    type: opcua
    endpoint: opc.tcp://127.0.0.1:4840
    security: {policy: None, mode: None}
    nodes:
      - {node: "ns=2;s=A", signal: %s}
`

// TestSignalProducedByTwoCollectors: two collectors producing one signal name interleave two
// sources in one series; where both names are static it is an error at the second one
// (issue 12, point 10). Templated MQTT names cannot be compared.
func TestSignalProducedByTwoCollectors(t *testing.T) {
	yml := baseConfig + "collectors:" + fmt.Sprintf(opcuaNodes, "plc1", "line1.press.temp") + fmt.Sprintf(opcuaNodes, "plc2", "line1.press.temp")
	_, err := Parse([]byte(yml), noEnv)
	if p := onlyProblemAt(t, err, "collectors[1].nodes[0].signal", `"plc1"`); p.Line != 18 {
		t.Fatalf("reported at line %d, want 18", p.Line)
	}

	static := baseConfig + "collectors:" + fmt.Sprintf(opcuaNodes, "plc1", "line1.press.temp") + `
  - name: sensors
    type: mqtt
    broker: tcp://127.0.0.1:1883
    subscriptions:
      - {topic: a/b, format: value, signal: line1.press.temp}
`
	_, err = Parse([]byte(static), noEnv)
	onlyProblemAt(t, err, "collectors[1].subscriptions[0].signal", "line1.press.temp")

	// A template may or may not produce the name: not checked. A disabled collector produces nothing.
	for _, ok := range []string{
		baseConfig + mqttCollector + fmt.Sprintf(opcuaNodes, "plc1", "line1.press.parts"),
		strings.Replace(yml, "name: plc2", "name: plc2\n    disabled: true", 1),
	} {
		if _, err := Parse([]byte(ok), noEnv); err != nil {
			t.Errorf("refused:\n%v", err)
		}
	}
}

// TestFeatureOnASignalNoCollectorProduces: a feature rule on a static name nothing produces
// never fires; say so at validate (issue 12, point 10).
func TestFeatureOnASignalNoCollectorProduces(t *testing.T) {
	base := baseConfig + "collectors:" + fmt.Sprintf(opcuaNodes, "plc1", "line1.press.temp")
	for rule, problem := range map[string]string{
		"{signal: line1.press.temp, window: 1m, compute: [mean]}":        "",
		"{signal: line1.press.tmp, window: 1m, compute: [mean]}":         "features[0].signal",
		"{signal: \"line1.*.temp\", window: 1m, compute: [mean]}":        "",
		"{signal: \"line2.*\", window: 1m, compute: [mean]}":             "features[0].signal",
		"{signal: \"line1.press.temp[3]\", window: 1m, compute: [mean]}": "", // an element of an array node
	} {
		_, err := Parse([]byte(base+"features:\n  - "+rule+"\n"), noEnv)
		if problem == "" {
			if err != nil {
				t.Errorf("%s refused: %v", rule, err)
			}
			continue
		}
		if p := onlyProblemAt(t, err, problem, "no collector produces"); p.Line != 13 {
			t.Errorf("%s: line %d, want 13", rule, p.Line)
		}
	}
	// With an MQTT template, exact names are matched against it and globs are not checked.
	withMQTT := baseConfig + mqttCollector + "features:\n"
	for rule, bad := range map[string]bool{
		"{signal: line1.press.parts, window: 1m, compute: [mean]}":              false,
		"{signal: line1.press.parts, window: 1m, compute: [mean], by: other.x}": true,
		"{signal: line1.press.temp, window: 1m, compute: [mean]}":               true, // the template gives *.parts and *.sku
		"{signal: \"zz*\", window: 1m, compute: [mean]}":                        false,
	} {
		_, err := Parse([]byte(withMQTT+"  - "+rule+"\n"), noEnv)
		if (err != nil) != bad {
			t.Errorf("%s: got %v, want error %v", rule, err, bad)
		}
	}
}

// TestMissingTLSFilesFailValidate: a CA, certificate or key file that does not exist used to fail
// only when the collector connected (issue 12, point 10).
func TestMissingTLSFilesFailValidate(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ yml, path string }{
		{"uplink: {nats: {tls: {ca_file: " + dir + "/nats-ca.pem}}}\n", "uplink.nats.tls.ca_file"},
		{`collectors:
  - name: m
    type: mqtt
    broker: ssl://127.0.0.1:8883
    tls: {ca_file: ` + dir + `/mqtt-ca.pem}
    subscriptions: [{topic: t, format: value, signal: s}]
`, "collectors[0].tls.ca_file"},
		{`collectors:
  - name: m
    type: mqtt
    broker: ssl://127.0.0.1:8883
    tls: {cert_file: ` + dir + `/c.pem, key_file: ` + dir + `}
    subscriptions: [{topic: t, format: value, signal: s}]
`, "collectors[0].tls.cert_file"},
		{fmt.Sprintf(opcuaNodes[1:], "plc", "a.b") + "    certificate: {cert_file: " + dir + "/c.der, key_file: " + dir + "/k.pem}\n", "collectors[0].certificate.cert_file"},
		{fmt.Sprintf(opcuaNodes[1:], "plc", "a.b") + "    auth: {cert_file: " + dir + "/u.der, key_file: " + dir + "/u.pem}\n", "collectors[0].auth.cert_file"},
	} {
		yml := baseConfig + c.yml
		if strings.HasPrefix(c.yml, "  - ") {
			yml = baseConfig + "collectors:\n" + c.yml
		}
		_, err := Parse([]byte(yml), noEnv)
		var ps config.Problems
		if !errors.As(err, &ps) || ps[0].Path != c.path || ps[0].Line == 0 || !strings.Contains(ps[0].Msg, "cannot read") {
			t.Errorf("want a problem at %s with a line first, got %v", c.path, err)
		}
	}
}
