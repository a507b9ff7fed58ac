package mqtt

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gemba-io/gemba/config"
)

func decodeConfig(t *testing.T, yaml string) (*Config, error) {
	t.Helper()
	cfg := NewConfig()
	d := config.NewDecoder(config.WithEnv(func(k string) (string, bool) {
		if k == "MQTT_PASSWORD" {
			return "s3cret", true
		}
		return "", false
	}))
	return cfg, d.Unmarshal([]byte(yaml), cfg)
}

func TestExampleConfigLoads(t *testing.T) {
	data, err := os.ReadFile("testdata/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := decodeConfig(t, string(data))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Password.Value() != "s3cret" || !cfg.Persistent() || len(cfg.Subscriptions) != 4 || cfg.StallTimeout != 5*time.Minute {
		t.Fatalf("unexpected config: %+v", cfg)
	}
	for i := range cfg.Subscriptions {
		if _, err := compileSubscription(&cfg.Subscriptions[i]); err != nil {
			t.Errorf("subscriptions[%d]: %v", i, err)
		}
	}
}

func TestConfigErrorsNamePaths(t *testing.T) {
	cases := []struct{ yaml, want string }{
		{"subscriptions: [{topic: a, format: json}]", "broker: required"},
		{"broker: http://x\nsubscriptions: [{topic: a, format: json}]", `broker: unsupported scheme "http"`},
		{"broker: tcp://x:1\nsubscriptions: [{topic: a, format: xml}]", `subscriptions[0].format: unknown format "xml"`},
		{"broker: tcp://x:1\nsubscriptions: [{topic: 'a/#/b', format: json}]", "subscriptions[0].topic: '#' must be"},
		{"broker: tcp://x:1\nsubscriptions: [{topic: a, format: json, qos: 3}]", "subscriptions[0].qos: must be 0, 1 or 2"},
		{"broker: tcp://x:1\nsubscriptions: [{topic: a, format: json, signal: '{nope}'}]", "subscriptions[0].signal: unknown placeholder {nope}"},
		{"broker: tcp://x:1\nsubscriptions: [{topic: a, format: value, signal: '{field}'}]", "not available for format value"},
		{"broker: tcp://x:1\nsubscriptions: [{topic: a, format: json, fields: [{path: 'a[x]'}]}]", "subscriptions[0].fields[0].path: bad array index"},
		{"broker: tcp://x:1\nsubscriptions: [{topic: a, format: json, signal: s, fields: [{path: a}, {path: b}]}]", "names every field the same"},
		{"broker: tcp://x:1\nsubscriptions: [{topic: a, format: json, time_field: ts, time_format: yesterday}]", "subscriptions[0].time_format"},
		{"broker: tcp://x:1\nsubscriptions: [{topic: a, format: json}, {topic: a, format: value}]", "subscriptions[1].topic: topic \"a\" is already subscribed"},
		{"broker: tcp://x:1\nsubscriptions: [{topic: a/#, format: json}, {topic: $share/g/a/+/t, format: value}]", "subscriptions[1].topic: shared subscription \"$share/g/a/+/t\" overlaps \"a/#\" (subscriptions[0])"},
		{"broker: tcp://x:1\nsubscriptions: [{topic: $share/g/+/b, format: json}, {topic: $share/h/a/+, format: value}]", "subscriptions[1].topic: shared subscription \"$share/h/a/+\" overlaps \"$share/g/+/b\" (subscriptions[0])"},
		{"broker: tcp://x:1\nsubscriptions: [{topic: a, format: json, qso: 1}]", `subscriptions[0].qso: unknown field "qso"`},
		{"broker: tcp://x:1\nmax_payload: lots\nsubscriptions: [{topic: a, format: json}]", "max_payload: invalid size"},
		{"broker: tcp://x:1\npassword: p\nsubscriptions: [{topic: a, format: json}]", "username: required when a password is set"},
		{"broker: tcp://x:1\nreconnect: {initial: 5s, max: 1s}\nsubscriptions: [{topic: a, format: json}]", "reconnect.max: must be at least"},
		// Labels are rendered once per message: {field} and {metric} would be empty (or the same for all).
		{"broker: tcp://x:1\nsubscriptions: [{topic: a, format: json, labels: {f: 'x.{field}'}}]", "subscriptions[0].labels.f: placeholder {field} is not available in labels"},
		{"broker: tcp://x:1\nsubscriptions: [{topic: a, format: sparkplugb, labels: {m: '{metric}'}}]", "subscriptions[0].labels.m: placeholder {metric} is not available in labels"},
	}
	for _, tc := range cases {
		_, err := decodeConfig(t, tc.yaml)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s\n got: %v\nwant: %s", tc.yaml, err, tc.want)
		}
	}
}

func TestSignalPatterns(t *testing.T) {
	data, err := os.ReadFile("testdata/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := decodeConfig(t, string(data))
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(cfg.SignalPatterns())
	if want := "[line1.*.temp line1.*.x_load line1.*.running line1.*.alarm cell4.* *]"; got != want {
		t.Errorf("SignalPatterns = %s, want %s", got, want)
	}
}
