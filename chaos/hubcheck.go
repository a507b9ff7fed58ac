package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/chaos/verdicts"
	"github.com/gemba-io/gemba/hub/act"
	"github.com/gemba-io/gemba/hub/audit"
)

// hubReadiness reports whether the replica at base answers /readyz with 200.
func hubReadiness(base string) (bool, error) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(base + "/readyz")
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK, nil
}

// HubResult is what one hub scenario found: what the guard allowed, what the decision log, the
// ACTIONS stream and the webhook receiver hold, and every breach.
type HubResult struct {
	Scenario  string
	Crossings int // live SKUs reported made (one decision each)
	Replayed  int // SKUs in the historical backlog
	// ReplayDecided counts replayed SKUs with a record on the log (deferred: their inputs are
	// historical; none may act).
	ReplayDecided int
	Decided       int // crossings with a decision on the log
	Allowed       int // decisions the guard allowed
	Fired         int // fired records on the decision log
	Actions       int // start messages on ACTIONS
	Posted        int // webhook-ids the receiver accepted
	Reposted      int // accepted calls beyond the first per webhook-id (at-least-once; the id dedups)
	Refused       int // calls the receiver refused while down
	Cap           int
	Versions      map[string]int // fired decisions per rule set version
	Notes         []string
	Breaches      []string
	Duration      time.Duration
	Err           error
}

// Pass reports whether the scenario held: no breach and no error.
func (r HubResult) Pass() bool { return r.Err == nil && len(r.Breaches) == 0 }

// Line is the one-line summary.
func (r HubResult) Line() string {
	verdict := "PASS"
	switch {
	case r.Err != nil:
		verdict = "FAIL: " + r.Err.Error()
	case len(r.Breaches) > 0:
		b := r.Breaches
		if len(b) > 5 {
			b = append(b[:5:5], fmt.Sprintf("and %d more", len(r.Breaches)-5))
		}
		verdict = fmt.Sprintf("FAIL: %d breaches: %s", len(r.Breaches), strings.Join(b, "; "))
	}
	var vs []string
	for v, n := range r.Versions {
		vs = append(vs, fmt.Sprintf("%s:%d", v[:min(8, len(v))], n))
	}
	sort.Strings(vs)
	return fmt.Sprintf("%-18s crossings %d (decided %d), replayed %d (decided %d, none may act); allowed %d (cap %d), fired %d, actions %d, webhook ids %d (reposted %d, refused while down %d); versions %s; %s: %s",
		r.Scenario, r.Crossings, r.Decided, r.Replayed, r.ReplayDecided, r.Allowed, r.Cap, r.Fired, r.Actions, r.Posted, r.Reposted, r.Refused,
		strings.Join(vs, ","), r.Duration.Round(time.Second), verdict)
}

// ledger is what the hub's stores say about the decisions.
type ledger struct {
	allowed  map[string]bool           // guard verdict allow, by decision id
	decided  map[string]int            // decided records (active or canary) per SKU
	deferred map[string]int            // deferred records (inputs not usable) per SKU
	fired    map[string][]audit.Record // fired decided records per decision id
	actions  map[string][]act.Message  // start messages on ACTIONS per decision id
	changes  map[uint64]audit.Change   // rules changes by stream sequence
	posted   map[string]int
	refused  int
	badSig   int
	versions map[string]int
}

// readStream calls fn for every message of stream whose subject starts with prefix.
func readStream(ctx context.Context, js jetstream.JetStream, name, prefix string, fn func(subject string, seq uint64, data []byte)) error {
	s, err := js.Stream(ctx, name)
	if err != nil {
		return fmt.Errorf("stream %s: %w", name, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return fmt.Errorf("stream %s: %w", name, err)
	}
	if info.State.Msgs == 0 {
		return nil
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{prefix + ">"}})
	if err != nil {
		return err
	}
	last := info.State.LastSeq
	for {
		batch, err := cons.FetchNoWait(1000)
		if err != nil {
			return err
		}
		n := 0
		var seq uint64
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				return err
			}
			seq = md.Sequence.Stream
			fn(m.Subject(), seq, m.Data())
		}
		if batch.Error() != nil && !errors.Is(batch.Error(), jetstream.ErrNoMessages) {
			return batch.Error()
		}
		if seq >= last {
			return nil
		}
		if n == 0 {
			// Nothing more matches the filter up to the end of the stream (FetchNoWait returns at once).
			md, err := s.Info(ctx)
			if err != nil || md.State.LastSeq <= last {
				return err
			}
			last = md.State.LastSeq
		}
	}
}

func (e *HubEnv) read(ctx context.Context) (*ledger, error) {
	l := &ledger{decided: map[string]int{}, deferred: map[string]int{}, fired: map[string][]audit.Record{},
		actions: map[string][]act.Message{}, changes: map[uint64]audit.Change{}, versions: map[string]int{}}
	allowed, err := verdicts.Allowed(ctx, e.js)
	if err != nil {
		return nil, err
	}
	l.allowed = allowed
	var bad error
	err = readStream(ctx, e.js, audit.DefaultStream, "gemba.decisions.", func(subject string, seq uint64, data []byte) {
		if subject == "gemba.decisions.rules" {
			var c audit.Change
			if err := json.Unmarshal(data, &c); err != nil {
				bad = fmt.Errorf("rules change #%d: %w", seq, err)
			}
			l.changes[seq] = c
			return
		}
		var r audit.Record
		if err := json.Unmarshal(data, &r); err != nil {
			bad = fmt.Errorf("decision record #%d: %w", seq, err)
			return
		}
		if r.Mode == audit.ModeShadow {
			return
		}
		switch r.Event {
		case audit.EventDeferred:
			l.deferred[r.SKU]++
			return
		case audit.EventDecided:
		default:
			return
		}
		l.decided[r.SKU]++
		if r.Outcome == audit.OutcomeFired {
			l.fired[r.DecisionID] = append(l.fired[r.DecisionID], r)
			l.versions[r.RuleSet.Version]++
		}
	})
	if err != nil {
		return nil, err
	}
	if bad != nil {
		return nil, bad
	}
	err = readStream(ctx, e.js, "ACTIONS", "gemba.actions.", func(_ string, _ uint64, data []byte) {
		var m act.Message
		if json.Unmarshal(data, &m) == nil && m.Event == act.EventStart {
			l.actions[m.DecisionID] = append(l.actions[m.DecisionID], m)
		}
	})
	if err != nil {
		return nil, err
	}
	l.posted, l.refused, l.badSig = e.hook.snapshot()
	return l, nil
}

// complete reports whether every crossing is decided and every allowed decision recorded,
// published and posted: what the scenario waits for before judging.
func (e *HubEnv) complete(l *ledger) bool {
	undecided, unfinished := e.missing(l)
	return undecided == 0 && unfinished == 0
}

// missing counts the crossings without a decision and the allowed decisions not yet recorded,
// published and posted.
func (e *HubEnv) missing(l *ledger) (undecided, unfinished int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, s := range e.live {
		if l.decided[s] == 0 {
			undecided++
		}
	}
	for id := range l.allowed {
		if len(l.fired[id]) == 0 || len(l.actions[id]) == 0 || l.posted[id] == 0 {
			unfinished++
		}
	}
	return undecided, unfinished
}

// judge lists every breach of the hub's promises in l.
func (e *HubEnv) judge(l *ledger, r *HubResult) {
	e.mu.Lock()
	live, hist := append([]string(nil), e.live...), append([]string(nil), e.hist...)
	e.mu.Unlock()
	add := func(format string, args ...any) { r.Breaches = append(r.Breaches, fmt.Sprintf(format, args...)) }
	r.Crossings, r.Replayed, r.Allowed, r.Cap = len(live), len(hist), len(l.allowed), e.cap
	r.Versions = l.versions
	// None lost: each live crossing decided; each allowed decision recorded, published, posted.
	for _, s := range live {
		if l.decided[s] > 0 {
			r.Decided++
		} else {
			add("lost: %s reported made, no decision", s)
		}
	}
	for id := range l.allowed {
		if len(l.fired[id]) == 0 || len(l.actions[id]) == 0 || l.posted[id] == 0 {
			add("lost: %s allowed, %d fired records, %d actions, %d webhook ids", id, len(l.fired[id]), len(l.actions[id]), l.posted[id])
		}
	}
	// Exactly once: one fired record and one action per decision, none that was not allowed.
	for id, recs := range l.fired {
		r.Fired++
		if len(recs) > 1 {
			add("double: %s has %d fired records", id, len(recs))
		}
		if !l.allowed[id] {
			add("phantom: %s fired, never allowed", id)
		}
	}
	perDay := map[string]int{}
	perUnit := map[string]int{}
	for id, ms := range l.actions {
		r.Actions++
		if len(ms) > 1 {
			add("double: %s published %d times", id, len(ms))
		}
		if !l.allowed[id] {
			add("phantom: %s published, never allowed", id)
		}
		m := ms[0]
		// No guardrail breached: discount, cooldown (one promotion per SKU × channel), daily cap.
		if m.Discount > 20 {
			add("guardrail max_discount: %s acted at %g %%", id, m.Discount)
		}
		perUnit[m.SKU+"/"+m.Channel]++
		perDay[m.Start.UTC().Format(time.DateOnly)]++
	}
	for u, n := range perUnit {
		if n > 1 {
			add("guardrail cooldown: %s promoted %d times within the cooldown", u, n)
		}
	}
	for d, n := range perDay {
		if n > e.cap {
			add("guardrail daily cap: %d promotions acted on %s, cap %d", n, d, e.cap)
		}
	}
	for id, n := range l.posted {
		r.Posted++
		r.Reposted += n - 1
		if !l.allowed[strings.TrimSuffix(id, ":end")] {
			add("phantom: webhook received %s, never allowed", id)
		}
	}
	r.Refused = l.refused
	if l.badSig > 0 {
		add("%d webhook calls with a bad signature", l.badSig)
	}
	// Nothing acted on historical data.
	histSKU := map[string]bool{}
	for _, s := range hist {
		histSKU[s] = true
		if l.decided[s]+l.deferred[s] > 0 {
			r.ReplayDecided++
		}
	}
	for id, recs := range l.fired {
		rec := recs[0]
		if histSKU[rec.SKU] {
			add("historical: %s fired for %s, which only the replayed backlog reported", id, rec.SKU)
		}
		for _, in := range rec.Inputs {
			if in.Historical {
				add("historical: %s fired reading %s[%s], a historical value", id, in.Name, in.Key)
			}
		}
		// A rollback fences the version rolled back from: every fired decision was taken under the
		// version that was active at the change it records.
		if c, ok := l.changes[rec.RuleSet.ChangeSeq]; ok && rec.Mode == audit.ModeActive && c.Active != rec.RuleSet.Version {
			add("fence: %s fired under %s at change #%d, which made %s active", id, rec.RuleSet.Version, rec.RuleSet.ChangeSeq, c.Active)
		}
	}
}
