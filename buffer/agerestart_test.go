package buffer

import (
	"strings"
	"testing"
	"time"

	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
)

// reopenClocked closes s and opens its store again on clock; between, while the agent is stopped,
// stopped runs on the clock (time passing, NTP setting it, a reboot).
func reopenClocked(t *testing.T, s *Store, cfg Config, clock *fakeClock, logs *testutil.Buffer, stopped func()) *Store {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	stopped()
	return openClocked(t, cfg, clock, logs)
}

// TestClockStepForwardWhileStopped: a gateway without an RTC battery boots in 1970, the agent
// buffers, is restarted (same boot) after NTP set the clock to 2026. The records are minutes old,
// not 56 years: the step made while the agent was stopped is seen at the restart (the boot's
// clock ran on), and they count their max_age from the moment the agent stopped.
func TestClockStepForwardWhileStopped(t *testing.T) {
	cfg := clockConfig(t)
	clock := &fakeClock{wall: time.Date(1970, 1, 1, 0, 1, 0, 0, time.UTC)}
	var logs testutil.Buffer
	s := openClocked(t, cfg, clock, &logs)
	appendClocked(t, s, signal.StreamSamples, 3)
	appendClocked(t, s, signal.StreamFeatures, 2)
	clock.advance(10 * time.Minute)
	s = reopenClocked(t, s, cfg, clock, &logs, func() {
		clock.advance(time.Minute)
		clock.step(56 * 365 * 24 * time.Hour)
	})
	defer s.Close()
	s.expire()
	checkAges(t, s, "restarted after a step while stopped", 3, 2, 0, 0)
	if !strings.Contains(logs.String(), "wall clock stepped while the agent was stopped") {
		t.Fatalf("step while stopped not logged:\n%s", logs.String())
	}
	// Their age counts from the stop, 1 minute before the restart, as from a step seen while
	// running: max_age is reached 59 minutes after the restart.
	clock.advance(58 * time.Minute)
	s.expire()
	checkAges(t, s, "58 minutes after the restart", 3, 2, 0, 0)
	clock.advance(2 * time.Minute)
	s.expire()
	checkAges(t, s, "60 minutes after the restart", 0, 0, 3, 2)
}

// TestNoClockStepWhileStopped: the same boot, the clock not set: the time the agent was stopped
// counts, and records past max_age at the restart are dropped (no step is made up).
func TestNoClockStepWhileStopped(t *testing.T) {
	cfg := clockConfig(t)
	clock := &fakeClock{wall: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)}
	var logs testutil.Buffer
	s := openClocked(t, cfg, clock, &logs)
	appendClocked(t, s, signal.StreamSamples, 2)
	s = reopenClocked(t, s, cfg, clock, &logs, func() { clock.advance(2 * time.Hour) })
	defer s.Close()
	s.expire()
	checkAges(t, s, "restarted 2 hours later", 0, 0, 2, 0)
	if strings.Contains(logs.String(), "stepped") {
		t.Fatalf("a step reported where there was none:\n%s", logs.String())
	}
}

// TestClockStepBackWhileStopped: a gateway whose RTC ran years ahead is rebooted and comes up
// with the right time: the records' append times are in the future. They count their age from
// the restart (the time the gateway was down is not knowable), not years later.
func TestClockStepBackWhileStopped(t *testing.T) {
	cfg := clockConfig(t)
	clock := &fakeClock{wall: time.Date(2031, 3, 1, 0, 0, 0, 0, time.UTC)}
	var logs testutil.Buffer
	s := openClocked(t, cfg, clock, &logs)
	appendClocked(t, s, signal.StreamSamples, 2)
	clock.advance(10 * time.Minute)
	s = reopenClocked(t, s, cfg, clock, &logs, func() {
		clock.reboot()
		clock.step(-5 * 365 * 24 * time.Hour)
	})
	defer s.Close()
	s.expire()
	checkAges(t, s, "restarted after a step back", 2, 0, 0, 0)
	clock.advance(59 * time.Minute)
	s.expire()
	checkAges(t, s, "59 minutes after the restart", 2, 0, 0, 0)
	clock.advance(2 * time.Minute)
	s.expire()
	checkAges(t, s, "61 minutes after the restart", 0, 0, 2, 0)
	if !strings.Contains(logs.String(), "wall clock stepped while the agent was stopped") {
		t.Fatalf("step back while stopped not logged:\n%s", logs.String())
	}
}

// TestClockStepAcrossRebootWarns: a step forward across a reboot cannot be told from a gateway
// that was down that long. The records are dropped as max_age, but the first check after the
// restart names how many, when they were appended, and the clock evidence.
func TestClockStepAcrossRebootWarns(t *testing.T) {
	cfg := clockConfig(t)
	clock := &fakeClock{wall: time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)}
	var logs testutil.Buffer
	s := openClocked(t, cfg, clock, &logs)
	appendClocked(t, s, signal.StreamSamples, 2)
	clock.advance(5 * time.Minute)
	appendClocked(t, s, signal.StreamSamples, 1)
	s = reopenClocked(t, s, cfg, clock, &logs, func() {
		clock.reboot()
		clock.step(26 * 365 * 24 * time.Hour)
	})
	defer s.Close()
	s.expire()
	checkAges(t, s, "restarted after a reboot", 0, 0, 3, 0)
	var line string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "after the restart") && strings.Contains(l, "max_age") {
			line = l
		}
	}
	for _, want := range []string{"level=WARN", "records=3", "appended_from=2000-01-01T00:00:00.000Z", "appended_to=2000-01-01T00:05:00.000Z",
		"last_seen=2000-01-01T00:05:00.000Z", "rebooted"} {
		if !strings.Contains(line, want) {
			t.Fatalf("first max_age drop after the restart: no %q in %q\n%s", want, line, logs.String())
		}
	}
}

// TestClockStepJustBeforeStop: NTP sets the clock and the agent is stopped before its next
// check: Close sees the step before it saves the clock mark, so the restart does not take the
// records' old times for the new clock's.
func TestClockStepJustBeforeStop(t *testing.T) {
	cfg := clockConfig(t)
	clock := &fakeClock{wall: time.Date(1970, 1, 1, 0, 1, 0, 0, time.UTC)}
	var logs testutil.Buffer
	s := openClocked(t, cfg, clock, &logs)
	appendClocked(t, s, signal.StreamSamples, 2)
	clock.advance(time.Minute)
	clock.step(56 * 365 * 24 * time.Hour)
	s = reopenClocked(t, s, cfg, clock, &logs, func() { clock.advance(time.Minute) })
	defer s.Close()
	s.expire()
	checkAges(t, s, "restarted after a step just before the stop", 2, 0, 0, 0)
	clock.advance(58 * time.Minute)
	s.expire()
	checkAges(t, s, "58 minutes after the restart", 2, 0, 0, 0)
	clock.advance(2 * time.Minute)
	s.expire()
	checkAges(t, s, "60 minutes after the restart", 0, 0, 2, 0)
}

// TestSysClockBoot: the production clock knows its boot (Linux), and the boot's clock runs.
func TestSysClockBoot(t *testing.T) {
	var c Clock = sysClock{start: time.Now()}
	b, ok := c.(BootClock)
	if !ok {
		t.Fatal("sysClock is not a BootClock")
	}
	id, since, ok := b.Boot()
	if !ok || len(id) != 36 || since <= 0 {
		t.Fatalf("Boot() = %q, %v, %v; want a boot_id and the time since it", id, since, ok)
	}
	if id2, since2, _ := b.Boot(); id2 != id || since2 < since {
		t.Fatalf("Boot() went from %q %v to %q %v", id, since, id2, since2)
	}
}
