package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/chaos/verdicts"
	"github.com/gemba-io/gemba/hub/act"
	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
	gsig "github.com/gemba-io/gemba/signal"
)

const (
	loadSKUs   = 40
	loadCap    = 150 // guard.daily.max_promotions
	loadSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
)

// decisionFiles writes the graph, the rules and one hub config per replica for the decisions
// load: every SKU that reports units made is promoted on web, one decision per 2 s bucket, with
// no cooldown and a daily cap that the load exceeds.
func decisionFiles(t *testing.T, dir, natsURL, hookURL string) {
	var g strings.Builder
	g.WriteString("version: load\nsites: [{id: s1}]\nlines: [{id: l1, site: s1}]\nchannels: [{id: web}]\nskus:\n")
	for i := range loadSKUs {
		fmt.Fprintf(&g, "  - {id: SKU-%03d}\n", i)
	}
	g.WriteString("edges:\n")
	for i := range loadSKUs {
		fmt.Fprintf(&g, "  - {kind: produces, from: l1, to: SKU-%03d}\n  - {kind: sold_via, from: SKU-%03d, to: web}\n", i, i)
	}
	writeFile(t, filepath.Join(dir, "graph.yaml"), g.String())
	writeFile(t, filepath.Join(dir, "rules.yaml"), `name: load
hit_policy: first
rules:
  - name: promote-made
    when: has(features.units) && !features.units.stale && features.units.value > 0.0
    promote: {channels: [web], discount: 10, duration: 24h}
`)
	for _, name := range []string{"hub-a", "hub-b", "hub-c"} {
		writeFile(t, filepath.Join(dir, name+".yaml"), fmt.Sprintf(`hub: {id: %s, data_dir: %s/%s, shutdown_timeout: 10s, log: {level: warn, format: text}}
http: {listen: "127.0.0.1:0"}
nats: {servers: ["%s"]}
ingest: {ack_wait: 2s, batch: 64}
commerce: {channels: [web]}
features:
  - {name: units, signal: "*.pack.parts", feature: units, key: sku, max_age: 1h}
graph: {file: graph.yaml}
decide: {rules: rules.yaml, bucket: 2s, timer: 1m}
guard: {max_discount: 20, cooldown: 0s, daily: {max_promotions: %d}, claim_lease: 2s}
act:
  lease: 2s
  poll: 100ms
  channels:
    web: {webhook: {url: "%s", secret: "%s", timeout: 1s}}
`, name, dir, name, natsURL, loadCap, hookURL, loadSecret))
	}
}

// hooks is a webhook receiver counting deliveries per webhook-id, verifying each signature.
type hooks struct {
	mu       sync.Mutex
	got      map[string]int
	badSig   int
	received int
}

func (h *hooks) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	id, ts := r.Header.Get("webhook-id"), r.Header.Get("webhook-timestamp")
	var sec int64
	fmt.Sscan(ts, &sec)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.received++
	key, _ := decodeWhsec(loadSecret)
	if want := act.Sign(key, id, sec, body); !strings.Contains(r.Header.Get("webhook-signature"), want) {
		h.badSig++
	}
	h.got[id]++
	w.WriteHeader(http.StatusNoContent)
}

// TestThreeReplicasDecideOnceUnderKills runs three gemba-hub processes deciding on one feature load
// while one of them is SIGKILLed (and restarted) every few seconds. Afterwards every decision the
// guard allowed is recorded once on the decision log, published once on the ACTIONS stream and
// received by the webhook under its id; nothing was published or posted that was not allowed; and
// the daily cap holds.
func TestThreeReplicasDecideOnceUnderKills(t *testing.T) {
	if testing.Short() && os.Getenv("CI") == "" {
		t.Skip("runs three hub processes (~30 s)")
	}
	dir := t.TempDir()
	ns := natstest.JetStream(t)
	createAgentStream(t, ns.URL(), 1)
	rcv := &hooks{got: map[string]int{}}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	decisionFiles(t, dir, ns.URL(), srv.URL)

	start := func(name string) *replica { return runReplica(t, name, dir, filepath.Join(dir, name+".yaml")) }
	reps := []*replica{start("hub-a"), start("hub-b"), start("hub-c")}
	t.Cleanup(func() {
		if t.Failed() {
			for _, r := range reps {
				t.Logf("%s stderr:\n%s", r.name, tail(r.stderr.String()))
			}
		}
	})

	_, js := natstest.Connect(t, ns.URL())
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	testutil.WaitFor(t, 60*time.Second, "the decision room on every replica", func() bool {
		_, err1 := js.KeyValue(ctx, "GEMBA_GUARD")
		_, err2 := js.Stream(ctx, "ACTIONS")
		return err1 == nil && err2 == nil
	})

	// About 20 s of features: each message reports units of 4 SKUs in a window that just ended.
	var seq uint64
	kills := 0
	deadline := time.Now().Add(20 * time.Second)
	nextKill := time.Now().Add(4 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		end := time.Now().UTC()
		fs := make([]gsig.Feature, 4)
		for j := range fs {
			fs[j] = gsig.Feature{Signal: "l1.pack.parts", Name: "units", WindowStart: end.Add(-10 * time.Second), WindowEnd: end,
				Value: float64(1 + (i+j)%9), Count: 10, Labels: gsig.Labels{{Key: "sku", Value: fmt.Sprintf("SKU-%03d", (i*4+j)%loadSKUs)}}}
		}
		h := gsig.Header{Schema: gsig.SchemaVersion, Agent: "gw1", Site: "s1", Stream: gsig.StreamFeatures, ConfigVersion: "load",
			Incarnation: "inc-1", FirstSeq: seq + 1, LastSeq: seq + 4, Count: 4, Oldest: end, Newest: end, Sent: end}
		seq += 4
		if _, err := js.Publish(ctx, gsig.Subject("gemba", "s1", "gw1", gsig.StreamFeatures), gsig.AppendBatch(nil, &gsig.Batch{Header: h, Features: fs}),
			jetstream.WithMsgID(h.MsgID())); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(nextKill) {
			k := kills % len(reps)
			_ = reps[k].cmd.Process.Signal(syscall.SIGKILL)
			<-reps[k].exited
			reps[k] = start(reps[k].name)
			kills++
			nextKill = time.Now().Add(4 * time.Second)
		}
		time.Sleep(25 * time.Millisecond) // pacing the load, not synchronisation
	}

	// The allowed decisions, from the guard's own records.
	allowed := func() map[string]bool {
		out, err := verdicts.Allowed(ctx, js)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	// What the decision log and the ACTIONS stream hold, per decision id.
	count := func(stream, prefix string, fn func(data []byte) (string, bool)) map[string]int {
		s, err := js.Stream(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]int{}
		for q := info.State.FirstSeq; q <= info.State.LastSeq && info.State.Msgs > 0; q++ {
			m, err := s.GetMsg(ctx, q)
			if err != nil || !strings.HasPrefix(m.Subject, prefix) {
				continue
			}
			if id, ok := fn(m.Data); ok {
				out[id]++
			}
		}
		return out
	}
	fired := func() map[string]int {
		return count("GEMBA_DECISIONS", "gemba.decisions.", func(data []byte) (string, bool) {
			var r struct {
				DecisionID string `json:"decision_id"`
				Event      string `json:"event"`
				Outcome    string `json:"outcome"`
			}
			if json.Unmarshal(data, &r) != nil {
				return "", false
			}
			return r.DecisionID, r.Event == "decided" && r.Outcome == "fired"
		})
	}
	actions := func() map[string]int {
		return count("ACTIONS", "gemba.actions.", func(data []byte) (string, bool) {
			var m act.Message
			return m.DecisionID, json.Unmarshal(data, &m) == nil && m.Event == act.EventStart
		})
	}
	var al map[string]bool
	var fr, ac map[string]int
	complete := func() bool {
		al, fr, ac = allowed(), fired(), actions()
		rcv.mu.Lock()
		defer rcv.mu.Unlock()
		if len(al) == 0 || len(fr) != len(al) || len(ac) != len(al) {
			return false
		}
		for id := range al {
			if fr[id] == 0 || ac[id] == 0 || rcv.got[id] == 0 {
				return false
			}
		}
		return true
	}
	for wait := time.Now().Add(60 * time.Second); !complete(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(wait) {
			rcv.mu.Lock()
			t.Errorf("after 60 s: %d allowed, %d fired records, %d actions, %d posted", len(al), len(fr), len(ac), len(rcv.got))
			for id := range al {
				if fr[id] == 0 || ac[id] == 0 || rcv.got[id] == 0 {
					t.Errorf("allowed %s: %d records, %d actions, %d posts", id, fr[id], ac[id], rcv.got[id])
				}
			}
			rcv.mu.Unlock()
			break
		}
	}
	t.Logf("%d kills; %d decisions allowed, %d webhook calls", kills, len(al), rcv.received)
	// The cap is per UTC day: a run across midnight may allow it twice (once per day).
	perDay := map[string]int{}
	if st, err := js.Stream(ctx, "ACTIONS"); err == nil {
		if info, err := st.Info(ctx); err == nil {
			for q := info.State.FirstSeq; q <= info.State.LastSeq && info.State.Msgs > 0; q++ {
				var m act.Message
				if raw, err := st.GetMsg(ctx, q); err == nil && json.Unmarshal(raw.Data, &m) == nil && m.Event == act.EventStart {
					perDay[m.Start.UTC().Format(time.DateOnly)]++
				}
			}
		}
	}
	most := 0
	for d, n := range perDay {
		most = max(most, n)
		if n > loadCap {
			t.Errorf("%d promotions started on %s, the daily cap is %d", n, d, loadCap)
		}
	}
	if most < loadCap {
		t.Errorf("at most %d promotions allowed in a day (%v): the load did not reach the cap of %d, which tests less", most, perDay, loadCap)
	}
	for id, n := range fr {
		if n != 1 || !al[id] {
			t.Errorf("decision %s: %d fired records (allowed: %v)", id, n, al[id])
		}
	}
	for id, n := range ac {
		if n != 1 || !al[id] {
			t.Errorf("decision %s: %d messages on ACTIONS (allowed: %v)", id, n, al[id])
		}
	}
	rcv.mu.Lock()
	for id := range rcv.got {
		if !al[id] {
			t.Errorf("webhook received %s, which was never allowed", id)
		}
	}
	if rcv.badSig > 0 {
		t.Errorf("%d webhook calls with a bad signature", rcv.badSig)
	}
	rcv.mu.Unlock()
}

func decodeWhsec(s string) ([]byte, error) {
	return base64.StdEncoding.DecodeString(strings.TrimPrefix(s, "whsec_"))
}
