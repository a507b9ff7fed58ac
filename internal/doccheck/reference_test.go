package doccheck

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

type testConfig struct {
	Net struct {
		Servers []string `yaml:"servers"`
		TLS     struct {
			CAFile   string `yaml:"ca_file"`
			CertFile string `yaml:"cert_file"`
		} `yaml:"tls"`
		Wait time.Duration `yaml:"wait"`
	} `yaml:"net"`
	Channels map[string]struct {
		Max int `yaml:"max"`
	} `yaml:"channels"`
	Rules []struct {
		Name   string            `yaml:"name"`
		Labels map[string]string `yaml:"labels"`
	} `yaml:"rules"`
	Store struct {
		Bucket string `yaml:"bucket"`
	} `yaml:"store"`
}

const testDoc = "# ref\n\n## `net`\n\n| key | default | meaning |\n|---|---|---|\n" +
	"| `servers` | `[a, b]` | x |\n| `tls.ca_file`, `cert_file` | — | sibling |\n| `wait`, `nope` | `2s`, `1` | x |\n\n" +
	"## `channels`\n\n| key | meaning |\n|---|---|\n| `channels.<name>` | x |\n\n" +
	"## `rules`\n\n```yaml\nrules:\n  - name: a   # or bogus: 1\n    labels: {any: thing}\n    extra: 1\n```\n\n" +
	"## `store`\n\nKeys: `bucket`\n(`B1`; the bucket).\n"

func TestReadReference(t *testing.T) {
	keys := KeysOf(reflect.TypeFor[testConfig](), nil)
	ref := ReadReference(testDoc, keys)
	for _, p := range []string{"net.servers", "net.tls.ca_file", "net.tls.cert_file", "net.wait", "channels.*", "rules.name", "rules.labels", "store.bucket"} {
		if !ref.Documented[p] {
			t.Errorf("%s not read as documented; documented: %v", p, ref.Documented)
		}
	}
	if !ref.Covers("channels.*.max") {
		t.Error("channels.<name> should cover the keys of a channel")
	}
	unknown := strings.Join(ref.Unknown, "\n")
	for _, want := range []string{"`nope`", "`rules.extra`"} {
		if !strings.Contains(unknown, want) {
			t.Errorf("unknown keys %q lack %s", unknown, want)
		}
	}
	if strings.Contains(unknown, "bogus") {
		t.Errorf("a comment's words are prose, not keys: %q", unknown)
	}
	var defaults []string
	for _, d := range ref.Defaults {
		defaults = append(defaults, d.Path+"="+d.Text)
	}
	for _, want := range []string{"net.servers=[a, b]", "net.wait=2s", "store.bucket=B1"} {
		if !slices.Contains(defaults, want) {
			t.Errorf("defaults %v lack %s", defaults, want)
		}
	}
}

func TestSameValue(t *testing.T) {
	var c testConfig
	c.Net.Servers = []string{"a", "b"}
	c.Net.Wait = 2 * time.Second
	for _, tc := range []struct {
		path, text       string
		same, comparable bool
	}{
		{"net.wait", "2s", true, true},
		{"net.wait", "2000ms", true, true},
		{"net.wait", "3s", false, true},
		{"net.servers", "[a, b]", true, true},
		{"net.servers", "[]", false, true},
		{"store.bucket", "host name", false, false},
		{"store.bucket", "nats.replicas", false, false},
		{"store.bucket", "B1", false, true},
	} {
		v, ok := ValueAt(reflect.ValueOf(c), tc.path)
		if !ok {
			t.Fatalf("no value at %s", tc.path)
		}
		if same, comparable, _ := SameValue(v, tc.text); same != tc.same || comparable != tc.comparable {
			t.Errorf("SameValue(%s, %q) = %v, %v; want %v, %v", tc.path, tc.text, same, comparable, tc.same, tc.comparable)
		}
	}
}
