package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gemba-io/gemba/buffer"
	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
)

// fileSource stands in for the config file a reload reads: the test swaps its text.
type fileSource struct {
	mu  sync.Mutex
	yml string
}

func (f *fileSource) set(yml string) { f.mu.Lock(); f.yml = yml; f.mu.Unlock() }
func (f *fileSource) load() (*Config, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return Parse([]byte(f.yml), noEnv)
}

func startReloadable(t *testing.T, yml string) (*harness, *fileSource) {
	t.Helper()
	src := &fileSource{yml: yml}
	h := startWith(t, yml, func(o *Options) { o.Reload, o.ConfigFile = src.load, "agent.yaml" })
	return h, src
}

func emitted(s *scripted) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.emitted)
}

func waitEmitted(t *testing.T, s *scripted, n int) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, fmt.Sprintf("%s emitting %d", s.name, n), func() bool { return emitted(s) >= n })
}

// chunkVersions reads the sample chunks in buffer order: each chunk's config version and signals.
func chunkVersions(t *testing.T, b buffer.Buffer) (versions []string, signals [][]string) {
	t.Helper()
	var after uint64
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		recs, err := b.Read(ctx, signal.StreamSamples, after, 1000)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) || len(recs) == 0 {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			c, err := signal.ParseChunk(r.Data)
			if err != nil {
				t.Fatal(err)
			}
			ss, err := signal.DecodeSamples(c.Records)
			if err != nil {
				t.Fatal(err)
			}
			var sigs []string
			for _, s := range ss {
				sigs = append(sigs, s.Signal)
			}
			versions, signals = append(versions, c.ConfigVersion), append(signals, sigs)
			after = r.Seq
		}
	}
}

// collectorSeries lists the collector label values of a metric the agent serves.
func collectorSeries(t *testing.T, h *harness, metric string) []string {
	t.Helper()
	mfs, err := h.agent.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		if mf.GetName() != metric {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "collector" {
					out = append(out, l.GetValue())
				}
			}
		}
	}
	slices.Sort(out)
	return out
}

// TestReloadRestartsOnlyWhatChanged: of a (unchanged), b (removed), c (changed) and d (new), a
// keeps its one run and loses or repeats no sample; b and the old c stop, the new c and d start;
// b's series disappear; every chunk carries one version, the old one before the switch and the
// new one after, with the old c's samples all before and the new c's and d's all after.
func TestReloadRestartsOnlyWhatChanged(t *testing.T) {
	a, b, c1, c2, d := &scripted{name: "a"}, &scripted{name: "b"}, &scripted{name: "c"}, &scripted{name: "c"}, &scripted{name: "d"}
	for k, s := range map[string]*scripted{"rl-a": a, "rl-b": b, "rl-c1": c1, "rl-c2": c2, "rl-d": d} {
		register(k, s)
	}
	h, src := startReloadable(t, baseConfig+`
collectors:
  - {name: a, type: scripted, key: rl-a}
  - {name: b, type: scripted, key: rl-b}
  - {name: c, type: scripted, key: rl-c1}
`)
	oldVersion := h.agent.Status().ConfigVersion
	waitEmitted(t, a, 200)
	waitEmitted(t, b, 200)
	waitEmitted(t, c1, 200)
	if got := collectorSeries(t, h, "gemba_collector_samples_total"); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("series before the reload: %v", got)
	}

	src.set(baseConfig + `
collectors:
  - {name: d, type: scripted, key: rl-d}
  - {name: c, type: scripted, key: rl-c2}
  - {name: a, type: scripted, key: rl-a}
`)
	res, err := h.agent.Reload(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := ReloadResult{Applied: true, ConfigVersion: res.ConfigVersion, Started: []string{"d"}, Restarted: []string{"c"}, Stopped: []string{"b"}, Unchanged: []string{"a"}}
	if fmt.Sprint(res) != fmt.Sprint(want) {
		t.Fatalf("reload: %+v\nwant %+v", res, want)
	}
	if res.ConfigVersion == oldVersion || h.agent.Status().ConfigVersion != res.ConfigVersion {
		t.Fatalf("version %s -> %s, status says %s", oldVersion, res.ConfigVersion, h.agent.Status().ConfigVersion)
	}
	bAfter, c1After := emitted(b), emitted(c1)
	waitEmitted(t, c2, 200)
	waitEmitted(t, d, 200)
	waitEmitted(t, a, emitted(a)+200)
	if emitted(b) != bAfter || emitted(c1) != c1After {
		t.Fatalf("stopped collectors still emit: b %d -> %d, old c %d -> %d", bAfter, emitted(b), c1After, emitted(c1))
	}
	if a.Runs() != 1 || b.Runs() != 1 || c1.Runs() != 1 || c2.Runs() != 1 {
		t.Fatalf("runs: a %d b %d old c %d new c %d; want 1 each (a never restarted)", a.Runs(), b.Runs(), c1.Runs(), c2.Runs())
	}
	if got := collectorSeries(t, h, "gemba_collector_samples_total"); !slices.Equal(got, []string{"a", "c", "d"}) {
		t.Fatalf("series after the reload: %v (b's must be gone)", got)
	}
	if got := collectorSeries(t, h, "gemba_collector_up"); !slices.Equal(got, []string{"a", "c", "d"}) {
		t.Fatalf("up series after the reload: %v", got)
	}
	if got := testutil.Metric(t, h.agent.Registry(), "gemba_agent_config_reloads_total", "result", "applied"); got != 1 {
		t.Errorf("applied reloads %v, want 1", got)
	}
	h.stop(t)

	// a: every acknowledged value once, in order, no gap across the reload.
	vals := bufferedValues(t, h.buf)["a"]
	acked := emitted(a)
	if len(vals) < acked {
		t.Fatalf("a: %d acknowledged, %d buffered", acked, len(vals))
	}
	for i, v := range vals {
		if v != int64(i) {
			t.Fatalf("a: buffered[%d] = %d: a gap or a duplicate across the reload", i, v)
		}
	}
	versions, signals := chunkVersions(t, h.buf)
	switched := false
	for i, v := range versions {
		switch {
		case v == res.ConfigVersion:
			switched = true
		case v != oldVersion:
			t.Fatalf("chunk %d: version %q, neither old nor new", i, v)
		case switched:
			t.Fatalf("chunk %d: old version after the switch", i)
		}
		for _, s := range signals[i] {
			if (s == "b") && switched {
				t.Fatalf("chunk %d: b's sample under the new version", i)
			}
			if s == "d" && !switched {
				t.Fatalf("chunk %d: d's sample under the old version", i)
			}
		}
	}
	if !switched {
		t.Fatal("no chunk under the new version")
	}
}

// TestReloadInvalidKeepsTheRunningConfig: every problem is reported, counted, and nothing stops.
func TestReloadInvalidKeepsTheRunningConfig(t *testing.T) {
	a := &scripted{name: "a"}
	register("inv-a", a)
	yml := baseConfig + `
collectors:
  - {name: a, type: scripted, key: inv-a}
`
	h, src := startReloadable(t, yml)
	version := h.agent.Status().ConfigVersion
	waitEmitted(t, a, 50)
	src.set(yml + `  - {name: a, type: scripted, key: inv-a}
  - {name: z, type: nosuchtype}
`)
	res, err := h.agent.Reload(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if res.Applied || len(res.Problems) != 2 || res.ConfigVersion != version {
		t.Fatalf("reload of an invalid file: %+v", res)
	}
	for i, want := range []string{`agent.yaml:8: collectors[1].name: duplicate collector name "a" (also collectors[0], line 7)`, `agent.yaml:9: collectors[2].type: unknown collector type "nosuchtype"`} {
		if !strings.HasPrefix(res.Problems[i], want) {
			t.Errorf("problem %d: %q, want it to start with %q", i, res.Problems[i], want)
		}
	}
	if got := testutil.Metric(t, h.agent.Registry(), "gemba_agent_config_reloads_total", "result", "invalid"); got != 1 {
		t.Errorf("invalid reloads %v, want 1", got)
	}
	n := emitted(a)
	waitEmitted(t, a, n+50)
	if a.Runs() != 1 || h.agent.Status().ConfigVersion != version {
		t.Fatalf("after a refused reload: runs %d, version %s (was %s)", a.Runs(), h.agent.Status().ConfigVersion, version)
	}
}

// TestReloadReportsRestartRequired: a changed uplink or http section is not applied: the reload
// says so, the gauge and /readyz too, and the version (of what runs) stays.
func TestReloadReportsRestartRequired(t *testing.T) {
	a := &scripted{name: "a"}
	register("rr-a", a)
	coll := `
collectors:
  - {name: a, type: scripted, key: rr-a}
`
	h, src := startReloadable(t, baseConfig+coll)
	version := h.agent.Status().ConfigVersion
	src.set(strings.Replace(baseConfig, "max_bytes: 64MiB", "max_bytes: 32MiB", 1) + "uplink: {heartbeat: 3s}\n" + coll)
	res, err := h.agent.Reload(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !res.Applied || !slices.Equal(res.RestartRequired, []string{"buffer", "uplink"}) || !slices.Equal(res.Unchanged, []string{"a"}) || res.ConfigVersion != version {
		t.Fatalf("reload: %+v (version was %s)", res, version)
	}
	if got := testutil.Metric(t, h.agent.Registry(), "gemba_agent_config_restart_required"); got != 1 {
		t.Errorf("restart_required gauge %v, want 1", got)
	}
	if c := h.agent.Readiness().Checks[0]; !strings.Contains(c.Reason, "restart applies: buffer, uplink") {
		t.Errorf("config check %+v", c)
	}
	src.set(baseConfig + coll) // put back: nothing pending any more
	if res, _ = h.agent.Reload(context.Background()); len(res.RestartRequired) != 0 {
		t.Fatalf("reload after undoing: %+v", res)
	}
	if got := testutil.Metric(t, h.agent.Registry(), "gemba_agent_config_restart_required"); got != 0 {
		t.Errorf("restart_required gauge %v after undoing, want 0", got)
	}
}

// TestAdminReload: POST /admin/reload wants the token when one is set, refuses browsers, and
// answers 422 with the problems of an invalid file.
func TestAdminReload(t *testing.T) {
	yml := strings.Replace(baseConfig, `http: {listen: "127.0.0.1:0"}`, `http: {listen: "127.0.0.1:0", admin_token: s3cret}`, 1)
	h, src := startReloadable(t, yml)
	post := func(hdr ...string) (int, ReloadResult) {
		req, _ := http.NewRequest(http.MethodPost, "http://"+h.addr+"/admin/reload", nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var r ReloadResult
		_ = json.NewDecoder(resp.Body).Decode(&r)
		return resp.StatusCode, r
	}
	for _, c := range []struct {
		hdr  []string
		code int
	}{
		{nil, http.StatusUnauthorized},
		{[]string{"Authorization", "Bearer wrong"}, http.StatusUnauthorized},
		{[]string{"Authorization", "Bearer s3cret", "Origin", "http://evil.example"}, http.StatusForbidden},
	} {
		if code, _ := post(c.hdr...); code != c.code {
			t.Errorf("%v: %d, want %d", c.hdr, code, c.code)
		}
	}
	if code, r := post("Authorization", "Bearer s3cret"); code != http.StatusOK || !r.Applied {
		t.Fatalf("with the token: %d %+v", code, r)
	}
	src.set(yml + "collectors: {}\n")
	if code, r := post("Authorization", "Bearer s3cret"); code != http.StatusUnprocessableEntity || r.Applied || len(r.Problems) != 1 {
		t.Fatalf("invalid file: %d %+v", code, r)
	}
	resp, err := http.Get("http://" + h.addr + "/admin/reload")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d", resp.StatusCode)
	}
	if got := testutil.Metric(t, h.agent.Registry(), "gemba_agent_config_reloads_total", "result", "invalid"); got != 1 {
		t.Errorf("invalid reloads %v, want 1", got)
	}
}

func TestReloadWithoutSourceIsRefused(t *testing.T) {
	h := start(t, baseConfig)
	if _, err := h.agent.Reload(context.Background()); !errors.Is(err, ErrReloadUnsupported) {
		t.Fatalf("err %v", err)
	}
}

// A listener on a LAN address sees the reload command on the same host arrive from that address
// (the kernel picks the destination as the source): it is this host, like loopback. A client at
// another address is not.
func TestAdminAllowedFromThisHostsOwnAddress(t *testing.T) {
	a := &Agent{cfg: &Config{}}
	req := func(remote, local string) *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/admin/reload", nil)
		r.RemoteAddr = remote
		if local != "" {
			r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, &net.TCPAddr{IP: net.ParseIP(local), Port: 9100}))
		}
		return r
	}
	for _, c := range []struct {
		remote, local string
		code          int
	}{
		{"127.0.0.1:5000", "127.0.0.1", 0},
		{"192.168.7.5:5000", "192.168.7.5", 0},
		{"[fd00::5]:5000", "fd00::5", 0},
		{"192.168.7.9:5000", "192.168.7.5", http.StatusForbidden},
		{"192.168.7.5:5000", "", http.StatusForbidden},
	} {
		if code, why := a.adminAllowed(req(c.remote, c.local)); code != c.code {
			t.Errorf("from %s to %s: %d (%s), want %d", c.remote, c.local, code, why, c.code)
		}
	}
}
