package hub

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

// A decision id must be remembered longer than a proposal of it can come: its time bucket plus the
// skew the guard accepts. A shorter guard retention would let the sweep forget an id that is then
// decided a second time, caps counted again.
func TestRetentionOutlivesTheBucket(t *testing.T) {
	doc := `
hub: {id: h1, data_dir: /tmp/gemba-hub-config-test}
decide: {bucket: 48h}
guard: {max_discount: 20, retention: 30h, max_skew: 10m}
`
	_, err := Parse([]byte(doc), func(string) (string, bool) { return "", false })
	if err == nil || !strings.Contains(err.Error(), "guard.retention") || !strings.Contains(err.Error(), "decide.bucket") {
		t.Fatalf("retention shorter than the bucket: %v, want an error at guard.retention naming decide.bucket", err)
	}
	_, err = Parse([]byte(strings.Replace(doc, "retention: 30h", "retention: 49h", 1)), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatalf("retention beyond bucket + skew: %v", err)
	}
}

// TestSectionReplicas: a section's replicas, unset (0), is nats.replicas; set, it is honoured — for
// inventory, guard and commerce as for audit, rules, act and monitor. inventory.replicas was
// replaced by nats.replicas when the hub opened the bucket, guard.replicas: 1 too, and commerce
// never inherited (an R1 COMMERCE stream on a 3-node cluster): the effective config said otherwise.
func TestSectionReplicas(t *testing.T) {
	none := func(string) (string, bool) { return "", false }
	doc := `
hub: {id: h1, data_dir: /tmp/gemba-hub-config-test}
nats: {servers: ["nats://127.0.0.1:4222"], replicas: 3}
guard: {max_discount: 20}
`
	cfg, err := Parse([]byte(doc), none)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{"inventory": cfg.Inventory.Replicas, "guard": cfg.Guard.Replicas, "commerce": cfg.Commerce.Replicas,
		"audit": cfg.Audit.Replicas, "rules": cfg.Rules.Replicas, "act": cfg.Act.Replicas}
	for section, r := range got {
		if r != 3 {
			t.Errorf("%s.replicas unset: %d, want nats.replicas (3)", section, r)
		}
	}
	cfg, err = Parse([]byte(doc+"inventory: {replicas: 1}\ncommerce: {replicas: 1}\naudit: {replicas: 1}\n"+
		"rules: {replicas: 1}\nact: {replicas: 1, channels: {web: {}}}\n"), none)
	if err != nil {
		t.Fatal(err)
	}
	cfg2, err := Parse([]byte(strings.Replace(doc, "max_discount: 20", "max_discount: 20, replicas: 1", 1)), none)
	if err != nil {
		t.Fatal(err)
	}
	got = map[string]int{"inventory": cfg.Inventory.Replicas, "guard": cfg2.Guard.Replicas, "commerce": cfg.Commerce.Replicas,
		"audit": cfg.Audit.Replicas, "rules": cfg.Rules.Replicas, "act": cfg.Act.Replicas}
	for section, r := range got {
		if r != 1 {
			t.Errorf("%s.replicas: 1: %d, want 1", section, r)
		}
	}
}

// TestSectionReplicasOnACluster: on a 3-node cluster with nats.replicas 3, a bucket whose section
// says replicas: 1 is created with one replica, and one whose section says nothing with three.
func TestSectionReplicasOnACluster(t *testing.T) {
	nodes := natstest.Cluster(t, 3)
	cfg := testConfig(t, `
hub: {id: c1, data_dir: "${DIR}", log: {level: error}}
http: {listen: "127.0.0.1:${HTTP_PORT}"}
nats: {servers: ["`+natstest.URLs(nodes...)+`"], replicas: 3}
commerce: {channels: [web], replicas: 1}
inventory: {replicas: 1}
guard: {max_discount: 20, replicas: 1}
monitor: {enabled: false}
`)
	start(t, cfg)
	_, js := natstest.Connect(t, natstest.URLs(nodes...))
	want := map[string]int{"KV_GEMBA_INVENTORY": 1, "KV_GEMBA_GUARD": 1, "COMMERCE": 1, "GEMBA_DECISIONS": 3, "KV_GEMBA_FLEET": 3}
	for name, r := range want {
		var got int
		testutil.WaitFor(t, 60*time.Second, name+" created", func() bool {
			s, err := js.Stream(context.Background(), name)
			if err != nil {
				return false
			}
			got = s.CachedInfo().Config.Replicas
			return true
		})
		if got != r {
			t.Errorf("%s: %d replicas, want %d", name, got, r)
		}
	}
}

// TestEmptyTokenFile: a token read from a file that turns out empty (a secret not provisioned yet,
// a mount that failed) must not leave the API open to everyone on the listener, as no read_token
// does: the config is refused, naming the key, as ${VAR} set but empty is.
func TestEmptyTokenFile(t *testing.T) {
	none := func(string) (string, bool) { return "", false }
	empty := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"read_token", "write_token"} {
		doc := "hub: {id: h1, data_dir: /tmp/gemba-hub-config-test}\nhttp: {" + key + ": {file: " + empty + "}}\n"
		cfg, err := Parse([]byte(doc), none)
		if err == nil {
			t.Errorf("%s from an empty file: accepted as no token (read token %q): the read API open to all", key, cfg.HTTP.ReadToken.Value())
			continue
		}
		if !strings.Contains(err.Error(), "http."+key) || !strings.Contains(err.Error(), "empty") {
			t.Errorf("%s from an empty file: %v, want an error at http.%s saying it is empty", key, err, key)
		}
	}
}

// TestFleetForgetAfter: fleet.forget_after defaults to 7 days, and one that would forget an agent
// before (or as soon as) it reads stale, or within the hour, is refused at its key.
func TestFleetForgetAfter(t *testing.T) {
	none := func(string) (string, bool) { return "", false }
	base := "hub: {id: h1, data_dir: /tmp/gemba-hub-config-test}\n"
	cfg, err := Parse([]byte(base), none)
	if err != nil || cfg.Fleet.ForgetAfter != 7*24*time.Hour {
		t.Fatalf("default forget_after: %v %v, want 168h", cfg.Fleet.ForgetAfter, err)
	}
	for _, f := range []string{"{forget_after: 10m}", "{stale_after: 2h, forget_after: 2h}", "{forget_after: -1h}"} {
		if _, err := Parse([]byte(base+"fleet: "+f+"\n"), none); err == nil || !strings.Contains(err.Error(), "fleet.forget_after") {
			t.Errorf("fleet: %s: %v, want an error at fleet.forget_after", f, err)
		}
	}
	if cfg, err := Parse([]byte(base+"fleet: {forget_after: 48h}\n"), none); err != nil || cfg.Fleet.ForgetAfter != 48*time.Hour {
		t.Errorf("forget_after 48h: %v %v", cfg.Fleet.ForgetAfter, err)
	}
}
