package features

import (
	"slices"
	"time"
)

// Signals matched by a glob can be unbounded: a batch or job id in an MQTT topic, an OPC UA
// browse that renames. Two bounds keep the engine's memory and checkpoints from growing with
// them: a series whose signal sent nothing for its rule's retention is dropped (expire), and no
// series is created beyond Options.MaxSeries (refused).

// seriesLimit is what the engine counts about its bounds.
type seriesLimit struct {
	dropped, refused int64
	warnedAt         time.Time // last WARN about the series limit
	since            int64     // samples refused since then
}

// refusedWarnEvery is how often at most the series limit is warned about.
const refusedWarnEvery = time.Minute

// refused counts a sample of a signal refused a series at the limit, and warns at most once per
// refusedWarnEvery.
func (e *Engine) refused(sig string, now time.Time, b *batch) {
	b.limited++
	e.limit.refused++
	e.limit.since++
	if !e.limit.warnedAt.IsZero() && now.Sub(e.limit.warnedAt) < refusedWarnEvery {
		return
	}
	e.log.Warn("feature series limit reached: samples of new signals are forwarded raw, not folded (agent.max_feature_series)",
		"signal", sig, "max_series", e.opts.MaxSeries, "samples", e.limit.since)
	e.limit.warnedAt, e.limit.since = now, 0
}

// expire drops the series whose signal sent nothing for its rule's retention, after closing their
// windows as the idle timeout does. A dropped signal that comes back gets a new series (a cold
// start: a counter's first increment needs a new baseline).
func (e *Engine) expire(now time.Time, b *batch) {
	n := 0
	for _, s := range e.series {
		if s.r.retention <= 0 || now.Sub(s.lastArrival) < s.r.retention {
			e.series[n] = s
			n++
			continue
		}
		if s.HasWM && s.open() {
			s.closeSilent(e, now, b)
		}
		e.drop(s, now)
	}
	if n == len(e.series) {
		return
	}
	dropped := len(e.series) - n
	clear(e.series[n:])
	e.series = e.series[:n]
	e.limit.dropped += int64(dropped)
	e.m.dropped.Add(float64(dropped))
	e.m.seriesN.Set(float64(n))
}

// drop forgets s: its entry (kept, pending, when the signal is also a group-by signal) and its
// place among its group-by track's dependents.
func (e *Engine) drop(s *series, now time.Time) {
	e.log.Debug("series dropped after its retention", "signal", s.sig, "silent", now.Sub(s.lastArrival).Round(time.Second))
	if t := s.track; t != nil {
		t.deps = slices.DeleteFunc(t.deps, func(d *series) bool { return d == s })
	}
	en := e.entries[s.sig]
	if en == nil || en.s != s {
		return
	}
	if en.t == nil {
		delete(e.entries, s.sig)
		return
	}
	en.s, en.pending = nil, s.r
}
