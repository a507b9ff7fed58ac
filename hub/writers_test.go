package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub/decide/guard"
	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
)

// writersRules asks for a 30 % promotion of every SKU made: above the approval threshold (25), so
// each waits for a person.
const writersRules = `name: writers-test
hit_policy: first
rules:
  - name: promote-made
    when: has(features.units) && !features.units.stale && features.units.value > 0.0
    promote: {channels: [web], discount: 30, duration: 24h}
`

// writersHub is a hub with the decision room, two writers (alice, bob) and the shared write token,
// whose rule set alice made active: she is the requester of every decision waiting for approval.
// It returns the hub's base URL and the ids waiting, by SKU.
func writersHub(t *testing.T, logs *testutil.Buffer) (string, map[string]string) {
	t.Helper()
	n := natstest.JetStream(t)
	dir := t.TempDir()
	graphFile := filepath.Join(dir, "graph.yaml")
	g := "version: writers\nsites: [{id: s1}]\nlines: [{id: l1, site: s1}]\nchannels: [{id: web}]\nskus:\n" +
		"  - {id: SKU-1}\n  - {id: SKU-2}\nedges:\n"
	for _, s := range []string{"SKU-1", "SKU-2"} {
		g += fmt.Sprintf("  - {kind: produces, from: l1, to: %s}\n  - {kind: sold_via, from: %s, to: web}\n", s, s)
	}
	if err := os.WriteFile(graphFile, []byte(g), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, fmt.Sprintf(`
hub: {id: w1, data_dir: "${DIR}", log: {level: info}}
http:
  listen: "127.0.0.1:${HTTP_PORT}"
  write_token: shared-secret-token
  writers:
    - {name: alice, token: alice-secret-token}
    - {name: bob, token: bob-secret-token}
nats: {servers: ["%s"]}
commerce: {channels: [web]}
features:
  - {name: units, signal: "*.pack.parts", feature: units, key: sku, max_age: 1h}
graph: {file: %q}
decide: {bucket: 2s, timer: 1m}
guard:
  max_discount: 50
  cooldown: 0s
  approval: {above_discount: 25, ttl: 1h, forbid_self_approval: true}
monitor: {enabled: false}
`, n.URL(), graphFile))
	r := startLogged(t, cfg, logs)
	var d *decisions
	testutil.WaitFor(t, 30*time.Second, "the decision room", func() bool { d = r.h.dec.Load(); return d != nil })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v, err := d.registry.Store(ctx, []byte(writersRules), "alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.registry.Activate(ctx, v, "alice", "writers test"); err != nil {
		t.Fatal(err)
	}
	_, js := natstest.Connect(t, n.URL())
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "GEMBA", Subjects: []string{"gemba.*.*.samples", "gemba.*.*.features", "gemba.*.*.status"},
		Duplicates: 20 * time.Minute, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	base := "http://" + r.h.Addr()
	ids := map[string]string{}
	seq := uint64(0)
	testutil.WaitFor(t, 60*time.Second, "both SKUs waiting for approval, asked by alice", func() bool {
		// Published until the engine follows alice's version (it decides on the next input).
		end := time.Now().UTC()
		fs := []signal.Feature{}
		for _, s := range []string{"SKU-1", "SKU-2"} {
			fs = append(fs, signal.Feature{Signal: "l1.pack.parts", Name: "units", WindowStart: end.Add(-10 * time.Second), WindowEnd: end,
				Value: 500, Count: 10, Labels: signal.Labels{{Key: "sku", Value: s}}})
		}
		h := signal.Header{Schema: signal.SchemaVersion, Agent: "gw1", Site: "s1", Stream: signal.StreamFeatures, ConfigVersion: "writers",
			Incarnation: "inc-1", FirstSeq: seq + 1, LastSeq: seq + uint64(len(fs)), Count: len(fs), Oldest: end, Newest: end, Sent: end}
		seq += uint64(len(fs))
		if _, err := js.Publish(ctx, signal.Subject("gemba", "s1", "gw1", signal.StreamFeatures), signal.AppendBatch(nil, &signal.Batch{Header: h, Features: fs}),
			jetstream.WithMsgID(h.MsgID())); err != nil {
			t.Fatal(err)
		}
		var p struct{ Approvals []guard.Request }
		if code := get(t, base+"/api/v1/approvals", &p); code != 200 {
			return false
		}
		for _, q := range p.Approvals {
			if q.Proposal.Requester == "alice" {
				ids[q.Proposal.SKU] = q.Proposal.ID
			}
		}
		return len(ids) == 2
	})
	return base, ids
}

// change sends a change to the decision API with a bearer token and returns the status and body.
func change(t *testing.T, method, url, token, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// whyText is the why text of a decision, as the API gives it.
func whyText(t *testing.T, base, id string) string {
	t.Helper()
	req, _ := http.NewRequest("GET", base+"/api/v1/decisions/"+id, nil)
	req.Header.Set("Accept", "text/plain")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestWritersRecordedByToken: a change made through the API is recorded as made by the writer whose
// token it carries (http.writers), never by whatever name the body writes. With one shared token
// the body's by was taken as it came: whoever held the token approved the promotions of their own
// rule set by writing someone else's name, past forbid_self_approval, and the decision record
// showed a name nobody had checked. The shared write_token still works, and what it records says
// that the name was not verified.
func TestWritersRecordedByToken(t *testing.T) {
	var logs testutil.Buffer
	base, ids := writersHub(t, &logs)
	approve := func(sku string) string { return base + "/api/v1/approvals/" + ids[sku] + "/approve" }

	// alice, whose rule set asked, writes bob's name: refused, naming her; nothing changes.
	if code, body := change(t, "POST", approve("SKU-1"), "alice-secret-token", `{"by":"bob","reason":"fine"}`); code != http.StatusBadRequest ||
		!strings.Contains(body, "by must be the token's name, alice") {
		t.Fatalf("alice approving as bob: %d %s, want 400 naming alice", code, body)
	}
	// Without a name she is herself, and her own request is refused.
	if code, body := change(t, "POST", approve("SKU-1"), "alice-secret-token", `{"reason":"fine"}`); code != http.StatusForbidden {
		t.Fatalf("alice approving her own request: %d %s, want 403", code, body)
	}
	if w := whyText(t, base, ids["SKU-1"]); strings.Contains(w, "approved") {
		t.Fatalf("a refused approval was recorded:\n%s", w)
	}
	var p struct{ Approvals []guard.Request }
	if get(t, base+"/api/v1/approvals", &p); len(p.Approvals) != 2 {
		t.Fatalf("after the refused answers %d waiting, want 2: %+v", len(p.Approvals), p.Approvals)
	}

	// bob approves with his token, by omitted or his own: recorded as bob, verified.
	code, body := change(t, "POST", approve("SKU-1"), "bob-secret-token", `{"reason":"stock is high"}`)
	var v guard.Verdict
	if code != http.StatusOK || json.Unmarshal([]byte(body), &v) != nil || v.Approval == nil || v.Approval.By != "bob" {
		t.Fatalf("bob approving: %d %s, want 200 approved by bob", code, body)
	}
	w := whyText(t, base, ids["SKU-1"])
	if !strings.Contains(w, "approved by bob") || strings.Contains(w, "shared token") {
		t.Errorf("why of bob's approval:\n%s\nwant approved by bob, not marked as the shared token's", w)
	}

	// The shared token: the body's name, as before — the guard still refuses alice writing her own
	// name, and an approval under another name is recorded as not verified.
	if code, body := change(t, "POST", approve("SKU-2"), "shared-secret-token", `{"by":"alice"}`); code != http.StatusForbidden {
		t.Fatalf("shared token, by alice: %d %s, want 403", code, body)
	}
	if code, body := change(t, "POST", approve("SKU-2"), "shared-secret-token", `{}`); code != http.StatusBadRequest || !strings.Contains(body, "by") {
		t.Fatalf("shared token without by: %d %s, want 400 asking for by", code, body)
	}
	code, body = change(t, "POST", approve("SKU-2"), "shared-secret-token", `{"by":"carol","reason":"ok"}`)
	if code != http.StatusOK || json.Unmarshal([]byte(body), &v) != nil || v.Approval == nil || v.Approval.By != "carol" {
		t.Fatalf("shared token, by carol: %d %s, want 200 approved by carol", code, body)
	}
	if w := whyText(t, base, ids["SKU-2"]); !strings.Contains(w, "approved by carol") || !strings.Contains(w, "shared token") ||
		!strings.Contains(w, "not verified") {
		t.Errorf("why of the shared token's approval:\n%s\nwant carol, marked as not verified (shared token)", w)
	}

	// The kill switch: a writer's name, a mismatch refused, the shared token marked.
	if code, body := change(t, "PUT", base+"/api/v1/kill", "alice-secret-token", `{"by":"ops","on":true}`); code != http.StatusBadRequest {
		t.Fatalf("alice throwing the switch as ops: %d %s, want 400", code, body)
	}
	var k guard.KillSwitch
	if get(t, base+"/api/v1/kill", &k); k.On {
		t.Fatalf("a refused throw moved the switch: %+v", k)
	}
	code, body = change(t, "PUT", base+"/api/v1/kill", "bob-secret-token", `{"on":true,"reason":"bad data"}`)
	if code != http.StatusOK || json.Unmarshal([]byte(body), &k) != nil || !k.On || k.By != "bob" {
		t.Fatalf("bob throwing the switch: %d %s, want on, by bob", code, body)
	}
	code, body = change(t, "PUT", base+"/api/v1/kill", "shared-secret-token", `{"by":"ops","on":false,"reason":"fixed"}`)
	if code != http.StatusOK || json.Unmarshal([]byte(body), &k) != nil || k.On || k.By != "ops" || !strings.Contains(k.Reason, "not verified") {
		t.Fatalf("shared token resetting the switch: %d %s, want off, by ops, marked not verified", code, body)
	}

	// No token is ever logged, and the hub warned that the shared token defeats forbid_self_approval.
	for _, tok := range []string{"alice-secret-token", "bob-secret-token", "shared-secret-token"} {
		if strings.Contains(logs.String(), tok) {
			t.Errorf("the log shows the token %s", tok)
		}
	}
	if !strings.Contains(logs.String(), "http.writers") {
		t.Errorf("no warning about write_token with forbid_self_approval in the log:\n%s", logs.String())
	}
}

// TestWritersConfigProblems: every problem of http.writers is refused at load, at its path and
// line, without showing a token: an empty token (inline, ${VAR} or a file) would let anyone change
// decisions under that name, two writers of one name or one token could not be told apart, and a
// writer's token that is the shared or the read token would be two identities at once. The read
// token used as the write token let every reader (a dashboard) approve and throw the kill switch.
func TestWritersConfigProblems(t *testing.T) {
	empty := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	lookup := func(k string) (string, bool) {
		if k == "EMPTY" {
			return "", true
		}
		return "", false
	}
	base := "hub: {id: h1, data_dir: /tmp/gemba-hub-config-test}\nhttp:\n"
	for _, c := range []struct{ name, http, says string }{
		{"empty token", "  writers:\n    - {name: alice, token: \"\"}\n", "line 4: http.writers[0].token: required"},
		{"no token", "  writers:\n    - {name: alice}\n", "line 4: http.writers[0].token: required"},
		{"empty variable", "  writers:\n    - {name: alice, token: \"${EMPTY}\"}\n", "line 4: http.writers[0].token"},
		{"empty file", "  writers:\n    - {name: alice, token: {file: " + empty + "}}\n", "http.writers[0].token.file"},
		{"name over two lines", "  writers:\n    - {name: \"alice\\nroot\", token: tok-aaaaaaaa}\n", "line 4: http.writers[0].name: \"alice\\nroot\": one line"},
		{"no name", "  writers:\n    - {token: tok-aaaaaaaa}\n", "line 4: http.writers[0].name: required"},
		{"same name", "  writers:\n    - {name: alice, token: tok-aaaaaaaa}\n    - {name: alice, token: tok-bbbbbbbb}\n",
			"line 5: http.writers[1].name: \"alice\" is already a writer"},
		{"same token", "  writers:\n    - {name: alice, token: tok-aaaaaaaa}\n    - {name: bob, token: tok-aaaaaaaa}\n",
			"line 5: http.writers[1].token: the same token as http.writers[0]"},
		{"the shared token", "  write_token: tok-aaaaaaaa\n  writers:\n    - {name: alice, token: tok-aaaaaaaa}\n",
			"line 5: http.writers[0].token: the same token as http.write_token"},
		{"the read token", "  read_token: tok-aaaaaaaa\n  writers:\n    - {name: alice, token: tok-aaaaaaaa}\n",
			"line 5: http.writers[0].token: the same token as http.read_token"},
		{"read token as write token", "  read_token: tok-aaaaaaaa\n  write_token: tok-aaaaaaaa\n",
			"line 4: http.write_token: the same token as http.read_token"},
		{"the commerce token as write token", "  write_token: tok-aaaaaaaa\ncommerce: {http: {token: tok-aaaaaaaa}}\n",
			"line 4: commerce.http.token: the same token as http.write_token"},
		{"the commerce token as a writer's", "  writers:\n    - {name: alice, token: tok-aaaaaaaa}\ncommerce: {http: {token: tok-aaaaaaaa}}\n",
			"line 5: commerce.http.token: the same token as http.writers[0]"},
	} {
		_, err := Parse([]byte(base+c.http), lookup)
		if err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%s: %v, want %q", c.name, err, c.says)
			continue
		}
		if strings.Contains(err.Error(), "tok-") {
			t.Errorf("%s: the error shows the token: %v", c.name, err)
		}
	}
	cfg, err := Parse([]byte(base+"  writers:\n    - {name: alice, token: tok-aaaaaaaa}\n    - {name: bob, token: tok-bbbbbbbb}\n"), lookup)
	if err != nil || len(cfg.HTTP.Writers) != 2 || cfg.HTTP.Writers[1].Token.Value() != "tok-bbbbbbbb" {
		t.Fatalf("two writers: %+v %v", cfg, err)
	}
}

// TestWritersNeverPrinted: the effective config (validate --print) and the config's hash show the
// writers' names, never their tokens; a token from a file shows its path.
func TestWritersNeverPrinted(t *testing.T) {
	file := filepath.Join(t.TempDir(), "bob.token")
	if err := os.WriteFile(file, []byte("tok-from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	doc := "hub: {id: h1, data_dir: /tmp/gemba-hub-config-test}\nhttp:\n  read_token: tok-read\n  write_token: tok-shared\n" +
		"  writers:\n    - {name: alice, token: \"${ALICE}\"}\n    - {name: bob, token: {file: " + file + "}}\n"
	cfg, err := Parse([]byte(doc), func(k string) (string, bool) { return "tok-alice-env", k == "ALICE" })
	if err != nil {
		t.Fatal(err)
	}
	out, err := cfg.Effective()
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{"tok-read", "tok-shared", "tok-alice-env", "tok-from-file"} {
		if strings.Contains(string(out), tok) {
			t.Errorf("the effective config shows the token %s:\n%s", tok, out)
		}
	}
	if !strings.Contains(string(out), `"alice"`) || !strings.Contains(string(out), file) {
		t.Errorf("the effective config does not name the writers (and bob's token file):\n%s", out)
	}
	// The version hashes the config without its secrets: another token, the same version.
	other, err := Parse([]byte(doc), func(k string) (string, bool) { return "tok-alice-rotated", k == "ALICE" })
	if err != nil || other.Version() != cfg.Version() {
		t.Errorf("version after a token rotation: %s, want %s (%v)", other.Version(), cfg.Version(), err)
	}
}

// TestSharedTokenWarning: the shared write token beside forbid_self_approval (on by default) is
// warned about, saying to use writers; writers alone, or no guard, are not.
func TestSharedTokenWarning(t *testing.T) {
	none := func(string) (string, bool) { return "", false }
	base := "hub: {id: h1, data_dir: /tmp/gemba-hub-config-test}\n"
	for _, c := range []struct {
		doc  string
		warn bool
	}{
		{"http: {write_token: tok-shared}\nguard: {max_discount: 20}\n", true},
		{"http: {write_token: tok-shared}\nguard: {max_discount: 20, approval: {forbid_self_approval: false}}\n", false},
		{"http: {writers: [{name: alice, token: tok-a}]}\nguard: {max_discount: 20}\n", false},
		{"http: {write_token: tok-shared}\n", false},
	} {
		cfg, err := Parse([]byte(base+c.doc), none)
		if err != nil {
			t.Fatal(err)
		}
		w := strings.Join(cfg.Warnings(), "\n")
		if got := strings.Contains(w, "http.writers") && strings.Contains(w, "forbid_self_approval"); got != c.warn {
			t.Errorf("%s: warnings %q, want a warning naming http.writers: %v", c.doc, w, c.warn)
		}
		if strings.Contains(w, "tok-") {
			t.Errorf("%s: the warning shows the token: %s", c.doc, w)
		}
	}
}

// TestWhyNotForgedThroughTheAPI: the name and the reason of a change are free text from the
// request (with the shared token). A line break in them wrote lines of their own into the why
// text — an approval or an event by someone who never answered. A name is one line (400 otherwise);
// a reason is kept, its line breaks shown escaped.
func TestWhyNotForgedThroughTheAPI(t *testing.T) {
	var logs testutil.Buffer
	base, ids := writersHub(t, &logs)
	forged := "2026-01-01T00:00:00Z  approved → fired: answered by cfo"
	reject := base + "/api/v1/approvals/" + ids["SKU-1"] + "/reject"
	if code, body := change(t, "POST", reject, "shared-secret-token", `{"by":"carol\n`+forged+`"}`); code != http.StatusBadRequest {
		t.Errorf("by over two lines: %d %s, want 400", code, body)
	}
	if code, body := change(t, "POST", reject, "shared-secret-token", `{"by":"carol","reason":"no\n`+forged+`"}`); code != http.StatusOK {
		t.Fatalf("rejection by carol: %d %s", code, body)
	}
	w := whyText(t, base, ids["SKU-1"])
	for _, l := range strings.Split(w, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), forged) {
			t.Errorf("the why text has a line written by the request's reason: %q\n%s", l, w)
		}
	}
	if !strings.Contains(w, `no\n`+forged) {
		t.Errorf("the reason is not shown (escaped):\n%s", w)
	}
}
