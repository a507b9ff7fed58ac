package features

import (
	"bytes"
	"cmp"
	"encoding/gob"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/DataDog/sketches-go/ddsketch"
	"github.com/DataDog/sketches-go/ddsketch/store"
)

// Checkpoints hold every series' open windows (gauge panes with their sketches, counter and state
// points), watermarks and close positions, and the group-by tracks, gob-encoded under
// CheckpointKey. Clean is true only in the checkpoint written by Close; the engine rewrites the
// checkpoint with Clean false as soon as it has restored it, so a crash at any later point is
// recognised on the next start.

const checkpointVersion = 1

type checkpoint struct {
	V     int
	Clean bool
	Saved int64 // wall clock (Unix ns) when written: the downtime of a clean stop
	// Boot and Since are the machine's boot and the time since it (ns) when written ("" when not
	// known, and in checkpoints of earlier versions): see restart.
	Boot   string
	Since  int64
	Series []ckSeries
	Tracks []ckTrack
}

type ckSeries struct {
	Sig, FP  string
	S        *series
	Panes    []*pane
	Sketches [][]byte
}

type ckTrack struct {
	Sig string
	Pts []tpoint
}

// encode serialises the engine state. Called with e.mu held.
func (e *Engine) encode(clean bool) []byte {
	now := e.opts.Now()
	ck := checkpoint{V: checkpointVersion, Clean: clean, Saved: now.UnixNano()}
	if id, since, ok := e.opts.Boot(); ok {
		ck.Boot, ck.Since = id, int64(since)
	}
	for _, s := range e.series {
		// The running times are saved on the wall clock of the save: the time since them by the
		// monotonic clock (now.Sub), so a step of the wall clock since is not taken for silence.
		s.Arrival = wallOf(now, s.lastArrival)
		s.ExtAt = 0
		if !s.extAt.IsZero() {
			s.ExtAt = wallOf(now, s.extAt)
		}
		cs := ckSeries{Sig: s.sig, FP: s.r.fp, S: s, Panes: s.panes}
		if s.r.sketch {
			for _, pn := range s.panes {
				var b []byte
				pn.sk.Encode(&b, true)
				cs.Sketches = append(cs.Sketches, b)
			}
		}
		ck.Series = append(ck.Series, cs)
	}
	for sig, en := range e.entries {
		if en.t != nil && len(en.t.Pts) > 0 {
			ck.Tracks = append(ck.Tracks, ckTrack{Sig: sig, Pts: en.t.Pts})
		}
	}
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(&ck); err != nil {
		// Only unencodable types fail here, which would be a programming error; log, don't crash.
		e.log.Error("checkpoint encode failed", "err", err)
		return nil
	}
	return buf.Bytes()
}

// wallOf returns t on the wall clock of now (Unix ns): now less the time since t by the monotonic
// clock when both carry a reading (time.Now's do), so a step of the wall clock between them does not
// move it.
func wallOf(now, t time.Time) int64 { return now.Add(-now.Sub(t)).UnixNano() }

// onMono returns the wall-clock time at (Unix ns) as a time at the same distance before now, with
// now's monotonic reading: the running times compare by it.
func onMono(now time.Time, at int64) time.Time { return now.Add(-time.Duration(now.UnixNano() - at)) }

// load reads the checkpoint into e.restored and returns the tracks. A missing, corrupt or
// incompatible checkpoint is logged and gives a cold start: windows are then marked partial.
func (e *Engine) load() []ckTrack {
	if e.opts.Store == nil {
		return nil
	}
	data, ok, err := e.opts.Store.GetMeta(CheckpointKey)
	if err != nil {
		e.log.Error("checkpoint unreadable, cold start", "err", err)
		return nil
	}
	if !ok {
		return nil
	}
	var ck checkpoint
	if err := gob.NewDecoder(bytes.NewReader(data)).Decode(&ck); err != nil {
		e.log.Error("checkpoint corrupt, cold start", "err", err, "bytes", len(data))
		return nil
	}
	if ck.V != checkpointVersion {
		e.log.Warn("checkpoint version unknown, cold start", "version", ck.V)
		return nil
	}
	e.crashed = !ck.Clean
	e.down, e.step = e.restart(ck)
	e.restored = make(map[string]*series, len(ck.Series))
	for _, cs := range ck.Series {
		s := cs.S
		if s == nil {
			continue
		}
		s.sig, s.ckFP, s.panes = cs.Sig, cs.FP, cs.Panes
		// The series' wall-clock times move with the wall clock: its silence is the time passed.
		if s.Arrival != 0 {
			s.Arrival += e.step
		}
		if s.ExtAt != 0 {
			s.ExtAt += e.step
		}
		if err := e.restoreSketches(s, cs); err != nil {
			e.log.Warn("checkpoint series dropped", "signal", cs.Sig, "err", err)
			continue
		}
		if e.crashed {
			// Samples folded after this checkpoint were lost with the process: every window open
			// now, and any up to the first new sample, is partial.
			s.ObsFrom = max(s.ObsFrom, s.WM+1)
			s.ResetObs = true
			s.HoldOK = false // do not hold a value across the lost stretch
		}
		e.restored[cs.Sig] = s
	}
	return ck.Tracks
}

// stepLogged is the smallest step of the wall clock while stopped that restart logs (reading the
// two clocks one after the other makes them differ by microseconds).
const stepLogged = time.Second

// downUnknown is the downtime of a restart whose downtime is not known: longer than any window.
const downUnknown = math.MaxInt64

// restart returns how long the agent was stopped, from the checkpoint's save to now, and how far
// the wall clock was set meanwhile (a gateway without an RTC battery whose NTP steps it late).
//
//   - Same boot: the boot's clock gives the time stopped; the wall clock moved by more or less
//     than that was set by the difference.
//   - Another boot, or the boot not known: the wall clock from the save to now is all there is. A
//     clock set forward meanwhile cannot be told from downtime that long (windows are partial as
//     after a long stop). A clock before the save was set back (or the machine came up with an
//     old time): the downtime is not known, never negative, and counts as a long stop.
func (e *Engine) restart(ck checkpoint) (down, step int64) {
	now := e.opts.Now().UnixNano()
	wall := now - ck.Saved
	id, since, ok := e.opts.Boot()
	switch {
	case ok && ck.Boot != "" && id == ck.Boot && int64(since) >= ck.Since:
		down = int64(since) - ck.Since
		if step = wall - down; step <= -int64(stepLogged) || step >= int64(stepLogged) {
			e.log.Warn("wall clock set while the agent was stopped: downtime measured by the boot's clock",
				"step", time.Duration(step), "downtime", time.Duration(down), "saved", time.Unix(0, ck.Saved), "now", time.Unix(0, now))
		}
		return down, step
	case wall < 0:
		e.log.Warn("wall clock before the checkpoint's save, in another boot: the downtime is not known, every window is partial up to each signal's first newer sample",
			"saved", time.Unix(0, ck.Saved), "now", time.Unix(0, now), "boot_known", ok && ck.Boot != "")
		return downUnknown, 0
	}
	return wall, 0
}

// updated is when a restored series last got a sample: its wall-clock arrival, or its event time
// when the checkpoint holds no arrival (the idle clock after a restart continues from the same).
func (s *series) updated() int64 { return max(s.Arrival, s.WM) }

func (e *Engine) restoreSketches(s *series, cs ckSeries) error {
	if len(cs.Sketches) == 0 {
		return nil
	}
	if len(cs.Sketches) != len(cs.Panes) {
		return fmt.Errorf("%d sketches for %d panes", len(cs.Sketches), len(cs.Panes))
	}
	provider := func() store.Store { return store.NewCollapsingLowestDenseStore(sketchBins) }
	for i, pn := range s.panes {
		sk, err := ddsketch.DecodeDDSketch(cs.Sketches[i], provider, e.mapping)
		if err != nil {
			return fmt.Errorf("pane %d sketch: %w", pn.Idx, err)
		}
		pn.sk = sk
	}
	return nil
}

// restore loads the checkpoint, re-attaches series whose rule is unchanged and marks the rest as
// discarded, then writes the checkpoint back as not clean (a failure there is logged and counted:
// the engine still runs, and a crash before the next checkpoint is then taken for a clean stop).
func (e *Engine) restore() {
	tracks := e.load()
	// With fewer series allowed than restored (agent.max_feature_series lowered), the most
	// recently updated are kept, ties by name: the same checkpoint keeps the same series, and a
	// busy signal is never refused for one that went quiet.
	sigs := slices.Collect(maps.Keys(e.restored))
	slices.SortFunc(sigs, func(a, b string) int {
		if c := cmp.Compare(e.restored[b].updated(), e.restored[a].updated()); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	for _, sig := range sigs {
		e.entry(sig) // consumes e.restored[sig] when a rule still matches
	}
	for _, r := range e.rules {
		if r.src.By != "" {
			en := e.entry(r.src.By)
			if en.t == nil {
				en.t = &track{}
			}
			en.t.horizon = max(en.t.horizon, r.window+r.lateness)
		}
	}
	for _, sig := range sigs {
		if _, ok := e.restored[sig]; !ok {
			continue
		}
		if en := e.entries[sig]; en != nil && en.pending != nil {
			e.discarded.add(discardLimit, sig)
			continue
		}
		e.discarded.add(discardNoRule, sig)
	}
	e.discarded.log(e.log, e.opts.MaxSeries)
	e.restored = nil
	for _, ct := range tracks {
		if en := e.entries[ct.Sig]; en != nil && en.t != nil {
			en.t.Pts = ct.Pts
		}
	}
	_ = e.put(e.encode(false))
}

// Why a restart discards a checkpointed series.
const (
	discardRuleChanged = iota
	discardNoRule
	discardLimit
	numDiscards
)

var discardMsg = [numDiscards]string{
	"checkpoint series discarded (rule changed)",
	"checkpoint series discarded (no rule matches)",
	"checkpoint series discarded (series limit reached)",
}

// discardExamples is how many signals a discard WARN names.
const discardExamples = 5

// discards counts the series a restart discarded, by reason, with the first few signals: one WARN
// per reason (a cap lowered from 100,000 to 10,000 would otherwise print 90,000 lines).
type discards [numDiscards]struct {
	n    int
	sigs []string
}

func (d *discards) add(why int, sig string) {
	d[why].n++
	if len(d[why].sigs) < discardExamples {
		d[why].sigs = append(d[why].sigs, sig)
	}
}

func (d *discards) log(l *slog.Logger, maxSeries int) {
	for why := range d {
		if d[why].n == 0 {
			continue
		}
		args := []any{"series", d[why].n, "signals", strings.Join(d[why].sigs, ",")}
		if why == discardLimit {
			args = append(args, "max_series", maxSeries)
		}
		l.Warn(discardMsg[why], args...)
		d[why].n, d[why].sigs = 0, nil
	}
}
