package versions

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/config"
	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/decide/rules"
	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

// ruleSet is a valid rule file; n changes the version.
func ruleSet(n int) []byte {
	return fmt.Appendf(nil, `name: promo
hit_policy: first
rules:
  - name: overstock
    when: inventory.days_of_cover > %d.0
    promote: {channels: [web], discount: 10, duration: 24h}
`, 10+n)
}

type env struct {
	js  jetstream.JetStream
	log *audit.Log
	reg *Registry
}

func open(t *testing.T, js jetstream.JetStream, logger *slog.Logger) env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := audit.Open(ctx, js, audit.Config{Prefix: "gemba"}, logger)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Open(ctx, js, Config{}, l, logger)
	if err != nil {
		t.Fatal(err)
	}
	return env{js, l, r}
}

func newEnv(t *testing.T) (env, *natstest.Node) {
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	return open(t, js, nil), n
}

func TestStoreImmutable(t *testing.T) {
	e, _ := newEnv(t)
	ctx := context.Background()
	v1, err := e.reg.Store(ctx, ruleSet(1), "alice")
	if err != nil {
		t.Fatal(err)
	}
	// The same rules with another layout and label: the same version, the first content kept.
	relabelled := append([]byte("label: again\n# a comment\n"), ruleSet(1)...)
	v1b, err := e.reg.Store(ctx, relabelled, "bob")
	if err != nil || v1b != v1 {
		t.Fatalf("store the same version again: %s %v, want %s", v1b, err, v1)
	}
	got, err := e.reg.Load(ctx, v1)
	if err != nil || string(got) != string(ruleSet(1)) {
		t.Fatalf("stored content changed: %q %v", got, err)
	}
	m, err := e.reg.Meta(ctx, v1)
	if err != nil || m.By != "alice" || m.Name != "promo" {
		t.Fatalf("meta %+v %v", m, err)
	}
	// A bad file is refused with its place in the file.
	_, err = e.reg.Store(ctx, []byte("name: x\nhit_policy: first\nrules:\n  - name: r\n    when: inventory.nope > 1\n    hold: {channels: [web], reason: r}\n"), "a")
	if err == nil || !strings.Contains(strings.Join(rules.Describe("f", err), "\n"), "f:5:") {
		t.Fatalf("bad rule file: %v", err)
	}
	if _, err := e.reg.Load(ctx, strings.Repeat("0", 64)); !errors.Is(err, ErrUnknownVersion) {
		t.Fatalf("load unknown: %v", err)
	}
	if got, err := e.reg.Resolve(ctx, v1[:8]); err != nil || got != v1 {
		t.Fatalf("resolve %s: %s %v", v1[:8], got, err)
	}
	if _, err := e.reg.Resolve(ctx, "0000000000"); !errors.Is(err, ErrUnknownVersion) {
		t.Fatalf("resolve unknown: %v", err)
	}
	if _, err := e.reg.Resolve(ctx, "abc"); err == nil {
		t.Fatal("short prefix accepted")
	}
}

func TestActivateRollbackShadowCanary(t *testing.T) {
	e, _ := newEnv(t)
	ctx := context.Background()
	var vs []string
	for i := range 3 {
		v, err := e.reg.Store(ctx, ruleSet(i), "a")
		if err != nil {
			t.Fatal(err)
		}
		vs = append(vs, v)
	}
	if _, err := e.reg.Activate(ctx, strings.Repeat("f", 64), "a", ""); !errors.Is(err, ErrUnknownVersion) {
		t.Fatalf("activate unknown: %v", err)
	}
	if _, err := e.reg.Rollback(ctx, "a", ""); !errors.Is(err, ErrNoPrevious) {
		t.Fatalf("rollback with nothing: %v", err)
	}
	for _, v := range vs {
		if _, err := e.reg.Activate(ctx, v, "alice", "ship "+v[:6]); err != nil {
			t.Fatal(err)
		}
	}
	c, err := e.reg.Canary(ctx, vs[0], 0.25, "site", "bob", "try")
	if err != nil || c.Canary == nil || c.Canary.Share != 0.25 || c.Active != vs[2] {
		t.Fatalf("canary: %+v %v", c, err)
	}
	if _, err := e.reg.Canary(ctx, vs[0], 1.5, "sku", "bob", ""); err == nil {
		t.Fatal("share 1.5 accepted")
	}
	if _, err := e.reg.Canary(ctx, vs[0], 0.5, "line", "bob", ""); err == nil {
		t.Fatal("unit line accepted")
	}
	if c, err = e.reg.Shadow(ctx, vs[1], "carol", "compare"); err != nil || c.Shadow != vs[1] {
		t.Fatalf("shadow: %+v %v", c, err)
	}
	c, err = e.reg.Rollback(ctx, "dave", "bad numbers")
	if err != nil || c.Active != vs[1] || c.From != vs[2] || c.To != vs[1] || len(c.Previous) != 1 || c.Previous[0] != vs[0] {
		t.Fatalf("rollback: %+v %v", c, err)
	}
	if c.Shadow != vs[1] || c.Canary == nil {
		t.Fatalf("rollback dropped shadow or canary: %+v", c)
	}
	// Activating the canary's version ends the canary.
	if c, err = e.reg.Activate(ctx, vs[0], "erin", ""); err != nil || c.Canary != nil || c.Previous[0] != vs[1] {
		t.Fatalf("activate the canary version: %+v %v", c, err)
	}
	if c, err = e.reg.Shadow(ctx, "", "carol", "done"); err != nil || c.Shadow != "" || c.Op != audit.OpClearShadow {
		t.Fatalf("clear shadow: %+v %v", c, err)
	}
	// Clearing what is not set records nothing (a change would fence the decisions in flight).
	if _, err := e.reg.Shadow(ctx, "", "carol", "again"); !errors.Is(err, ErrNothingToClear) {
		t.Fatalf("clear shadow again: %v", err)
	}
	if _, err := e.reg.Canary(ctx, "", 0, "", "bob", "none"); !errors.Is(err, ErrNothingToClear) {
		t.Fatalf("clear a canary never set since the activation: %v", err)
	}
	hist, err := e.log.Changes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ops []string
	for _, h := range hist {
		ops = append(ops, h.Op+":"+h.By)
	}
	want := "activate:alice activate:alice activate:alice canary:bob shadow:carol rollback:dave activate:erin clear-shadow:carol"
	if strings.Join(ops, " ") != want {
		t.Fatalf("history %v\nwant %s", ops, want)
	}
}

// Two replicas activating at once on their own connections: every change lands once, in order,
// each computed from the one before it.
func TestConcurrentActivate(t *testing.T) {
	n := natstest.JetStream(t)
	_, js1 := natstest.Connect(t, n.URL())
	_, js2 := natstest.Connect(t, n.URL())
	a, b := open(t, js1, nil), open(t, js2, nil)
	ctx := context.Background()
	const each = 15
	// Each activation names a version of its own (activating the active one records nothing).
	versionsOf := func(e env, base int) []string {
		var vs []string
		for i := range each {
			v, err := e.reg.Store(ctx, ruleSet(base+i), "x")
			if err != nil {
				t.Fatal(err)
			}
			vs = append(vs, v)
		}
		return vs
	}
	va, vb := versionsOf(a, 100), versionsOf(b, 200)
	var wg sync.WaitGroup
	errs := make(chan error, 2*each)
	for _, x := range []struct {
		e  env
		vs []string
		b  string
	}{{a, va, "a"}, {b, vb, "b"}} {
		wg.Go(func() {
			for i := range each {
				if _, err := x.e.reg.Activate(ctx, x.vs[i], x.b, fmt.Sprint(i)); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("activate: %v", err)
	}
	hist, err := a.log.Changes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != 2*each {
		t.Fatalf("%d changes recorded, want %d (none lost, none doubled)", len(hist), 2*each)
	}
	count := map[string]int{}
	for i, h := range hist {
		count[h.By]++
		// Each change was computed from its predecessor: its From is the active before it.
		if i > 0 && h.From != hist[i-1].Active {
			t.Fatalf("change %d (%s) computed from %s, but the active before it was %s", h.Seq, h.By, h.From, hist[i-1].Active)
		}
	}
	if count["a"] != each || count["b"] != each {
		t.Fatalf("changes per replica %v", count)
	}
	if a.reg.Stats.Retries.Load()+b.reg.Stats.Retries.Load() == 0 {
		t.Log("no conflict happened this run (the CAS was not exercised under contention)")
	}
}

func TestInCanaryShare(t *testing.T) {
	for _, share := range []float64{0.01, 0.1, 0.5, 0.9} {
		in := 0
		for i := range 10_000 {
			if InCanary("v1", fmt.Sprintf("SKU-%d", i), share) {
				in++
			}
		}
		got := float64(in) / 10_000
		// 10k Bernoulli draws: the standard deviation is at most 0.005; 5 of them is loose.
		if math.Abs(got-share) > 0.025 {
			t.Errorf("share %v: %v of units in the canary", share, got)
		}
	}
	if InCanary("v1", "x", 0) || !InCanary("v1", "x", 1) {
		t.Error("share 0 or 1 not honoured")
	}
	if InCanary("v1", "SKU-7", 0.3) != InCanary("v1", "SKU-7", 0.3) {
		t.Error("not deterministic")
	}
}

func TestFollowSeesRollbackOnAnotherReplica(t *testing.T) {
	n := natstest.JetStream(t)
	_, js1 := natstest.Connect(t, n.URL())
	_, js2 := natstest.Connect(t, n.URL())
	a, b := open(t, js1, nil), open(t, js2, nil)
	ctx := context.Background()
	v1, _ := a.reg.Store(ctx, ruleSet(1), "a")
	v2, _ := a.reg.Store(ctx, ruleSet(2), "a")
	if _, err := a.reg.Activate(ctx, v1, "a", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := a.reg.Activate(ctx, v2, "a", ""); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var live *Live
	stop, err := b.reg.Follow(func(l *Live) { mu.Lock(); live = l; mu.Unlock() })
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	get := func() *Live { mu.Lock(); defer mu.Unlock(); return live }
	testutil.WaitFor(t, 10*time.Second, "replica b compiling v2", func() bool {
		l := get()
		return l != nil && l.Active != nil && l.Active.Version() == v2
	})
	rb, err := a.reg.Rollback(ctx, "a", "v2 misbehaves")
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "replica b rolled back to v1", func() bool {
		l := get()
		return l.Active.Version() == v1 && l.Change.Seq == rb.Seq
	})
	// The fence: a record of replica b decided under v2 is refused now.
	rec := audit.Record{DecisionID: fmt.Sprintf("%032x", 1), Event: audit.EventDecided, Outcome: audit.OutcomeFired, Mode: audit.ModeActive,
		RuleSet: audit.RuleSetRef{Version: v2, ChangeSeq: rb.Seq - 1}}
	if _, err := b.log.Publish(ctx, rec, rb.Seq-1); !errors.Is(err, audit.ErrFenced) {
		t.Fatalf("record under the rolled-back version: %v, want ErrFenced", err)
	}
	rec.RuleSet = audit.RuleSetRef{Version: v1, ChangeSeq: rb.Seq}
	if _, err := b.log.Publish(ctx, rec, get().Change.Seq); err != nil {
		t.Fatal(err)
	}
}

func TestCorruptVersionKeepsLive(t *testing.T) {
	var logs strings.Builder
	var lmu sync.Mutex
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	e := open(t, js, slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		lmu.Lock()
		defer lmu.Unlock()
		return logs.Write(p)
	}), nil)))
	ctx := context.Background()
	v1, _ := e.reg.Store(ctx, ruleSet(1), "a")
	v2, _ := e.reg.Store(ctx, ruleSet(2), "a")
	if _, err := e.reg.Activate(ctx, v1, "a", ""); err != nil {
		t.Fatal(err)
	}
	// Someone writes a key the registry never would: content that is not its version.
	bad := strings.Repeat("b", 64)
	val, _ := json.Marshal(stored{Meta: Meta{Version: bad, By: "mallory"}, Content: []byte("name: [unclosed")})
	if _, err := e.reg.kv.Create(ctx, key(bad), val); err != nil {
		t.Fatal(err)
	}
	if _, err := e.reg.Activate(ctx, bad, "a", ""); err == nil {
		t.Fatal("activating a corrupt version was accepted")
	}
	var mu sync.Mutex
	var lives []*Live
	stop, err := e.reg.Follow(func(l *Live) { mu.Lock(); lives = append(lives, l); mu.Unlock() })
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(lives) }
	testutil.WaitFor(t, 10*time.Second, "the first Live", func() bool { return count() == 1 })
	// A change naming it anyway (another tool wrote the log): the replica keeps v1.
	cur, _ := e.log.Current(ctx)
	if _, err := e.log.RecordChange(ctx, audit.Change{Op: audit.OpActivate, Active: bad, By: "mallory"}, cur.Seq); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the load failure counted", func() bool { return e.reg.Stats.LoadFailures.Load() == 1 })
	lmu.Lock()
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "version="+bad) {
		t.Errorf("load failure not logged at ERROR with the version:\n%s", logs.String())
	}
	lmu.Unlock()
	if count() != 1 {
		t.Fatalf("a corrupt version replaced Live")
	}
	if _, err := e.reg.Activate(ctx, v2, "a", "fix"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "v2 live", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(lives) == 2 && lives[1].Active.Version() == v2 && lives[1].Change.Previous[0] == bad
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// On an R3 cluster, a rollback made through one server reaches a replica connected to another.
func TestFollowRollbackClusterR3(t *testing.T) {
	nodes := natstest.Cluster(t, 3)
	_, js1 := natstest.Connect(t, nodes[0].URL())
	_, js2 := natstest.Connect(t, nodes[2].URL())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	open3 := func(js jetstream.JetStream) env {
		l, err := audit.Open(ctx, js, audit.Config{Prefix: "gemba", Replicas: 3}, nil)
		if err != nil {
			t.Fatal(err)
		}
		r, err := Open(ctx, js, Config{Replicas: 3}, l, nil)
		if err != nil {
			t.Fatal(err)
		}
		return env{js, l, r}
	}
	a, b := open3(js1), open3(js2)
	// A new R3 bucket answers once its leader is elected ("no response from stream" until then):
	// the first write is tried again, as a hub's would be.
	var v1 string
	natstest.Opening(t, "the first rule set stored", func() (err error) {
		v1, err = a.reg.Store(ctx, ruleSet(1), "a")
		return err
	})
	v2, _ := a.reg.Store(ctx, ruleSet(2), "a")
	for _, v := range []string{v1, v2} {
		if _, err := a.reg.Activate(ctx, v, "a", "up"); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	var live *Live
	stop, err := b.reg.Follow(func(l *Live) { mu.Lock(); live = l; mu.Unlock() })
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	active := func() string {
		mu.Lock()
		defer mu.Unlock()
		if live == nil || live.Active == nil {
			return ""
		}
		return live.Active.Version()
	}
	testutil.WaitFor(t, 20*time.Second, "replica b on v2", func() bool { return active() == v2 })
	if _, err := a.reg.Rollback(ctx, "a", "down"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, "replica b back on v1", func() bool { return active() == v1 })
}

func TestStoreNeverOverwrites(t *testing.T) {
	e, _ := newEnv(t)
	ctx := context.Background()
	v, err := e.reg.Store(ctx, ruleSet(1), "a")
	if err != nil {
		t.Fatal(err)
	}
	before, err := e.reg.kv.Get(ctx, key(v))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.reg.Store(ctx, append([]byte("label: other\n"), ruleSet(1)...), "b"); err != nil {
		t.Fatal(err)
	}
	after, err := e.reg.kv.Get(ctx, key(v))
	if err != nil || after.Revision() != before.Revision() || string(after.Value()) != string(before.Value()) {
		t.Fatalf("stored version rewritten: revision %d → %d (%v)", before.Revision(), after.Revision(), err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []struct {
		yaml string
		bad  bool
	}{{"{}", false}, {"{bucket: GEMBA_RULES, replicas: 3}", false}, {"{bucket: a.b}", true}, {"{replicas: 2}", true}} {
		var cfg Config
		err := config.NewDecoder(config.WithoutEnv()).Unmarshal([]byte(c.yaml), &cfg)
		if (err != nil) != c.bad {
			t.Errorf("config %s: %v", c.yaml, err)
		}
	}
}
