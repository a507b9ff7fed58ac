package guard

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// A ledger is the value of a cooldown or daily-cap key: the decisions that consumed it, each by id.
// Keeping ids (not a bare counter) makes reserving idempotent: a retried write, a replica taking
// over a crashed one's decision, or a second Check never counts one decision twice; and Release
// gives back exactly what one decision took.
type ledger struct {
	Entries []entry `json:"entries"`
}

type entry struct {
	ID string    `json:"id"`
	At time.Time `json:"at"`
	W  float64   `json:"w,omitempty"` // budget weight
}

func decodeLedger(key string, b []byte) (ledger, error) {
	var l ledger
	if b == nil {
		return l, nil
	}
	if err := json.Unmarshal(b, &l); err != nil {
		// Never overwrite what cannot be read: a guardrail's memory would be lost.
		return l, fmt.Errorf("key %s: undecodable ledger: %w", key, err)
	}
	return l, nil
}

func (l *ledger) has(id string) bool {
	return slices.ContainsFunc(l.Entries, func(e entry) bool { return e.ID == id })
}

func (l *ledger) budget() float64 {
	var s float64
	for _, e := range l.Entries {
		s += e.W
	}
	return s
}

// reserveDay counts one promotion into a daily ledger if the caps allow it. The assessments say
// what the day holds with this promotion counted, against the limits.
func (g *Guard) reserveDay(ctx context.Context, key, id string, at time.Time, w float64, caps Caps, gCount, gBudget, scope string) ([]Assessment, bool, error) {
	var as []Assessment
	var ok bool
	_, err := g.modify(ctx, key, func(cur []byte) ([]byte, bool, error) {
		l, err := decodeLedger(key, cur)
		if err != nil {
			return nil, false, err
		}
		count, budget := float64(len(l.Entries)), l.budget()
		already := l.has(id)
		if !already {
			count, budget = count+1, budget+w
		}
		full := !already && len(l.Entries) >= g.cfg.MaxEntries
		cnt := Assessment{Guardrail: gCount, Value: count, Limit: float64(caps.MaxPromotions),
			Passed: (caps.MaxPromotions == 0 || count <= float64(caps.MaxPromotions)) && !full,
			Detail: "promotions on " + scope}
		if full {
			cnt.Limit, cnt.Detail = float64(g.cfg.MaxEntries), cnt.Detail+": the day's ledger is full (max_entries)"
		}
		bud := Assessment{Guardrail: gBudget, Value: budget, Limit: caps.MaxBudget,
			Passed: caps.MaxBudget == 0 || budget <= caps.MaxBudget+1e-9,
			Detail: fmt.Sprintf("%s weight %g on %s", g.cfg.BudgetWeight, w, scope)}
		as = []Assessment{cnt, bud}
		ok = cnt.Passed && bud.Passed
		if !ok || already {
			return nil, false, nil
		}
		l.Entries = append(l.Entries, entry{ID: id, At: at.UTC(), W: w})
		b, err := json.Marshal(l)
		return b, true, err
	})
	return as, ok, err
}

// reserveCooldown records a promotion of one SKU on one channel if none other lies within the
// cooldown of its time (either side: proposals may arrive out of order within max_skew).
func (g *Guard) reserveCooldown(ctx context.Context, key, id string, at time.Time) (Assessment, bool, error) {
	cd := g.cfg.Cooldown
	var a Assessment
	_, err := g.modify(ctx, key, func(cur []byte) ([]byte, bool, error) {
		l, err := decodeLedger(key, cur)
		if err != nil {
			return nil, false, err
		}
		a = Assessment{Guardrail: GCooldown, Passed: true, Limit: cd.Seconds(), Value: -1,
			Detail: "seconds since the nearest other promotion of this SKU on this channel (-1: none)"}
		nearest := time.Duration(-1)
		for _, e := range l.Entries {
			if e.ID == id {
				continue
			}
			d := at.Sub(e.At).Abs()
			if nearest < 0 || d < nearest {
				nearest = d
			}
		}
		if nearest >= 0 {
			a.Value = nearest.Seconds()
			a.Passed = nearest >= cd
		}
		if !a.Passed || l.has(id) {
			return nil, false, nil
		}
		// Forget what can no longer block anything: promotions more than a cooldown (and twice the
		// skew, for proposals that arrive late) before the guard's clock.
		horizon := g.cfg.now().Add(-cd - 2*g.cfg.MaxSkew)
		l.Entries = slices.DeleteFunc(l.Entries, func(e entry) bool { return e.At.Before(horizon) })
		l.Entries = append(l.Entries, entry{ID: id, At: at.UTC()})
		b, err := json.Marshal(l)
		return b, true, err
	})
	return a, a.Passed, err
}

// release removes one decision from a ledger (a no-op when it is not there).
func (g *Guard) release(ctx context.Context, key, id string) error {
	_, err := g.modify(ctx, key, func(cur []byte) ([]byte, bool, error) {
		if cur == nil {
			return nil, false, nil
		}
		l, err := decodeLedger(key, cur)
		if err != nil {
			return nil, false, err
		}
		if !l.has(id) {
			return nil, false, nil
		}
		l.Entries = slices.DeleteFunc(l.Entries, func(e entry) bool { return e.ID == id })
		b, err := json.Marshal(l)
		return b, true, err
	})
	return err
}
