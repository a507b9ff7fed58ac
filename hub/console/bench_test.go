package console_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub"
	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/decide/rules"
	"github.com/gemba-io/gemba/internal/testutil"
	gsig "github.com/gemba-io/gemba/signal"
)

// Sizes of the page benchmark's store.
const (
	benchSKUs      = 10_000
	benchDecisions = 100_000
)

// BenchmarkPages renders every console page through a real hub whose store holds 10,000 SKUs
// (graph, a feature value and an inventory position each) and 100,000 decisions on the decision
// log. Each sub-benchmark is one page over HTTP as a signed-in user; the target is under 200 ms.
func BenchmarkPages(b *testing.B) {
	th := startHub(b, hubOptions{skus: benchSKUs, noRules: true})
	start := time.Now()
	fillFeatures(b, th)
	fillInventory(b, th)
	lastID := fillDecisions(b, th)
	b.Logf("store filled in %s: %d SKUs (features, inventory), %d decisions", time.Since(start).Round(time.Millisecond), benchSKUs, benchDecisions)

	c := signIn(b, th.base, "root")
	for _, p := range []struct{ name, path, want string }{
		{"fleet", "/fleet", `id="fleet"`},
		{"features", "/features", "10000 values"},
		{"features_filtered", "/features?key=SKU-9999", "1 values"},
		{"inventory", "/inventory", `id="inventory"`},
		{"inventory_page_25", "/inventory?after_site=s1&after_sku=SKU-5000", "SKU-5001"},
		{"decisions", "/decisions", `class="decision"`},
		{"decisions_sku_filter", "/decisions?sku=SKU-42", `id="decisions"`},
		{"decisions_rare_filter", "/decisions?outcome=expired", `id="empty"`},
		{"why", "/decisions/" + lastID, `id="why"`},
		{"approvals", "/approvals", `id="pending"`},
		{"rules", "/rules", `id="versions"`},
	} {
		b.Run(p.name, func(b *testing.B) {
			for b.Loop() {
				resp, err := c.hc.Get(c.base + p.path)
				if err != nil {
					b.Fatal(err)
				}
				var sb strings.Builder
				_, _ = ioCopy(&sb, resp)
				if resp.StatusCode != http.StatusOK || !strings.Contains(sb.String(), p.want) {
					b.Fatalf("%s: %d, want 200 with %q", p.path, resp.StatusCode, p.want)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/page")
		})
	}
}

func ioCopy(sb *strings.Builder, resp *http.Response) (int64, error) {
	defer resp.Body.Close()
	var buf [32 << 10]byte
	var n int64
	for {
		k, err := resp.Body.Read(buf[:])
		sb.Write(buf[:k])
		n += int64(k)
		if err != nil {
			return n, nil
		}
	}
}

// fillFeatures publishes a units value for every SKU (100 per agent message) and waits until the
// hub holds them all.
func fillFeatures(b *testing.B, th *testHub) {
	end := time.Now().UTC()
	for i := 1; i <= benchSKUs; i += 100 {
		fs := make([]gsig.Feature, 0, 100)
		for j := i; j < i+100 && j <= benchSKUs; j++ {
			fs = append(fs, gsig.Feature{Signal: "l1.pack.parts", Name: "units", WindowStart: end.Add(-10 * time.Second), WindowEnd: end,
				Value: float64(j % 97), Count: 10, Labels: gsig.Labels{{Key: "sku", Value: fmt.Sprintf("SKU-%d", j)}}})
		}
		h := gsig.Header{Schema: gsig.SchemaVersion, Agent: "gw1", Site: "s1", Stream: gsig.StreamFeatures, ConfigVersion: "bench",
			Incarnation: "inc-1", FirstSeq: th.seq + 1, LastSeq: th.seq + uint64(len(fs)), Count: len(fs), Oldest: end, Newest: end, Sent: end}
		th.seq += uint64(len(fs))
		th.publish(b, gsig.Subject("gemba", "s1", "gw1", gsig.StreamFeatures), h, &gsig.Batch{Header: h, Features: fs})
	}
	api := strings.TrimSuffix(th.base, "/console") + "/api/v1/features?name=units&limit=10000"
	testutil.WaitFor(b, 2*time.Minute, "10,000 feature values", func() bool {
		var out struct {
			Values []json.RawMessage `json:"values"`
		}
		return getJSON(api, &out) && len(out.Values) == benchSKUs
	})
}

// fillInventory imports a count for every SKU and waits until the hub holds them all.
func fillInventory(b *testing.B, th *testHub) {
	var sb strings.Builder
	sb.WriteString("sku,site,on_hand,time\n")
	at := time.Now().UTC().Add(-time.Hour).Format(time.RFC3339)
	for i := 1; i <= benchSKUs; i++ {
		fmt.Fprintf(&sb, "SKU-%d,s1,%d,%s\n", i, 10+i%500, at)
	}
	csv := filepath.Join(b.TempDir(), "count.csv")
	if err := os.WriteFile(csv, []byte(sb.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	if rep, err := hub.ImportInventory(context.Background(), th.cfg, csv, ""); err != nil || rep.Published != benchSKUs {
		b.Fatalf("import: %+v %v", rep, err)
	}
	api := strings.TrimSuffix(th.base, "/console") + "/api/v1/inventory?limit=10000"
	testutil.WaitFor(b, 2*time.Minute, "10,000 inventory positions", func() bool {
		var out struct {
			Positions []json.RawMessage `json:"positions"`
		}
		return getJSON(api, &out) && len(out.Positions) == benchSKUs
	})
}

// fillDecisions writes 100,000 decision records straight onto the decision log's stream, as the
// engine would have recorded them (one per SKU, channel and time bucket), and returns the last id.
func fillDecisions(b *testing.B, th *testHub) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	t0 := time.Now().UTC().Add(-100_000 * time.Second)
	action := rules.Action{Kind: rules.Promote, Channels: []string{"web"}, Discount: 10, Duration: 24 * time.Hour}
	var id string
	for i := range benchDecisions {
		id = fmt.Sprintf("%032x", i+1)
		sku := fmt.Sprintf("SKU-%d", 1+i%benchSKUs)
		rec := audit.Record{DecisionID: id, Event: audit.EventDecided, Outcome: audit.OutcomeFired, Mode: audit.ModeActive,
			Time: t0.Add(time.Duration(i) * time.Second), Replica: "t1", RuleSet: audit.RuleSetRef{Name: "bench", Version: strings.Repeat("ab", 32), ChangeSeq: 1},
			Rule: audit.RuleRef{Name: "promote-made", When: "features.units.value > 0.0", Index: 1}, SKU: sku, Site: "s1", Channel: "web", Action: action,
			Inputs: []audit.Input{{Name: "units", Key: sku, Value: 5, EventTime: t0, AgeS: 1}}}
		data, err := json.Marshal(rec)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := th.js.PublishAsync("gemba.decisions."+id, data, jetstream.WithMsgID(id+":decided")); err != nil {
			b.Fatal(err)
		}
		if i%1000 == 999 { // below the async publisher's 4,000 pending: it stalls past that
			select {
			case <-th.js.PublishAsyncComplete():
			case <-ctx.Done():
				b.Fatal("publishing decisions: timed out")
			}
		}
	}
	select {
	case <-th.js.PublishAsyncComplete():
	case <-ctx.Done():
		b.Fatal("publishing decisions: timed out")
	}
	return id
}

func getJSON(url string, out any) bool {
	resp, err := http.Get(url)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	return resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(out) == nil
}
