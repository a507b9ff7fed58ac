package guard

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/internal/natstest"
)

// clock is a settable clock shared by the replicas of a test.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// testConfig is a config with every guardrail on and small limits.
func testConfig(c *clock) Config {
	cfg := DefaultConfig()
	cfg.MaxDiscount = 30
	cfg.Cooldown = 6 * time.Hour
	cfg.Daily = Caps{MaxPromotions: 5, MaxBudget: 80}
	cfg.Channels = map[string]ChannelLimits{"web": {MaxDiscount: 25, Daily: Caps{MaxPromotions: 3}}}
	cfg.Approval = ApprovalConfig{Above: 20, TTL: time.Hour, ForbidSelf: true}
	cfg.RetryFor = 10 * time.Second
	cfg.OpTimeout = 2 * time.Second
	cfg.Now = c.Now
	return cfg
}

func openGuard(t *testing.T, js jetstream.JetStream, cfg Config, replica string) *Guard {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	g, err := New(ctx, js, cfg, replica, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Close() })
	return g
}

// single starts one server and one guard on it.
func single(t *testing.T, mutate func(*Config)) (*Guard, *clock, jetstream.JetStream) {
	t.Helper()
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	c := newClock()
	cfg := testConfig(c)
	if mutate != nil {
		mutate(&cfg)
	}
	return openGuard(t, js, cfg, "r1"), c, js
}

// promo builds a valid promotion proposal with its derived id.
func promo(c *clock, rule, sku, channel string, discount float64) Proposal {
	p := Proposal{RuleVersion: "v1", Rule: rule, SKU: sku, Site: "plant-1", Channel: channel,
		Kind: Promote, Discount: discount, Duration: Duration(24 * time.Hour), Time: c.Now(),
		Requester: "alice", Inputs: []Input{{Name: "days_of_cover"}, {Name: "line_state"}}}
	p.ID = DecisionID(p.RuleVersion, p.Rule, p.SKU, p.Channel, TimeBucket(p.Time, time.Hour))
	return p
}

func mustCheck(t *testing.T, g *Guard, p Proposal) Verdict {
	t.Helper()
	v, err := g.Check(context.Background(), p)
	if err != nil {
		t.Fatalf("check %s: %v", p.ID, err)
	}
	return v
}

// allRecords reads every decision record in the bucket.
func allRecords(t *testing.T, js jetstream.JetStream, bucket string) map[string]*record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*record{}
	lister, err := kv.ListKeysFiltered(ctx, prefixDec+">")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	for _, k := range keys {
		e, err := kv.Get(ctx, k)
		if err != nil {
			t.Fatalf("get %s: %v", k, err)
		}
		var r record
		if err := json.Unmarshal(e.Value(), &r); err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		out[k[len(prefixDec):]] = &r
	}
	return out
}

// ledgerOf reads one ledger key (empty when absent).
func ledgerOf(t *testing.T, js jetstream.JetStream, bucket, key string) ledger {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, key)
	if err != nil {
		return ledger{}
	}
	l, err := decodeLedger(key, e.Value())
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func failedNames(v Verdict) string {
	s := ""
	for _, a := range v.Assessments {
		if !a.Passed {
			s += fmt.Sprintf("%s(%g>%g) ", a.Guardrail, a.Value, a.Limit)
		}
	}
	return s
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
