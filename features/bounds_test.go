package features

import (
	"testing"
	"time"

	"github.com/gemba-io/gemba/signal"
)

// boundsHarness is a harness whose engine bounds sample times like the agent's defaults, on a
// clock at 2026-01-01T00:00:00Z.
func boundsHarness(t *testing.T, yml string) *harness {
	h := &harness{t: t, cfg: parseConfig(t, yml), clock: &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)},
		store: newMemStore(), bounds: DefaultTimeBounds()}
	h.start()
	return h
}

func at(d time.Duration) time.Time { return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(d) }

func featureValues(fs []signal.Feature) map[string]float64 {
	out := map[string]float64{}
	for _, f := range fs {
		out[f.WindowStart.Format("15:04:05")+" "+f.Name] = f.Value
	}
	return out
}

// Issue 12 point 7: one sample dated in year 5138 (or 1969) must not stop the signal's windows.
// It is out of bounds: counted, forwarded raw, never folded, and the watermark does not move.
func TestOutOfBoundsSampleDoesNotStallWindows(t *testing.T) {
	for _, bad := range []time.Time{
		time.Date(5138, 3, 1, 0, 0, 0, 0, time.UTC),
		time.Date(1969, 12, 31, 23, 59, 59, 0, time.UTC),
		{}, // no time at all
	} {
		t.Run(bad.Format("2006"), func(t *testing.T) {
			h := boundsHarness(t, "features:\n  - {signal: s, window: 1m, compute: [count, mean]}\n")
			h.clock.Set(at(10 * time.Second))
			h.add(gauge("s", at(5*time.Second), 1))
			h.add(gauge("s", bad, 999))
			h.add(gauge("s", at(8*time.Second), 3))
			h.clock.Set(at(70 * time.Second))
			h.add(gauge("s", at(65*time.Second), 5))
			got := featureValues(h.features())
			if got["00:00:00 count"] != 2 || got["00:00:00 mean"] != 2 {
				t.Errorf("window [00:00, 00:01) = %v, want count 2 and mean 2 (the out-of-bounds sample neither folded nor stalling)", got)
			}
			st := h.e.Stats()
			if st.Late != 0 || st.OutOfBounds != 1 || st.Folded != 3 {
				t.Errorf("stats = %+v, want 0 late, 1 out of bounds, 3 folded", st)
			}
			if got := counterValue(h.e.m.samplesVec("out_of_bounds")); got != 1 {
				t.Errorf("samples{result=out_of_bounds} = %v, want 1", got)
			}
			if h.fwd != 4 {
				t.Errorf("forwarded raw = %d, want 4 (every sample, the out-of-bounds one included)", h.fwd)
			}
		})
	}
}

// A sample within max_future_skew ahead of the agent's clock is folded, but the watermark never
// passes the clock: the correct samples after it are not late, and its window closes in turn.
func TestFutureSampleWithinSkewDoesNotMakeLaterSamplesLate(t *testing.T) {
	h := boundsHarness(t, "features:\n  - {signal: s, window: 1m, compute: [count, sum]}\n")
	h.clock.Set(at(50 * time.Second))
	h.add(gauge("s", at(45*time.Second), 1))
	h.add(gauge("s", at(80*time.Second), 10)) // a source clock 30s fast
	h.clock.Set(at(56 * time.Second))
	h.add(gauge("s", at(55*time.Second), 2))
	if fs := h.features(); len(fs) != 0 {
		t.Fatalf("window closed by a sample from the future: %v", fs)
	}
	h.clock.Set(at(130 * time.Second))
	h.add(gauge("s", at(125*time.Second), 100))
	got := featureValues(h.features())
	if got["00:00:00 count"] != 2 || got["00:00:00 sum"] != 3 || got["00:01:00 sum"] != 10 {
		t.Errorf("features = %v, want window 00:00 count 2 sum 3, window 00:01 sum 10", got)
	}
	if st := h.e.Stats(); st.Late != 0 || st.OutOfBounds != 0 {
		t.Errorf("stats = %+v, want nothing late or out of bounds", st)
	}
}

func TestTimeBoundsCheck(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := DefaultTimeBounds().At(now)
	for _, c := range []struct {
		t    time.Time
		want Bound
	}{
		{now, InBounds},
		{now.Add(5 * time.Minute), InBounds},
		{now.Add(5*time.Minute + 1), TooNew},
		{time.Date(5138, 1, 1, 0, 0, 0, 0, time.UTC), TooNew}, // beyond int64 nanoseconds
		{time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), InBounds},
		{time.Date(1999, 12, 31, 23, 59, 59, 0, time.UTC), TooOld},
		{time.Time{}, TooOld},
	} {
		if got := l.Check(c.t); got != c.want {
			t.Errorf("Check(%s) = %s, want %s", c.t, got, c.want)
		}
	}
	if got := (TimeBounds{}).At(now).Check(time.Date(5138, 1, 1, 0, 0, 0, 0, time.UTC)); got != InBounds {
		t.Errorf("zero bounds refuse %s", got)
	}
}
