package decide

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/decide/guard"
	"github.com/gemba-io/gemba/internal/testutil"
)

// Rules changes under load: the engine decides for 30 SKUs whose inputs change all the time while
// v2 is activated and then rolled back to v1. In the decision log's order, no decision after a
// change's record carries a version that change retired.
func TestRollbackUnderLoad(t *testing.T) {
	const skus = 30
	var g strings.Builder
	g.WriteString("version: load\nsites: [{id: s1}]\nlines: [{id: l1, site: s1}]\nchannels: [{id: web}]\nskus:\n")
	for i := range skus {
		fmt.Fprintf(&g, "  - {id: S%02d}\n", i)
	}
	g.WriteString("edges:\n")
	for i := range skus {
		fmt.Fprintf(&g, "  - {kind: produces, from: l1, to: S%02d}\n  - {kind: sold_via, from: S%02d, to: web}\n", i, i)
	}
	r := newRigOn(t, g.String(), func(c *guard.Config) { c.Cooldown, c.Approval.Above = 0, 0 }, func(c *Config) { c.Bucket = time.Second })
	rules := func(discount int) string {
		return fmt.Sprintf(`name: load
hit_policy: first
rules:
  - name: promote
    when: has(features.units) && features.units.value > 0.0
    promote: {channels: [web], discount: %d, duration: 1h}
`, discount)
	}
	v1 := r.activate(rules(10))
	v2, err := r.reg.Store(r.ctx, []byte(rules(5)), "alice")
	if err != nil {
		t.Fatal(err)
	}

	// The load: every SKU's units change continuously, on the rig's real clock.
	ctx, cancel := context.WithCancel(r.ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			r.nowMu.Lock()
			r.now = time.Now().UTC()
			r.nowMu.Unlock()
			sku := fmt.Sprintf("S%02d", i%skus)
			r.state.setFeature("units", sku, float64(1+i%7), r.clock(), nil)
			r.eng.FeatureChanged("units", sku)
			time.Sleep(time.Millisecond) // pacing the load, not synchronisation
		}
	})
	decided := func(v string) func() bool {
		return func() bool {
			return len(r.records(audit.Filter{Outcome: audit.OutcomeFired})) > 0 && r.eng.Live().Active.Version() == v
		}
	}
	testutil.WaitFor(t, 20*time.Second, "decisions under v1", decided(v1))
	if _, err := r.reg.Activate(r.ctx, v2, "alice", "cheaper"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, "v2 live", decided(v2))
	n := r.eng.Metrics.Decisions.Load()
	testutil.WaitFor(t, 20*time.Second, "decisions under v2", func() bool { return r.eng.Metrics.Decisions.Load() > n+20 })
	if _, err := r.reg.Rollback(r.ctx, "alice", "v2 was wrong"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, "v1 live again", decided(v1))
	n = r.eng.Metrics.Decisions.Load()
	testutil.WaitFor(t, 20*time.Second, "decisions after the rollback", func() bool { return r.eng.Metrics.Decisions.Load() > n+20 })
	cancel()
	wg.Wait()

	// The whole log in stream order: changes and decisions.
	s, err := r.js.Stream(r.ctx, "GEMBA_DECISIONS")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(r.ctx)
	if err != nil {
		t.Fatal(err)
	}
	live, changes, counts := "", 0, map[string]int{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(r.ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		if m.Subject == "gemba.decisions.rules" {
			var c audit.Change
			if err := json.Unmarshal(m.Data, &c); err != nil {
				t.Fatal(err)
			}
			live = c.Active
			changes++
			continue
		}
		var rec audit.Record
		if err := json.Unmarshal(m.Data, &rec); err != nil {
			t.Fatal(err)
		}
		if rec.Event != audit.EventDecided {
			continue
		}
		counts[rec.RuleSet.Version]++
		if rec.RuleSet.Version != live {
			t.Errorf("seq %d: a decision of %s after the change to %s", seq, rec.RuleSet.Version[:8], live[:8])
		}
	}
	if changes != 3 || counts[v1] == 0 || counts[v2] == 0 {
		t.Errorf("%d changes, decisions per version %v: the load did not cover both versions", changes, counts)
	}
	t.Logf("decisions: v1 %d, v2 %d; fenced %d", counts[v1], counts[v2], r.eng.Metrics.Fenced.Load())
}
