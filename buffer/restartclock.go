package buffer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/gemba-io/gemba/internal/bootclock"
)

// BootClock is a Clock that also reads the machine's boot: id names it (Linux's
// /proc/sys/kernel/random/boot_id) and since is the time since it, suspend included
// (CLOCK_BOOTTIME). Both survive a restart of the agent, not of the machine: within one boot they
// tell whether the wall clock was set while the agent was stopped. ok is false when not known.
type BootClock interface {
	Clock
	Boot() (id string, since time.Duration, ok bool)
}

// Boot implements BootClock.
func (sysClock) Boot() (string, time.Duration, bool) { return bootclock.Read() }

// markEvery is how often the clock mark is saved beside the saves at open, at a step and at
// close (a crash leaves the last of them).
const markEvery = 10 * time.Minute

// clockMark is the wall clock and the boot's clock read together. The wall clock minus the boot's
// clock changes only when the wall clock is set (NTP's slewing moves both), so the next start in
// the same boot tells a step made while the agent was stopped from the time it was stopped.
type clockMark struct {
	wall  time.Time
	since time.Duration
	boot  string // "" when the clock does not know its boot
}

func (s *Store) clockMark(wall time.Time) clockMark {
	m := clockMark{wall: wall}
	if b, ok := s.clock.(BootClock); ok {
		if id, since, ok := b.Boot(); ok {
			m.boot, m.since = id, since
		}
	}
	return m
}

func (m clockMark) encode() []byte {
	v := binary.BigEndian.AppendUint64(nil, uint64(m.wall.UnixNano()))
	v = binary.BigEndian.AppendUint64(v, uint64(m.since))
	return append(v, m.boot...)
}

func decodeClockMark(v []byte) (clockMark, error) {
	if len(v) < 16 {
		return clockMark{}, fmt.Errorf("clock mark has %d bytes", len(v))
	}
	return clockMark{
		wall:  time.Unix(0, int64(binary.BigEndian.Uint64(v))),
		since: time.Duration(binary.BigEndian.Uint64(v[8:])),
		boot:  string(v[16:]),
	}, nil
}

// loadClockMark reads the mark the previous run saved (recover); its time is the first the run is
// known to have seen (the records stamped after its last step may add later ones).
func (s *Store) loadClockMark(txn *badger.Txn) error {
	item, err := txn.Get(metaKey(0xff, metaMark))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil // a store of an earlier version: the records' times only
	} else if err != nil {
		return err
	}
	return item.Value(func(v []byte) error {
		m, err := decodeClockMark(v)
		if err != nil {
			s.log.Error("saved clock mark unreadable, ignored", "err", err)
			return nil
		}
		s.prevMark, s.seen = m, m.wall
		return nil
	})
}

// putClock writes the mark for wall and a step not saved yet; the caller clears stepUnsaved when
// the transaction commits.
func (s *Store) putClock(txn *badger.Txn, wall time.Time) error {
	s.mu.Lock()
	unsaved, step := s.stepUnsaved, s.step.encode()
	s.mu.Unlock()
	if unsaved {
		if err := txn.Set(metaKey(0xff, metaStep), step); err != nil {
			return err
		}
	}
	return txn.Set(metaKey(0xff, metaMark), s.clockMark(wall).encode())
}

// checkRestart looks, at open, for a step of the wall clock made while the agent was stopped,
// which detectStep cannot see: the records' times are those of the clock before it.
//
//   - Same boot: the wall clock moved by the boot's clock since the saved mark, or it was set by
//     the difference. The records then count their age from the moment the agent stopped (the
//     last time it is known to have seen, moved by the step): they lose no time and the time the
//     agent was stopped counts.
//   - Another boot: the time the machine was down is not known. A clock before the last time
//     the previous run saw was set back: the records count their age from now (they lose no
//     time; the time down does not count). A clock set forward cannot be told from a machine that
//     was down that long: the records age by the clock, and expire logs the evidence with any it
//     drops at its first check.
func (s *Store) checkRestart(now time.Time) {
	if s.seen.IsZero() {
		s.restartClock = "nothing saved by an earlier run"
		return
	}
	cur := s.clockMark(now)
	var d time.Duration
	at := now
	stepped := false
	switch prev := s.prevMark; {
	case cur.boot != "" && cur.boot == prev.boot:
		d = now.Sub(prev.wall) - (cur.since - prev.since)
		stepped = d <= -stepTolerance || d >= stepTolerance
		if at = s.seen.Add(d); at.After(now) {
			at = now
		}
		s.restartClock = "same boot: the wall clock is checked against the boot's clock"
	case now.Before(s.seen.Add(-stepTolerance)):
		d, stepped = now.Sub(s.seen), true
		s.restartClock = "the wall clock is before the last time the previous run saw"
	case cur.boot == "":
		s.restartClock = "the machine's boot is not known: a step of the wall clock while the agent was stopped cannot be seen"
	case prev.boot == "":
		s.restartClock = "the previous run saved no clock mark: a step of the wall clock while the agent was stopped cannot be seen"
	default:
		s.restartClock = "the machine rebooted since the previous run: a step of the wall clock while the agent was stopped cannot be seen"
	}
	if !stepped {
		return
	}
	var c clockStep
	c.at = at
	for i := range c.seq {
		c.seq[i] = s.st[i].last
	}
	s.setStep(c)
	s.log.Warn("wall clock stepped while the agent was stopped: records buffered before count their age (max_age) from the stop",
		"step", d, "last_seen", s.seen, "now", now, "age_from", at, "clock", s.restartClock, "max_age", s.cfg.MaxAge)
}
