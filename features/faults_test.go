package features

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gemba-io/gemba/config"
	"github.com/gemba-io/gemba/signal"
)

// TestUnmatchedSignalNamesDoNotAccumulate: signal names come from MQTT templates ({topic},
// {json.PATH}) and may be unbounded; names no rule matches are forwarded raw and must not be
// remembered forever by the engine (the MQTT collector bounds its own name caches the same way).
func TestUnmatchedSignalNamesDoNotAccumulate(t *testing.T) {
	h := newHarness(t, parseConfig(t, `
features:
  - {signal: line1.temp, window: 10s, compute: [mean]}
  - {signal: parts, kind: counter, window: 10s, compute: [delta], by: sku}
`))
	batch := make([]signal.Sample, 0, 1000)
	const names = 250_000
	for i := 0; i < names; i += cap(batch) {
		batch = batch[:0]
		for j := i; j < i+cap(batch); j++ {
			batch = append(batch, gauge("dyn."+strconv.Itoa(j), t0.Add(time.Duration(j)*time.Millisecond), 1))
		}
		if fwd := h.e.Add(batch); len(fwd) != len(batch) {
			t.Fatalf("%d of %d unmatched samples forwarded", len(fwd), len(batch))
		}
	}
	// The rules' own signals still resolve after the unmatched names came and went.
	h.add(gauge("line1.temp", t0, 1), gauge("line1.temp", t0.Add(20*time.Second), 2))
	h.add(signal.Sample{Signal: "sku", Time: t0, Value: signal.String("A")})
	h.e.mu.Lock()
	n := len(h.e.entries)
	h.e.mu.Unlock()
	if n > names/2 {
		t.Fatalf("engine keeps %d entries after %d distinct unmatched signal names: unbounded", n, names)
	}
	if got := featureValues(h.features())["00:00:00 mean"]; got != 1 {
		t.Fatalf("line1.temp mean = %v, want 1 (features: %v)", got, h.features())
	}
	if en := h.e.entries["sku"]; en == nil || en.t == nil || len(en.t.Pts) != 1 {
		t.Fatalf("group-by track of sku lost: %+v", en)
	}
}

// TestGroupByTrackBoundedBeforeCounterAppears: the group-by signal is tracked from the start, but
// its points were pruned only by the counters grouped by it, so while the counter had sent nothing
// (a quarantined node, a collector still failing) every change of the by signal was kept, in
// memory and in every checkpoint, without bound.
func TestGroupByTrackBoundedBeforeCounterAppears(t *testing.T) {
	h := newHarness(t, parseConfig(t, `
features:
  - {signal: parts, kind: counter, window: 10s, allowed_lateness: 5s, compute: [delta], by: sku}
`))
	const changes = 20000
	for i := range changes {
		h.add(signal.Sample{Signal: "sku", Time: t0.Add(time.Duration(i) * time.Second), Value: signal.String([]string{"A", "B"}[i%2])})
	}
	h.e.mu.Lock()
	n := len(h.e.entries["sku"].t.Pts)
	h.e.mu.Unlock()
	if n > 100 {
		t.Fatalf("group-by track holds %d points after %d changes of sku with no counter sample", n, changes)
	}
	// The counter that appears now is attributed to the SKU in force at its samples.
	last := t0.Add(changes * time.Second)
	h.add(signal.Sample{Signal: "sku", Time: last, Value: signal.String("C")})
	h.add(counterAtT(last.Add(-3*time.Second), 10), counterAtT(last.Add(time.Second), 15), counterAtT(last.Add(60*time.Second), 15))
	var got []string
	for _, f := range h.features() {
		sku, _ := f.Labels.Get("sku")
		got = append(got, f.WindowStart.Sub(t0).String()+" "+sku+" "+strconv.FormatFloat(f.Value, 'g', -1, 64))
	}
	want := (changes * time.Second).String() + " C 5"
	found := false
	for _, g := range got {
		found = found || g == want
	}
	if !found {
		t.Fatalf("features %v, want one %q", got, want)
	}
}

func counterAtT(ts time.Time, v int64) signal.Sample {
	return signal.Sample{Signal: "parts", Time: ts, Value: signal.Int(v)}
}

// TestConfigRenameCollisions: rename must not give two features of one window the same name (a
// consumer keys records on signal, name, window and labels: one of the two values is lost, or the
// mean is read as the max), nor the name of the quality records every window may carry.
func TestConfigRenameCollisions(t *testing.T) {
	cases := []struct{ name, yaml, want string }{
		{"onto another computed feature", `
features:
  - {signal: a, window: 1m, compute: [mean, max], rename: {mean: max}}`, `features[0].rename.mean: new name "max" is also the name of feature "max"`},
		{"two onto one", `
features:
  - {signal: a, window: 1m, compute: [p95, p99], rename: {p95: high, p99: high}}`, `new name "high" is also the name of feature`},
		{"onto a quality record", `
features:
  - {signal: c, kind: counter, window: 1m, compute: [delta, resets], rename: {resets: bad_count}}`, `features[0].rename.resets: new name "bad_count" is the name of a quality record`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			doc := checkedDoc{known: map[string]bool{}}
			err := config.NewDecoder().Unmarshal([]byte(c.yaml), &doc)
			var ps config.Problems
			if !errors.As(err, &ps) {
				t.Fatalf("want config problems, got %v", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q\ndoes not contain %q", err, c.want)
			}
		})
	}
	// Swapping two names, or renaming onto a name not computed, is fine.
	doc := checkedDoc{known: map[string]bool{}}
	if err := config.NewDecoder().Unmarshal([]byte(`
features:
  - {signal: a, window: 1m, compute: [min, max, mean], rename: {min: max, max: min, mean: avg}}`), &doc); err != nil {
		t.Fatalf("valid renames refused: %v", err)
	}
}

// TestNoFloorStillRefusesUnrepresentableTimes: with min_time "" (documented: no floor) a sample
// dated 1601-01-01 (the OPC UA / Windows epoch, what a device sends for "no time") does not fit in
// int64 nanoseconds: UnixNano wrapped it to the year 2185, so it was folded into a window there that
// stays open (in memory and every checkpoint) and, for a counter, became its newest value.
func TestNoFloorStillRefusesUnrepresentableTimes(t *testing.T) {
	for _, bad := range []time.Time{time.Date(1601, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(1, 1, 1, 0, 0, 1, 0, time.UTC)} {
		t.Run(bad.Format("2006"), func(t *testing.T) {
			h := &harness{t: t, cfg: parseConfig(t, "features:\n  - {signal: s, window: 1m, compute: [count, mean]}\n"),
				clock: &fakeClock{t: at(10 * time.Second)}, store: newMemStore(),
				bounds: TimeBounds{MaxFutureSkew: 5 * time.Minute}} // min_time: ""
			h.start()
			h.add(gauge("s", at(5*time.Second), 1), gauge("s", bad, 999), gauge("s", at(8*time.Second), 3))
			h.clock.Set(at(70 * time.Second))
			h.add(gauge("s", at(65*time.Second), 5))
			if st := h.e.Stats(); st.OutOfBounds != 1 || st.Folded != 3 {
				t.Errorf("stats = %+v, want 1 out of bounds, 3 folded", st)
			}
			h.e.mu.Lock()
			for _, pn := range h.e.series[0].panes {
				if end := time.Unix(0, (pn.Idx+1)*int64(time.Minute)); end.After(at(time.Hour)) {
					t.Errorf("a pane open until %s", end.UTC())
				}
			}
			h.e.mu.Unlock()
			if why := (TimeBounds{MaxFutureSkew: time.Minute}).At(at(0)).Check(bad); why != TooOld {
				t.Errorf("Check(%s) = %s, want past", bad, why)
			}
		})
	}
}
