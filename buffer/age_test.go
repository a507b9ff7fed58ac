package buffer

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
)

// fakeClock is a Clock whose wall clock a test can step without moving the monotonic one.
type fakeClock struct {
	mu   sync.Mutex
	wall time.Time
	mono time.Duration
	boot int // the machine's boot: reboot counts it up
}

func (c *fakeClock) Now() (time.Time, time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.wall, c.mono
}

// Boot implements BootClock: the monotonic clock runs from the boot, suspend included.
func (c *fakeClock) Boot() (string, time.Duration, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fmt.Sprintf("boot-%d", c.boot), c.mono, true
}

// reboot restarts the machine: a new boot, whose monotonic clock starts again; the wall clock
// goes on from where it was (an RTC), or not (see step).
func (c *fakeClock) reboot() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.boot++
	c.mono = 0
}

// advance lets d pass: both clocks move.
func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.wall, c.mono = c.wall.Add(d), c.mono+d
}

// step sets the wall clock by d (NTP stepping it), the monotonic clock does not move.
func (c *fakeClock) step(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.wall = c.wall.Add(d)
}

// openClocked opens a store with max_age 1h on clock, logging to the test and to logs.
func openClocked(t *testing.T, cfg Config, clock *fakeClock, logs io.Writer) *Store {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.MultiWriter(logs, testutil.Writer(t)), &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := Open(cfg, Options{Logger: log, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func clockConfig(t *testing.T) Config {
	cfg := testConfig(t)
	cfg.MaxAge = time.Hour
	return cfg
}

// checkAges fails unless samples and features hold the given records and max_age drops.
func checkAges(t *testing.T, s *Store, when string, samples, features, samplesDropped, featuresDropped uint64) {
	t.Helper()
	st := s.Stats()
	sm, ft := st.Streams[signal.StreamSamples], st.Streams[signal.StreamFeatures]
	if sm.Records != samples || ft.Records != features || sm.Dropped["max_age"] != samplesDropped || ft.Dropped["max_age"] != featuresDropped {
		t.Fatalf("%s: samples %d records (%d max_age drops), features %d (%d); want %d (%d), %d (%d)", when,
			sm.Records, sm.Dropped["max_age"], ft.Records, ft.Dropped["max_age"], samples, samplesDropped, features, featuresDropped)
	}
}

func appendClocked(t *testing.T, s *Store, stream signal.Stream, n int) {
	t.Helper()
	for i := range n {
		if _, err := s.Append(context.Background(), stream, rec("r")); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
}

// TestClockStepForward: a gateway without an RTC battery boots with its clock in 1970, the agent
// buffers, then NTP steps the clock forward by years. The records are minutes old: they keep their
// whole max_age from the step, and the step is logged once with its size.
func TestClockStepForward(t *testing.T) {
	clock := &fakeClock{wall: time.Date(1970, 1, 1, 0, 1, 0, 0, time.UTC)}
	var logs testutil.Buffer
	s := openClocked(t, clockConfig(t), clock, &logs)
	defer s.Close()
	appendClocked(t, s, signal.StreamSamples, 3)
	appendClocked(t, s, signal.StreamFeatures, 2)
	clock.advance(5 * time.Minute)
	clock.step(365 * 24 * time.Hour)
	s.expire()
	checkAges(t, s, "after the step", 3, 2, 0, 0)
	s.expire()
	if n := strings.Count(logs.String(), "wall clock stepped"); n != 1 {
		t.Fatalf("step logged %d times, want once:\n%s", n, logs.String())
	}
	if line := logs.String(); !strings.Contains(line, "level=WARN") || !strings.Contains(line, "step=8760h") {
		t.Fatalf("step log without WARN or its size: %s", line)
	}
	wall, _ := clock.Now()
	if age := wall.Sub(s.Stats().Streams[signal.StreamSamples].Oldest); age < 0 || age > time.Hour {
		t.Fatalf("oldest record reported %v old just after the step", age)
	}

	clock.advance(10 * time.Minute)
	appendClocked(t, s, signal.StreamSamples, 1) // after the step: its own append time counts
	clock.advance(49 * time.Minute)              // 59 minutes since the step
	s.expire()
	checkAges(t, s, "59 minutes after the step", 4, 2, 0, 0)
	clock.advance(2 * time.Minute)
	s.expire()
	checkAges(t, s, "61 minutes after the step", 1, 0, 3, 2)
	clock.advance(10 * time.Minute)
	s.expire()
	checkAges(t, s, "the later record 61 minutes old", 0, 0, 4, 2)
}

// TestClockStepForwardReopen: the step seen by one life of the agent still counts after a
// restart, although the records' keys carry their old-frame append times.
func TestClockStepForwardReopen(t *testing.T) {
	cfg := clockConfig(t)
	clock := &fakeClock{wall: time.Date(2019, 6, 1, 0, 0, 0, 0, time.UTC)} // a build date
	var logs testutil.Buffer
	s := openClocked(t, cfg, clock, &logs)
	appendClocked(t, s, signal.StreamSamples, 3)
	appendClocked(t, s, signal.StreamStatus, 1)
	clock.advance(time.Minute)
	clock.step(7 * 365 * 24 * time.Hour)
	s.expire()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	clock.advance(time.Minute)
	s = openClocked(t, cfg, clock, &logs)
	defer s.Close()
	s.expire()
	checkAges(t, s, "reopened after the step", 3, 0, 0, 0)
	if st := s.Stats().Streams[signal.StreamStatus]; st.Records != 1 {
		t.Fatalf("reopened after the step: status stream %+v", st)
	}
	clock.advance(57 * time.Minute)
	s.expire()
	checkAges(t, s, "58 minutes after the step", 3, 0, 0, 0)
	clock.advance(3 * time.Minute)
	s.expire()
	checkAges(t, s, "61 minutes after the step", 0, 0, 3, 0)
	if st := s.Stats().Streams[signal.StreamStatus]; st.Records != 0 || st.Dropped["max_age"] != 1 {
		t.Fatalf("61 minutes after the step: status stream %+v", st)
	}
}

// TestClockStepBackward: records appended before the clock is set back expire neither early nor
// late by the size of the step: they too count their max_age from the step.
func TestClockStepBackward(t *testing.T) {
	clock := &fakeClock{wall: time.Date(2031, 3, 1, 0, 0, 0, 0, time.UTC)} // an RTC far ahead
	var logs testutil.Buffer
	s := openClocked(t, clockConfig(t), clock, &logs)
	defer s.Close()
	appendClocked(t, s, signal.StreamSamples, 2)
	clock.advance(10 * time.Minute)
	clock.step(-5 * 365 * 24 * time.Hour)
	s.expire()
	checkAges(t, s, "after the step", 2, 0, 0, 0)
	appendClocked(t, s, signal.StreamSamples, 1)
	clock.advance(59 * time.Minute)
	s.expire()
	checkAges(t, s, "59 minutes after the step", 3, 0, 0, 0)
	clock.advance(2 * time.Minute)
	s.expire()
	checkAges(t, s, "61 minutes after the step", 0, 0, 3, 0)
	if n := strings.Count(logs.String(), "wall clock stepped"); n != 1 {
		t.Fatalf("step logged %d times, want once:\n%s", n, logs.String())
	}
}

// TestMaxAgeDropLogLimited: during a long outage records reach max_age one maintenance tick after
// another; the WARN for them comes at most every 10 s per stream (the counters carry the numbers),
// not once a tick (a line a second per stream for as long as the outage lasts).
func TestMaxAgeDropLogLimited(t *testing.T) {
	clock := &fakeClock{wall: time.Date(2026, 1, 5, 6, 0, 0, 0, time.UTC)}
	var logs testutil.Buffer
	s := openClocked(t, clockConfig(t), clock, &logs)
	defer s.Close()
	const n = 60
	for range n {
		appendClocked(t, s, signal.StreamSamples, 1)
		clock.advance(time.Second)
	}
	clock.advance(time.Hour - n*time.Second)
	for range n {
		clock.advance(time.Second)
		s.expire()
	}
	checkAges(t, s, "an hour after the last append", 0, 0, n, 0)
	if lines := strings.Count(logs.String(), "dropped records older than max_age"); lines > n/10+1 {
		t.Fatalf("%d WARN lines for %d records expired over %d s:\n%s", lines, n, n, logs.String())
	}
}
