package console_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/crypto/bcrypt"

	"github.com/gemba-io/gemba/hub"
	"github.com/gemba-io/gemba/hub/state/kvkey"
	"github.com/gemba-io/gemba/internal/testutil"
	gsig "github.com/gemba-io/gemba/signal"
)

// The rule set the hub starts with: a big count of units made asks for a 30% promotion (above the
// approval threshold: it waits for a person), any other count for 10% (acts at once), under a 10%
// holdout whose draw puts SKU-1..3 on web in the treated group (buckets 0.16, 0.20, 0.95), so that
// the why page has an experiment to show.
const rulesV1 = `name: console-test
hit_policy: first
rules:
  - name: promote-big
    when: has(features.units) && !features.units.stale && features.units.value > 100.0
    promote: {channels: [web], discount: 30, duration: 24h}
  - name: promote-made
    when: has(features.units) && !features.units.stale && features.units.value > 0.0
    promote: {channels: [web], discount: 10, duration: 24h}
    experiment: {id: console-holdout, holdout: 0.1}
`

const hookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// testHub is a real hub (embedded NATS, the decision room, a webhook receiver) with console users.
type testHub struct {
	h      *hub.Hub
	cfg    *hub.Config
	base   string // http://addr/console
	nc     *nats.Conn
	js     jetstream.JetStream
	seq    uint64
	hooks  *hookCount
	cancel context.CancelFunc
	done   chan error
}

type hookCount struct {
	mu sync.Mutex
	n  int
}

func (h *hookCount) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	h.mu.Lock()
	h.n++
	h.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// Passwords of the test users; their bcrypt hashes go into the config.
var passwords = map[string]string{"vera": "viewer-pw-1", "alice": "approver-pw-1", "root": "admin-pw-1"}

// hubOptions size the hub of a test: skus in the graph (3 by default) and whether the rules file
// is activated at the first start.
type hubOptions struct {
	skus    int
	noRules bool
}

func startHub(t testing.TB, o hubOptions) *testHub {
	t.Helper()
	dir := t.TempDir()
	write := func(name, s string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if o.skus == 0 {
		o.skus = 3
	}
	var g strings.Builder
	g.WriteString("version: console\nsites: [{id: s1}]\nlines: [{id: l1, site: s1}]\nchannels: [{id: web}]\nskus:\n")
	for i := 1; i <= o.skus; i++ {
		fmt.Fprintf(&g, "  - {id: SKU-%d}\n", i)
	}
	g.WriteString("edges:\n")
	for i := 1; i <= o.skus; i++ {
		fmt.Fprintf(&g, "  - {kind: produces, from: l1, to: SKU-%d}\n  - {kind: sold_via, from: SKU-%d, to: web}\n", i, i)
	}
	write("graph.yaml", g.String())
	write("rules.yaml", rulesV1)
	hc := &hookCount{}
	hs := &http.Server{Handler: hc, ReadHeaderTimeout: 5 * time.Second}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = hs.Serve(hl) }()
	t.Cleanup(func() { _ = hs.Close() })
	rulesRef := fmt.Sprintf("rules: %q,", filepath.Join(dir, "rules.yaml"))
	if o.noRules {
		rulesRef = ""
	}
	hashes := map[string]string{}
	for u, pw := range passwords {
		h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		hashes["HASH_"+strings.ToUpper(u)] = string(h)
	}
	doc := fmt.Sprintf(`hub: {id: t1, data_dir: %q, shutdown_timeout: 10s, log: {level: warn, format: text}}
http: {listen: "127.0.0.1:0"}
nats: {embedded: {listen: "127.0.0.1:%d"}}
commerce: {channels: [web], http: {token: sales-token}}
features:
  - {name: units, signal: "*.pack.parts", feature: units, key: sku, max_age: 1h}
graph: {file: %q}
fleet: {stale_after: 30s}
decide: {%s bucket: 2s, timer: 1m}
guard:
  max_discount: 50
  cooldown: 0s
  claim_lease: 2s
  approval: {above_discount: 25, ttl: 1h, forbid_self_approval: true}
act:
  lease: 2s
  poll: 100ms
  channels:
    web: {webhook: {url: "http://%s/hook", secret: %q, timeout: 1s}}
console:
  enabled: true
  live_poll: 200ms
  users:
    - {name: vera, role: viewer, password_hash: "${HASH_VERA}"}
    - {name: alice, role: approver, password_hash: "${HASH_ALICE}"}
    - {name: root, role: admin, password_hash: "${HASH_ROOT}"}
`, dir, testutil.FreePort(t), filepath.Join(dir, "graph.yaml"), rulesRef, hl.Addr(), hookSecret)
	cfg, err := hub.Parse([]byte(doc), func(k string) (string, bool) { v, ok := hashes[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	h, err := hub.New(cfg, hub.Options{Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	th := &testHub{h: h, cfg: cfg, hooks: hc, cancel: cancel, done: make(chan error, 1)}
	go func() { th.done <- h.Run(ctx) }()
	t.Cleanup(func() { th.stop(t) })
	testutil.WaitFor(t, 20*time.Second, "http listener", func() bool { return h.Addr() != "" })
	th.base = "http://" + h.Addr() + "/console"

	var nc *nats.Conn
	testutil.WaitFor(t, 20*time.Second, "the embedded NATS server", func() bool {
		nc, err = nats.Connect("nats://" + cfg.NATS.Embedded.Listen)
		return err == nil
	})
	t.Cleanup(nc.Close)
	th.nc = nc
	th.js, _ = jetstream.New(nc)
	sctx, scancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer scancel()
	// The agents' stream, as gemba-agent's uplink creates it.
	if _, err := th.js.CreateStream(sctx, jetstream.StreamConfig{Name: "GEMBA", Subjects: []string{"gemba.*.*.samples", "gemba.*.*.features", "gemba.*.*.status"},
		Duplicates: 20 * time.Minute, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 30*time.Second, "the hub ready with its decision room", func() bool {
		resp, err := http.Get("http://" + h.Addr() + "/api/v1/rules")
		if err != nil {
			return false
		}
		resp.Body.Close()
		r2, err := http.Get("http://" + h.Addr() + "/readyz")
		if err != nil {
			return false
		}
		r2.Body.Close()
		return resp.StatusCode == 200 && r2.StatusCode == 200
	})
	return th
}

func (th *testHub) stop(t testing.TB) {
	if th.cancel == nil {
		return
	}
	th.cancel()
	th.cancel = nil
	select {
	case err := <-th.done:
		if err != nil {
			t.Errorf("hub Run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Error("hub Run did not return after cancel")
	}
}

// units publishes an agent's features message: units made of each SKU in a window that just ended.
func (th *testHub) units(t testing.TB, counts map[string]float64) {
	t.Helper()
	th.unitsAt(t, time.Now().UTC(), counts)
}

// unitsAt is units in a window that ended at end.
func (th *testHub) unitsAt(t testing.TB, end time.Time, counts map[string]float64) {
	t.Helper()
	fs := make([]gsig.Feature, 0, len(counts))
	for sku, v := range counts {
		fs = append(fs, gsig.Feature{Signal: "l1.pack.parts", Name: "units", WindowStart: end.Add(-10 * time.Second), WindowEnd: end,
			Value: v, Count: 10, Labels: gsig.Labels{{Key: "sku", Value: sku}}})
	}
	h := gsig.Header{Schema: gsig.SchemaVersion, Agent: "gw1", Site: "s1", Stream: gsig.StreamFeatures, ConfigVersion: "console",
		Incarnation: "inc-1", FirstSeq: th.seq + 1, LastSeq: th.seq + uint64(len(fs)), Count: len(fs), Oldest: end, Newest: end, Sent: end}
	th.seq += uint64(len(fs))
	th.publish(t, gsig.Subject("gemba", "s1", "gw1", gsig.StreamFeatures), h, &gsig.Batch{Header: h, Features: fs})
}

// heartbeat publishes an agent's status, as of at.
func (th *testHub) heartbeat(t testing.TB, agent string, at time.Time, records uint64) {
	t.Helper()
	st := gsig.Status{Time: at, Agent: agent, Site: "s1", Version: "v1.4.0", ConfigVersion: "3f2a9c01d4e5b6a7", Uptime: 3600,
		Buffer:     map[string]gsig.BufferState{"features": {Records: records, Bytes: records * 120, OldestAge: float64(records) / 10}},
		Collectors: map[string]gsig.CollectorState{"opcua": {State: "running", Samples: 120000}, "mqtt": {State: "running", Samples: 5400}}}
	h := gsig.Header{Schema: gsig.SchemaVersion, Agent: agent, Site: "s1", Stream: gsig.StreamStatus, ConfigVersion: st.ConfigVersion,
		Incarnation: "inc-" + agent, FirstSeq: uint64(at.UnixNano()), LastSeq: uint64(at.UnixNano()), Count: 1, Oldest: at, Newest: at, Sent: at}
	th.publish(t, gsig.Subject("gemba", "s1", agent, gsig.StreamStatus), h, &gsig.Batch{Header: h, Status: []gsig.Status{st}})
}

// silentFor makes the hub's fleet entry of agent (once its heartbeat is stored) read as received
// ago d, as a replica that stored it then would have left it: staleness is judged by the hub's
// clock at receipt, not the agent's.
func (th *testHub) silentFor(t testing.TB, agent string, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	kv, err := th.js.KeyValue(ctx, th.cfg.Fleet.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	key := kvkey.Join("s1", agent)
	// The hub stores the heartbeat as it ingests it; then its entry is rewritten as received d ago.
	testutil.WaitFor(t, 20*time.Second, "the fleet entry of "+agent+" rewritten", func() bool {
		e, err := kv.Get(ctx, key)
		if err != nil {
			return false
		}
		var a map[string]any
		if err := json.Unmarshal(e.Value(), &a); err != nil {
			t.Fatal(err)
		}
		a["received"] = time.Now().UTC().Add(-d)
		data, _ := json.Marshal(a)
		_, err = kv.Update(ctx, key, data, e.Revision())
		return err == nil
	})
}

func (th *testHub) publish(t testing.TB, subject string, h gsig.Header, b *gsig.Batch) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := th.js.Publish(ctx, subject, gsig.AppendBatch(nil, b), jetstream.WithMsgID(h.MsgID())); err != nil {
		t.Fatal(err)
	}
}

// stock gives each SKU an inventory count and a few sales, through the hub's own import and
// commerce endpoint.
func (th *testHub) stock(t testing.TB) {
	t.Helper()
	now := time.Now().UTC()
	csv := filepath.Join(t.TempDir(), "count.csv")
	body := "sku,site,on_hand,time\n"
	for i, sku := range []string{"SKU-1", "SKU-2", "SKU-3"} {
		body += fmt.Sprintf("%s,s1,%d,%s\n", sku, 40+i*200, now.Add(-48*time.Hour).Format(time.RFC3339))
	}
	if err := os.WriteFile(csv, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	if rep, err := hub.ImportInventory(context.Background(), th.cfg, csv, ""); err != nil || rep.Published != 3 {
		t.Fatalf("import: %+v %v", rep, err)
	}
	for i, sku := range []string{"SKU-1", "SKU-2", "SKU-3"} {
		sale := fmt.Sprintf(`{"schema":1,"order_id":"O-%d","line":1,"sku":%q,"site":"s1","channel":"web","quantity":%d,"unit_price":9.5,"currency":"EUR","time":%q}`,
			i, sku, 12*(3-i), now.Add(-24*time.Hour).Format(time.RFC3339Nano))
		req, _ := http.NewRequest("POST", strings.TrimSuffix(th.base, "/console")+"/api/v1/commerce/sales", strings.NewReader(sale))
		req.Header.Set("Authorization", "Bearer sales-token")
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("sale %s: %d", sku, resp.StatusCode)
		}
	}
}

// client is a console user in Go (no browser): for the checks the server must make on its own.
type client struct {
	t    testing.TB
	hc   *http.Client
	base string
	csrf string
}

func signIn(t testing.TB, base, user string) *client {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &client{t: t, base: base, hc: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	login := c.get("/login")
	tok := between(login, `name="csrf" value="`, `"`)
	resp, err := c.hc.PostForm(base+"/login", url.Values{"user": {user}, "password": {passwords[user]}, "csrf": {tok}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || strings.Contains(resp.Header.Get("Location"), "error") {
		t.Fatalf("sign in %s: %d %s", user, resp.StatusCode, resp.Header.Get("Location"))
	}
	c.csrf = between(c.get("/approvals"), `data-csrf="`, `"`)
	return c
}

func (c *client) get(path string) string {
	c.t.Helper()
	resp, err := c.hc.Get(c.base + path)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func (c *client) post(path string, form url.Values) int {
	c.t.Helper()
	form.Set("csrf", c.csrf)
	resp, err := c.hc.PostForm(c.base+path, form)
	if err != nil {
		c.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func between(s, from, to string) string {
	_, after, ok := strings.Cut(s, from)
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(after, to)
	return v
}

// TestListenerDefault: a config that turns the console on and says nothing of the listener serves
// it on loopback only.
func TestListenerDefault(t *testing.T) {
	cfg, err := hub.Parse([]byte("console: {enabled: true, proxy: {user_header: X-User, trusted: [127.0.0.1], default_role: viewer}}\n"), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Console.Enabled || !strings.HasPrefix(cfg.HTTP.Listen, "127.0.0.1:") {
		t.Fatalf("console %v on %s, want enabled on 127.0.0.1", cfg.Console.Enabled, cfg.HTTP.Listen)
	}
	if _, err := hub.Parse([]byte("http: {enabled: false}\nconsole: {enabled: true, proxy: {user_header: X-User, trusted: [127.0.0.1]}}\n"),
		func(string) (string, bool) { return "", false }); err == nil || !strings.Contains(err.Error(), "console.enabled") {
		t.Fatalf("console without http: %v, want an error at console.enabled", err)
	}
}
