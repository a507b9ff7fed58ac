package quality

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// Quality is the monitoring state of one feature × key, as rules and the API read it.
type Quality struct {
	Feature string `json:"feature"`
	Key     string `json:"key"`
	// Stale: the newest value is older than the max age (the threshold's, else the feature's).
	Stale  bool      `json:"stale"`
	Newest time.Time `json:"newest,omitzero"`
	AgeS   float64   `json:"age_s"`
	// Gap: the agent stream that fed the newest value has sequences missing longer than gap_after.
	Gap     bool   `json:"gap"`
	Missing uint64 `json:"missing"`
	// BadShare of the current window (partial or non-finite values, bad samples); Bad when above threshold.
	BadShare float64 `json:"bad_share"`
	Bad      bool    `json:"bad"`
	// PSI and KS (D and its p-value) of the current window against the reference.
	PSI float64 `json:"psi"`
	KS  float64 `json:"ks"`
	KSP float64 `json:"ks_p"`
	// Drifting: the values are not their reference's (PSI, KS), or they are stuck (a dead sensor's
	// values are no more usable than drifted ones: rules and the guard reading drifting hold them).
	Drifting bool `json:"drifting"`
	// Stuck: the value has not changed (to 1e-9 relative) for stuck_after of event time, whatever the
	// reference window holds.
	Stuck bool `json:"stuck"`
	// Since is when the earliest breach still in force began (zero when none).
	Since  time.Time `json:"since,omitzero"`
	Agent  string    `json:"agent,omitempty"`
	Values uint64    `json:"values"`
	// Reasons says what is wrong, in words (empty when nothing).
	Reasons []string `json:"reasons,omitempty"`
}

// OK reports whether nothing is in breach.
func (q *Quality) OK() bool { return !q.Stale && !q.Gap && !q.Bad && !q.Drifting }

// Status returns the quality of feature × key; false when the monitor has no value for it.
func (m *Monitor) Status(feature, key string) (Quality, bool) {
	now := m.now().UTC()
	m.mu.RLock()
	defer m.mu.RUnlock()
	k := m.keys[feature][key]
	if k == nil {
		return Quality{}, false
	}
	return m.status(k, now), true
}

// Lookup is Status with an error saying why there is none.
func (m *Monitor) Lookup(feature, key string) (Quality, error) {
	if _, ok := m.defs[feature]; !ok {
		return Quality{}, fmt.Errorf("quality: unknown feature %q (monitored: %s)", feature, strings.Join(m.names, ", "))
	}
	q, ok := m.Status(feature, key)
	if !ok {
		return Quality{}, fmt.Errorf("quality: no value of feature %q for key %q observed within the monitor log's retention (%s)", feature, key, m.cfg.Retention())
	}
	return q, nil
}

// List returns the quality of every key of feature (every feature when empty), sorted.
func (m *Monitor) List(feature string) []Quality {
	now := m.now().UTC()
	m.mu.RLock()
	out := make([]Quality, 0, m.nkeys)
	for k := range m.all() {
		if feature == "" || k.feature == feature {
			out = append(out, m.status(k, now))
		}
	}
	m.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Feature != out[j].Feature {
			return out[i].Feature < out[j].Feature
		}
		return out[i].Key < out[j].Key
	})
	return out
}

// Page returns up to limit keys of feature (every feature when empty) after afterFeature and
// afterKey, by feature and key, only those in breach when breach is set: List's, but building the
// status of the keys it returns only (and of those it passes over as not in breach), not of every key.
func (m *Monitor) Page(feature, afterFeature, afterKey string, breach bool, limit int) []Quality {
	now := m.now().UTC()
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []Quality
	var ks []*keyState
	for _, f := range m.names { // sorted
		if feature != "" && f != feature || f < afterFeature {
			continue
		}
		ks = ks[:0]
		for key, k := range m.keys[f] {
			if f > afterFeature || key > afterKey {
				ks = append(ks, k)
			}
		}
		sort.Slice(ks, func(i, j int) bool { return ks[i].key < ks[j].key })
		for _, k := range ks {
			q := m.status(k, now)
			if breach && q.OK() {
				continue
			}
			if out = append(out, q); len(out) == limit {
				return out
			}
		}
	}
	return out
}

// status builds a Quality. Called with m.mu held.
func (m *Monitor) status(k *keyState, now time.Time) Quality {
	q := Quality{Feature: k.feature, Key: k.key, Newest: k.newest, BadShare: num(k.badShare), Bad: k.bad, PSI: num(k.psi),
		KS: num(k.ks), KSP: num(k.ksP), Drifting: k.drifting || k.stuck, Stuck: k.stuck, Agent: k.feeder.Agent, Values: k.count}
	if !k.newest.IsZero() {
		q.AgeS = now.Sub(k.newest).Seconds()
		q.Stale = k.maxAge > 0 && now.Sub(k.newest) > k.maxAge
	}
	var since []time.Time
	if q.Stale {
		since = append(since, k.newest.Add(k.maxAge))
		q.Reasons = append(q.Reasons, fmt.Sprintf("stale: newest value %.0fs old, max age %s", q.AgeS, k.maxAge))
	}
	if t := m.streams[k.feeder]; t != nil {
		hs, missing := t.holes(now, m.cfg.GapAfter)
		if len(hs) > 0 {
			q.Gap, q.Missing = true, missing
			since = append(since, hs[0].Since)
			q.Reasons = append(q.Reasons, fmt.Sprintf("gap: %d records of %s/%s missing (first %d-%d)", missing, k.feeder.Agent,
				k.feeder.Stream, hs[0].From, hs[0].To))
		}
	}
	if k.bad {
		since = append(since, k.badSince)
		q.Reasons = append(q.Reasons, fmt.Sprintf("bad quality: share %.3f, threshold %g", q.BadShare, k.th.BadShare))
	}
	if k.drifting {
		since = append(since, k.driftSince)
		if k.sameWindows {
			q.Reasons = append(q.Reasons, fmt.Sprintf("drifting: stuck, the current and the reference window hold one value only (%d and %d values)", k.curN, k.refN))
		} else {
			q.Reasons = append(q.Reasons, fmt.Sprintf("drifting: PSI %.3f (threshold %g), KS D %.3f p %.2g", q.PSI, k.th.PSI, q.KS, q.KSP))
		}
	}
	if k.stuck {
		since = append(since, k.stuckSince)
		q.Reasons = append(q.Reasons, fmt.Sprintf("stuck: value %g unchanged since %s (%s of event time, %d values; stuck_after %s)",
			k.runV, k.runFrom.Format(time.RFC3339), k.runTo.Sub(k.runFrom), k.runN, k.stuckAfter))
	}
	for _, s := range since {
		if q.Since.IsZero() || s.Before(q.Since) {
			q.Since = s
		}
	}
	return q
}

// StreamGaps is the sequence state of one agent stream in one incarnation.
type StreamGaps struct {
	Agent       string `json:"agent"`
	Stream      string `json:"stream"`
	Incarnation string `json:"incarnation"`
	// Missing counts the records in holes older than gap_after, plus those given up.
	Missing uint64 `json:"missing"`
	Holes   []Hole `json:"holes,omitempty"`
	// Jumps counts the sequence jumps of an unclean agent stop (not lost records).
	Jumps int `json:"jumps"`
}

// Gaps returns every agent stream's gaps (of agent when not empty), sorted.
func (m *Monitor) Gaps(agent string) []StreamGaps {
	now := m.now().UTC()
	m.mu.RLock()
	var out []StreamGaps
	for ref, t := range m.streams {
		if agent != "" && ref.Agent != agent {
			continue
		}
		hs, missing := t.holes(now, m.cfg.GapAfter)
		out = append(out, StreamGaps{Agent: ref.Agent, Stream: ref.Stream.String(), Incarnation: ref.Incarnation,
			Missing: missing + t.lost, Holes: hs, Jumps: t.jumps})
	}
	m.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Agent != b.Agent {
			return a.Agent < b.Agent
		}
		if a.Stream != b.Stream {
			return a.Stream < b.Stream
		}
		return a.Incarnation < b.Incarnation
	})
	return out
}
