package buffer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/gemba-io/gemba/signal"
)

// Clock is the store's source of time (Options.Clock). wall stamps the records (their append time,
// in the key) and is what max_age is judged against; mono is monotonic, from any origin: setting the
// wall clock does not move it.
type Clock interface {
	Now() (wall time.Time, mono time.Duration)
}

// sysClock is the production clock: time.Now, whose monotonic reading Go keeps beside the wall time.
type sysClock struct{ start time.Time }

func (c sysClock) Now() (time.Time, time.Duration) {
	t := time.Now()
	return t.Round(0), t.Sub(c.start)
}

func (s *Store) wallNow() time.Time {
	w, _ := s.clock.Now()
	return w
}

// stepTolerance is how far wall-clock time may run apart from monotonic time between two
// maintenance ticks before it counts as a step (NTP slews at most 0.5 ms/s; a step is a set).
const stepTolerance = time.Minute

// clockStep is the last wall-clock step the store saw: records up to seq[stream] were appended
// before it and count their age from at (a time after the step; for a step made while the agent was
// stopped, the moment it stopped or the restart, see checkRestart). Their keys keep the append time
// of the clock before the step (a gateway without RTC battery boots in 1970; NTP then steps it by
// decades), which would otherwise expire them at once, or (a backward step) keep them past max_age
// by the step's size. A later step replaces it: records never lose time, they may gain up to their
// age before the step.
type clockStep struct {
	at  time.Time
	seq [signal.NumStreams]uint64
}

// ageFrom is when the age of record k of stream counts from.
func (c clockStep) ageFrom(stream signal.Stream, k qkeyInfo) time.Time {
	if k.seq <= c.seq[stream] {
		return c.at
	}
	return k.t
}

func (c clockStep) encode() []byte {
	v := binary.BigEndian.AppendUint64(nil, uint64(c.at.UnixNano()))
	for _, q := range c.seq {
		v = binary.BigEndian.AppendUint64(v, q)
	}
	return v
}

func decodeClockStep(v []byte) (clockStep, error) {
	var c clockStep
	if len(v) < 8 || len(v)%8 != 0 {
		return c, fmt.Errorf("clock step has %d bytes", len(v))
	}
	c.at = time.Unix(0, int64(binary.BigEndian.Uint64(v)))
	for i := range c.seq {
		if o := 8 + 8*i; o < len(v) {
			c.seq[i] = binary.BigEndian.Uint64(v[o:])
		}
	}
	return c, nil
}

// loadClockStep reads the step an earlier life saved (recover).
func (s *Store) loadClockStep(txn *badger.Txn) error {
	item, err := txn.Get(metaKey(0xff, metaStep))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	return item.Value(func(v []byte) error {
		step, err := decodeClockStep(v)
		if err != nil { // the records count from their own append times
			s.log.Error("saved wall-clock step unreadable, ignored", "err", err)
			return nil
		}
		s.step = step
		return nil
	})
}

// detectStep compares the wall-clock time elapsed since the last check with the monotonic time:
// a difference beyond stepTolerance is a step of the wall clock. The records handed a sequence
// before it then count their age from now (see clockStep), in memory; checkClock saves it.
// headMu must be held.
func (s *Store) detectStep(wall time.Time, mono time.Duration) bool {
	d := wall.Sub(s.lastWall) - (mono - s.lastMono)
	s.lastWall, s.lastMono = wall, mono
	if d > -stepTolerance && d < stepTolerance {
		return false
	}
	// commit reads the time after handing out the sequences: a group stamped before the step
	// is below these.
	c := clockStep{at: wall}
	for i := range c.seq {
		c.seq[i] = s.handed[i].Load()
	}
	s.setStep(c)
	s.log.Warn("wall clock stepped: records buffered before the step count their age (max_age) from now",
		"step", d, "now", wall, "max_age", s.cfg.MaxAge)
	return true
}

// setStep makes c the last step: the records up to its sequences count their age from c.at.
func (s *Store) setStep(c clockStep) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.step, s.stepUnsaved = c, true
	for i := range s.st {
		if st := &s.st[i]; st.count > 0 && st.first <= c.seq[i] {
			st.oldest = c.at
		}
	}
}

// checkClock looks for a step (detectStep) and saves it, and every markEvery the clock mark.
// headMu must be held.
func (s *Store) checkClock(wall time.Time, mono time.Duration) {
	stepped := s.detectStep(wall, mono)
	s.mu.Lock()
	unsaved := s.stepUnsaved
	s.mu.Unlock()
	if !unsaved && mono-s.markMono < markEvery {
		return
	}
	s.markMono = mono // a mark that could not be saved is tried again in markEvery, a step at every check
	// Saved so that the records keep their time after a restart; a failure (a full disk) is
	// retried at every check (logged once) and at Close.
	err := s.metaRoom(int64(8*(int(signal.NumStreams)+1) + 64 + 2*entryOverhead))
	if err == nil {
		s.dbMu.RLock()
		err = s.db.Update(func(txn *badger.Txn) error { return s.putClock(txn, wall) })
		s.dbMu.RUnlock()
	}
	if err == nil && unsaved {
		err = s.db.Sync()
	}
	if err != nil {
		if stepped {
			s.log.Error("saving the wall-clock step failed, retrying", "err", err)
		}
		return
	}
	s.mu.Lock()
	s.stepUnsaved = false
	s.mu.Unlock()
}

// expire checks the wall clock for a step (checkClock) and drops records older than max_age: in
// wall-clock time since their append, or since the last step for those appended before it.
func (s *Store) expire() {
	s.headMu.Lock()
	defer s.headMu.Unlock()
	now, mono := s.clock.Now()
	s.checkClock(now, mono)
	if s.cfg.MaxAge <= 0 {
		return
	}
	cutoff := now.Add(-s.cfg.MaxAge)
	first := !s.checked
	s.checked = true
	for st := range signal.NumStreams {
		s.mu.Lock()
		old := s.st[st].count > 0 && s.st[st].oldest.Before(cutoff)
		step := s.step
		s.mu.Unlock()
		var n uint64
		var from, to time.Time // the append times of the records dropped
		if old {
			var err error
			n, err = s.removeHead(st, func(k qkeyInfo) bool {
				if !step.ageFrom(st, k).Before(cutoff) {
					return false
				}
				if from.IsZero() || k.t.Before(from) {
					from = k.t
				}
				if k.t.After(to) {
					to = k.t
				}
				return true
			}, "max_age", 0)
			if err != nil {
				s.log.Error("age expiry failed", "stream", st, "err", err)
			}
		}
		if first && n > 0 {
			// Past max_age when the agent started: the time it was stopped, or a step of the clock
			// while it was (which checkRestart could not see). Not to be told apart here: the
			// evidence is logged with them.
			s.log.Warn("dropped records older than max_age at the first check after the restart", "stream", st,
				"records", n, "appended_from", from, "appended_to", to, "last_seen", s.seen, "now", now,
				"max_age", s.cfg.MaxAge, "clock", s.restartClock)
			s.ageLogAt[st] = mono
			continue
		}
		// At most every 10 s per stream: past max_age in a long outage, records age out every tick
		// (the counters carry the exact numbers).
		s.ageUnlogged[st] += n
		if s.ageUnlogged[st] > 0 && mono-s.ageLogAt[st] >= 10*time.Second {
			s.mu.Lock()
			total := s.drops[st]["max_age"]
			s.mu.Unlock()
			s.log.Warn("dropped records older than max_age", "stream", st, "records", s.ageUnlogged[st], "dropped_total", total, "max_age", s.cfg.MaxAge)
			s.ageLogAt[st], s.ageUnlogged[st] = mono, 0
		}
	}
}
