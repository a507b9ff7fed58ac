package buffer

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gemba-io/gemba/signal"
)

// Options are the store's collaborators.
type Options struct {
	// Logger is used as given: scope it (e.g. With("component", "buffer")) before passing it.
	Logger *slog.Logger
	// Metrics, when set, receives the store's collector (gemba_buffer_*).
	Metrics prometheus.Registerer
	// Clock, when set, replaces time.Now for append times and max_age (tests); when it is a
	// BootClock, also the boot's clock of the check at open (see checkRestart).
	Clock Clock
}

// Store is the Badger-backed Buffer. Records go to the value log; keys carry sequence, append time
// and size. One writer goroutine group-commits concurrent appends: one Badger transaction and (with
// sync: always) one fsync per group.
type Store struct {
	cfg   Config
	log   *slog.Logger
	clock Clock
	db    *badger.DB
	reg   prometheus.Registerer
	coll  *collector

	reqs     chan *appendReq
	stop     chan struct{} // tells the writer and maintenance goroutines to exit
	closing  chan struct{} // closed by Close: wakes blocked Reads and Appends
	bg       sync.WaitGroup
	kick     chan struct{} // asks the maintenance goroutine for a reclaim pass
	syncQ    chan *group   // written groups waiting for their fsync (sync: always)
	inflight sync.WaitGroup
	next     [signal.NumStreams]uint64        // last sequence handed out; owned by the writer goroutine
	handed   [signal.NumStreams]atomic.Uint64 // next, for checkClock
	// lastWall and lastMono are the clock at the last checkClock; ageLogAt is the last max_age
	// drop log of each stream and ageUnlogged the drops since (headMu).
	lastWall    time.Time
	lastMono    time.Duration
	ageLogAt    [signal.NumStreams]time.Duration
	ageUnlogged [signal.NumStreams]uint64
	touched     atomic.Int64 // bytes of mapped files written or read since the last trimMappings
	free        freeCache    // makeRoom's statfs, owned by the writer goroutine
	dirty       atomic.Bool  // written since the last periodic sync (sync: batch skips idle syncs)
	// reserveHeld is set while the reserve file (see reserve.go) holds its blocks.
	reserveHeld atomic.Bool
	// reserveBytes is the reserve file's size while it is held; lsm is the tables' bytes at the
	// last measurement (the reserve follows it, see lsmRoom).
	reserveBytes atomic.Int64
	lsm          atomic.Int64
	// secureFiles' state: the directory's mtime at the last pass, the files allocated and their
	// sizes, and whether the last pass failed (the disk is full).
	secMu     sync.Mutex
	secMtime  time.Time
	secDone   map[string]int64
	unsecured atomic.Bool

	// markMono is when the clock mark was last saved; prevMark is the one the previous run saved,
	// seen the latest wall time that run is known to have seen, restartClock what the restart
	// could tell of the clock (see checkRestart), checked whether expire ran since the open
	// (headMu; set at open).
	markMono     time.Duration
	prevMark     clockMark
	seen         time.Time
	restartClock string
	checked      bool

	closeMu sync.RWMutex
	closed  bool
	calls   sync.WaitGroup

	// dbMu is taken exclusively while forcing a memtable flush (Badger's DropPrefix refuses
	// concurrent writes); every other write holds it shared.
	dbMu sync.RWMutex
	// headMu serialises removals at the head of the queues (ack, eviction, expiry, corrupt skips).
	headMu sync.Mutex
	// reclaimMu serialises reclaim passes.
	reclaimMu sync.Mutex
	// measureMu serialises measure: each pass subtracts the written bytes it snapshotted.
	measureMu sync.Mutex

	incarnation string // see Buffer.Incarnation; set by markOpen

	sideMu   sync.Mutex // serialises sidecar writes
	sideLast []byte     // the sidecar last written

	// lost counts records the store should have held at open but did not (see reconcile), by
	// stream and reason; lossErr reports the loss in Stats.Err until lossUntil.
	lost      [signal.NumStreams]map[string]uint64
	lossErr   error
	lossUntil time.Time

	mu                   sync.Mutex
	st                   [signal.NumStreams]streamState
	wake                 [signal.NumStreams]chan struct{} // closed when records are appended
	space                chan struct{}                    // closed when records are removed or disk space returns
	disk                 int64                            // bytes on disk at the last measurement
	written              int64                            // estimated bytes written since then
	pending              int64                            // bytes makeRoom accepted that are not written yet
	garbage              int64                            // bytes removed since the last reclaim
	full                 bool
	ioErr                error
	drops                [signal.NumStreams]map[string]uint64
	diskErrs, recoveries uint64
	lastEvictLog         time.Time
	lastNoRoomLog        time.Time
	groups, grouped      uint64 // group commits and the appends they carried (benchmarks report the ratio)
	step                 clockStep
	stepUnsaved          bool
}

type streamState struct {
	first, last uint64 // first waiting (0 when empty) and last appended sequence
	head, acked uint64 // highest removed, highest acked
	floor       uint64 // persisted lower bound for the next sequence (see uncleanGap)
	removed     uint64 // records ever removed (acked or dropped), persisted with head
	count       uint64
	bytes       uint64
	oldest      time.Time // when the first waiting record's age counts from (clockStep.ageFrom)
}

type appendReq struct {
	stream  signal.Stream
	records [][]byte
	meta    []Meta // user meta keys written after the records, in their transaction
	size    int64  // estimated bytes on disk
	done    chan appendRes
}

type appendRes struct {
	seqs []uint64
	err  error
}

// errRetry tells a blocked (when_full: block) Append to wait for space and try again.
var errRetry = errors.New("no space yet")

// Open opens (or creates) the store in cfg.Dir and recovers its state. A directory Badger refuses to
// open is moved aside to <dir>.corrupt-<time> and a fresh store is created in its place.
func Open(cfg Config, opts Options) (*Store, error) {
	if err := validateConfig(cfg); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if abs, err := filepath.Abs(cfg.Dir); err == nil {
		cfg.Dir = abs // trimMappings matches mapped file names against it
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{
		cfg:     cfg,
		log:     log,
		reg:     opts.Metrics,
		reqs:    make(chan *appendReq, 256),
		stop:    make(chan struct{}),
		closing: make(chan struct{}),
		space:   make(chan struct{}),
		kick:    make(chan struct{}, 1),
		syncQ:   make(chan *group, 1024),
		clock:   opts.Clock,
	}
	if s.clock == nil {
		s.clock = sysClock{start: time.Now()}
	}
	for i := range s.wake {
		s.wake[i] = make(chan struct{})
		s.drops[i] = map[string]uint64{}
		s.lost[i] = map[string]uint64{}
	}
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("buffer %s: %w", cfg.Dir, err)
	}
	s.initReserve()
	mems := memFiles(cfg.Dir)
	if err := s.checkReplayRoom(mems); err != nil {
		return nil, err
	}
	prev, serr := readSidecar(cfg.Dir)
	if serr != nil {
		// Without it a short store cannot be told from a small one; the store itself is opened
		// and checked as usual.
		log.Error("buffer state file unreadable: a store that lost records would not be noticed at this start", "err", serr)
	}
	db, moved, err := openBadger(cfg, log, prev)
	if err != nil {
		return nil, err
	}
	if moved != "" {
		s.recoveries++
	}
	s.db = db
	s.awaitReplay(mems)
	s.secureFiles() // before this open's own writes: the new write-ahead log gets its blocks
	if err := s.recover(); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("buffer %s: recover: %w", cfg.Dir, err)
	}
	s.lastWall, s.lastMono = s.clock.Now()
	s.markMono = s.lastMono
	s.checkRestart(s.lastWall)
	err = s.reconcile(prev, moved)
	if err == nil {
		err = s.markOpen()
	}
	if err == nil {
		err = s.db.Update(func(txn *badger.Txn) error { return s.putClock(txn, s.lastWall) })
	}
	if err == nil {
		err = s.db.Sync()
	}
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("buffer %s: %w", cfg.Dir, err)
	}
	s.measure()
	s.countLeftover()
	if s.reg != nil {
		s.coll = newCollector(s)
		if err := s.reg.Register(s.coll); err != nil {
			_ = db.Close()
			return nil, fmt.Errorf("buffer %s: register metrics: %w", cfg.Dir, err)
		}
	}
	for i := range s.st {
		s.next[i] = s.st[i].last
		s.handed[i].Store(s.next[i])
	}
	s.stepUnsaved = false // saved above
	for i := range s.ageLogAt {
		s.ageLogAt[i] = s.lastMono - time.Minute // the first drop is logged at once
	}
	s.saveSidecar(true)
	s.secureFiles() // Badger's logs get their blocks before the reserve file takes any
	s.checkReserve()
	s.bg.Add(3)
	go s.writer()
	go s.syncer()
	go s.maintain()
	return s, nil
}

// recover rebuilds the per-stream state from the keys (values are not read).
func (s *Store) recover() error {
	return s.db.View(func(txn *badger.Txn) error {
		if err := s.loadClockStep(txn); err != nil {
			return err
		}
		if err := s.loadClockMark(txn); err != nil {
			return err
		}
		if s.step.at.After(s.seen) { // a store of an earlier version saved no mark
			s.seen = s.step.at
		}
		for i := range s.st {
			st := &s.st[i]
			for _, m := range []struct {
				kind byte
				dst  *uint64
			}{{metaHead, &st.head}, {metaAcked, &st.acked}, {metaFloor, &st.floor}, {metaRemoved, &st.removed}} {
				item, err := txn.Get(metaKey(uint8(i), m.kind))
				if errors.Is(err, badger.ErrKeyNotFound) {
					continue
				} else if err != nil {
					return err
				}
				if err := item.Value(func(v []byte) error {
					if len(v) != 8 {
						return fmt.Errorf("stream %s: meta %c has %d bytes", signal.Stream(i), m.kind, len(v))
					}
					*m.dst = binary.BigEndian.Uint64(v)
					return nil
				}); err != nil {
					return err
				}
			}
			if err := s.loadDrops(txn, i); err != nil {
				return err
			}
			it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: false, Prefix: qprefix(uint8(i))})
			for it.Rewind(); it.Valid(); it.Next() {
				k, ok := parseQKey(it.Item().Key())
				if !ok {
					s.log.Warn("skipping malformed key", "stream", signal.Stream(i), "key", fmt.Sprintf("%x", it.Item().Key()))
					continue
				}
				if st.first == 0 {
					st.first, st.oldest = k.seq, s.step.ageFrom(signal.Stream(i), k)
				}
				if k.seq > s.step.seq[i] && k.t.After(s.seen) { // stamped after the last step
					s.seen = k.t
				}
				st.last = k.seq
				st.count++
				st.bytes += uint64(k.size)
			}
			it.Close()
			st.last = max(st.last, st.head, st.floor)
			if st.count > 0 || st.last > 0 {
				s.log.Info("stream recovered", "stream", signal.Stream(i), "records", st.count,
					"bytes", st.bytes, "first", st.first, "last", st.last, "acked", st.acked)
			}
		}
		return nil
	})
}

// markOpen reads the store's incarnation, creating one when the store has none (new, reset or moved
// aside: its sequences start again), and removes the clean-shutdown marker. When that was missing
// (crash, power cut) every stream's sequences jump by uncleanGap, and the new floor is made durable
// before any append.
func (s *Store) markOpen() error {
	clean := metaKey(0xff, metaClean)
	return s.db.Update(func(txn *badger.Txn) error {
		item, err := txn.Get(metaKey(0xff, metaIncarnation))
		switch {
		case err == nil:
			v, verr := item.ValueCopy(nil)
			if verr != nil {
				return fmt.Errorf("read incarnation: %w", verr)
			}
			if validIncarnation(string(v)) {
				s.incarnation = string(v)
				break
			}
			// A damaged name cannot be trusted to be ours: a new life re-sends the waiting records
			// under new ids (possible duplicates downstream) rather than risk colliding ids (loss).
			s.log.Error("buffer incarnation unreadable, starting a new one", "stored", fmt.Sprintf("%q", v))
			fallthrough
		case errors.Is(err, badger.ErrKeyNotFound):
			s.incarnation = newIncarnation()
			if err := txn.Set(metaKey(0xff, metaIncarnation), []byte(s.incarnation)); err != nil {
				return err
			}
			s.log.Info("new buffer incarnation", "incarnation", s.incarnation)
		default:
			return fmt.Errorf("read incarnation: %w", err)
		}
		_, err = txn.Get(clean)
		wasClean := err == nil
		if err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
			return fmt.Errorf("read clean marker: %w", err)
		}
		for i := range s.st {
			st := &s.st[i]
			if wasClean || st.last == 0 {
				continue
			}
			st.last += uncleanGap
			st.floor = st.last
			if err := txn.Set(metaKey(uint8(i), metaFloor), binary.BigEndian.AppendUint64(nil, st.floor)); err != nil {
				return err
			}
			s.log.Warn("store was not closed cleanly, sequences skip ahead", "stream", signal.Stream(i), "next", st.last+1)
		}
		if wasClean {
			return txn.Delete(clean)
		}
		return nil
	})
}

func (s *Store) enter() error {
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	s.calls.Add(1)
	return nil
}

func checkStream(st signal.Stream) error {
	if st >= signal.NumStreams {
		return fmt.Errorf("buffer: unknown stream %d", st)
	}
	return nil
}

// Append implements Buffer.
func (s *Store) Append(ctx context.Context, stream signal.Stream, records ...[]byte) ([]uint64, error) {
	return s.appendMeta(ctx, stream, nil, records)
}

// appendMeta is Append, with user meta keys written in the same transaction (see AppendMeta).
func (s *Store) appendMeta(ctx context.Context, stream signal.Stream, meta []Meta, records [][]byte) ([]uint64, error) {
	if err := checkStream(stream); err != nil {
		return nil, err
	}
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.calls.Done()
	if len(records) == 0 {
		return nil, nil
	}
	var size int64
	for i, r := range records {
		if len(r) > maxRecord {
			return nil, fmt.Errorf("buffer: record %d of %d is %d bytes, above the %d-byte limit", i, len(records), len(r), maxRecord)
		}
		size += int64(len(r) + entryOverhead)
	}
	for _, m := range meta {
		size += int64(len(m.Key) + len(m.Value) + entryOverhead)
	}
	if limit := int64(s.cfg.MaxBytes); size > limit {
		// Not even an empty store holds it: evicting the backlog (drop_oldest) or waiting for
		// acks (block) would not make room.
		s.countDrop(stream, "full", uint64(len(records)))
		return nil, fmt.Errorf("%w: %d records of %d bytes do not fit in max_bytes %d", ErrFull, len(records), size, limit)
	}
	req := &appendReq{stream: stream, records: records, meta: meta, size: size, done: make(chan appendRes, 1)}
	for {
		space := s.spaceChan()
		select {
		case s.reqs <- req:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-s.closing:
			return nil, ErrClosed
		}
		res := <-req.done
		if !errors.Is(res.err, errRetry) {
			return res.seqs, res.err
		}
		select { // when_full: block
		case <-space:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %w", ErrFull, ctx.Err())
		case <-s.closing:
			return nil, ErrClosed
		}
	}
}

// MaxRecord is the largest record Append accepts: it keeps one record well inside a value-log
// file and a Badger batch. Writers split their data below it.
const MaxRecord = maxRecord

const maxRecord = 512 << 10

// Read implements Buffer. Records are copies: they stay valid as long as the caller keeps them.
func (s *Store) Read(ctx context.Context, stream signal.Stream, after uint64, max int) ([]signal.Record, error) {
	if err := checkStream(stream); err != nil {
		return nil, err
	}
	if max <= 0 {
		return nil, fmt.Errorf("buffer: read max %d must be positive", max)
	}
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.calls.Done()
	for {
		s.mu.Lock()
		wake, last := s.wake[stream], s.st[stream].last
		s.mu.Unlock()
		if last > after {
			recs, next, err := s.scan(stream, after, last, max)
			if err != nil || len(recs) > 0 {
				return recs, err
			}
			if next > after { // only corrupt records were found: go on past them
				after = next
				continue
			}
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-s.closing:
			return nil, ErrClosed
		}
	}
}

// scan reads up to max valid records in (after, last]. Records beyond last are committed but not
// yet reported durable (sync: always) and stay invisible. next is the last sequence looked at.
func (s *Store) scan(stream signal.Stream, after, last uint64, max int) (recs []signal.Record, next uint64, err error) {
	var corrupt []qkeyInfo
	err = s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: false, Prefix: qprefix(uint8(stream))})
		defer it.Close()
		for it.Seek(qseek(uint8(stream), after+1)); it.Valid() && len(recs) < max; it.Next() {
			item := it.Item()
			k, ok := parseQKey(item.Key())
			if !ok {
				continue
			}
			if k.seq > last {
				break
			}
			next = k.seq
			v, err := item.ValueCopy(nil)
			if err != nil {
				s.log.Error("record unreadable", "stream", stream, "seq", k.seq, "err", err)
				corrupt = append(corrupt, k)
				continue
			}
			p, err := unframe(k.seq, k.size, v)
			if err != nil {
				s.log.Error("record corrupt, skipped", "stream", stream, "seq", k.seq, "err", err)
				corrupt = append(corrupt, k)
				continue
			}
			recs = append(recs, signal.Record{Seq: k.seq, Data: p})
		}
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("buffer %s: read %s after %d: %w", s.cfg.Dir, stream, after, err)
	}
	var read int64
	for _, r := range recs {
		read += int64(len(r.Data))
	}
	s.touch(read)
	if len(corrupt) > 0 {
		s.dropCorrupt(stream, corrupt)
	}
	return recs, next, nil
}

// Ack implements Buffer.
func (s *Store) Ack(stream signal.Stream, upTo uint64) error {
	if err := checkStream(stream); err != nil {
		return err
	}
	if err := s.enter(); err != nil {
		return err
	}
	defer s.calls.Done()
	s.mu.Lock()
	last := s.st[stream].last
	s.mu.Unlock()
	if upTo > last {
		return fmt.Errorf("buffer: ack %s up to %d beyond the last appended sequence %d", stream, upTo, last)
	}
	s.headMu.Lock()
	defer s.headMu.Unlock()
	_, err := s.removeHead(stream, func(k qkeyInfo) bool { return k.seq <= upTo }, "", upTo)
	return err
}

// Stats implements Buffer.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out Stats
	for i, st := range s.st {
		d := make(map[string]uint64, len(s.drops[i]))
		for k, v := range s.drops[i] {
			d[k] = v
		}
		out.Streams[i] = StreamStats{Records: st.count, Bytes: st.bytes, FirstSeq: st.first,
			LastSeq: st.last, Acked: st.acked, Dropped: d}
		if st.count > 0 {
			out.Streams[i].Oldest = st.oldest
		}
	}
	out.DiskSize = s.usedLocked()
	out.MaxBytes = int64(s.cfg.MaxBytes)
	out.Full, out.Err = s.full, s.ioErr
	if s.lossErr != nil && time.Now().Before(s.lossUntil) {
		out.Err = errors.Join(out.Err, s.lossErr)
	}
	return out
}

// Incarnation names this life of the store (see Buffer.Incarnation).
func (s *Store) Incarnation() string { return s.incarnation }

// LastSeq returns the last appended sequence of stream (0 for an unknown stream). It is the
// uplink's Tail, asked for every batch: unlike Stats it copies nothing.
func (s *Store) LastSeq(stream signal.Stream) uint64 {
	if checkStream(stream) != nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st[stream].last
}

// usedLocked is the store's size as max_bytes counts it: the last measurement, the bytes written
// since, and the bytes accepted for writing. s.mu must be held.
func (s *Store) usedLocked() int64 {
	return s.disk + s.written + s.pending
}

// GetMeta returns a value stored with PutMeta (the feature engine's window checkpoints).
func (s *Store) GetMeta(key string) ([]byte, bool, error) {
	if err := s.enter(); err != nil {
		return nil, false, err
	}
	defer s.calls.Done()
	var v []byte
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(append([]byte{pfxUser}, key...))
		if err != nil {
			return err
		}
		v, err = item.ValueCopy(nil)
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("buffer %s: get meta %q: %w", s.cfg.Dir, key, err)
	}
	return v, true, nil
}

// PutMeta durably stores value under key, in a key space separate from the queues. It is synced
// like an Append.
func (s *Store) PutMeta(key string, value []byte) error {
	if key == "" {
		return errors.New("buffer: put meta: empty key")
	}
	if err := s.enter(); err != nil {
		return err
	}
	defer s.calls.Done()
	if err := s.metaRoom(int64(len(key) + len(value) + entryOverhead)); err != nil {
		return fmt.Errorf("buffer %s: put meta %q: %w", s.cfg.Dir, key, err)
	}
	s.dbMu.RLock()
	err := s.db.Update(func(txn *badger.Txn) error {
		return txn.Set(append([]byte{pfxUser}, key...), append([]byte(nil), value...))
	})
	s.dbMu.RUnlock()
	s.dirty.Store(true)
	if err == nil && s.cfg.Sync == SyncAlways {
		err = s.db.Sync()
	}
	if err != nil {
		return fmt.Errorf("buffer %s: put meta %q: %w", s.cfg.Dir, key, err)
	}
	return nil
}

// Close implements Buffer: it waits for in-flight calls, syncs and closes Badger.
func (s *Store) Close() error {
	s.closeMu.Lock()
	if s.closed {
		s.closeMu.Unlock()
		return nil
	}
	s.closed = true
	s.closeMu.Unlock()
	close(s.closing)
	s.calls.Wait()
	close(s.stop)
	s.bg.Wait()
	if s.coll != nil {
		s.reg.Unregister(s.coll)
	}
	// A step since the last maintenance tick is seen before the mark is saved (the next start
	// compares the clock with it), and saved with a step checkClock could not save (full disk).
	s.headMu.Lock()
	wall, mono := s.clock.Now()
	s.detectStep(wall, mono)
	s.headMu.Unlock()
	err := s.db.Update(func(txn *badger.Txn) error {
		if err := s.putClock(txn, wall); err != nil {
			return err
		}
		return txn.Set(metaKey(0xff, metaClean), nil)
	})
	err = errors.Join(err, s.db.Sync())
	if cerr := s.db.Close(); cerr != nil {
		err = errors.Join(err, cerr)
	}
	// The next start may be on a full disk: the reserve file fits the LSM the store leaves.
	s.measure()
	s.checkReserve()
	s.saveSidecar(false)
	if err != nil {
		return fmt.Errorf("buffer %s: close: %w", s.cfg.Dir, err)
	}
	return nil
}

// touch counts bytes that went through Badger's mmaps and trims the mappings every 1 MiB, so a
// burst of reads or writes does not grow the RSS until the next maintenance tick. A trim reads
// /proc/self/maps (tens of µs): at 5 MB/s of records that is a few per second.
func (s *Store) touch(n int64) {
	if s.touched.Add(n) >= 1<<20 {
		s.touched.Store(0)
		trimMappings(s.cfg.Dir)
	}
}

func (s *Store) spaceChan() chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.space
}

// signalSpaceLocked wakes blocked appends. s.mu must be held.
func (s *Store) signalSpaceLocked() {
	close(s.space)
	s.space = make(chan struct{})
}

func (s *Store) countDrop(stream signal.Stream, reason string, n uint64) {
	s.mu.Lock()
	s.drops[stream][reason] += n
	s.mu.Unlock()
}

func (s *Store) setIOErr(err error) {
	s.mu.Lock()
	s.ioErr = err
	s.diskErrs++
	s.mu.Unlock()
	s.log.Error("buffer write failed", "dir", s.cfg.Dir, "err", err)
}
