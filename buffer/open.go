package buffer

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/table"

	"github.com/gemba-io/gemba/config"
	"github.com/gemba-io/gemba/signal"
)

// validateConfig runs Config.Validate outside of a YAML document (Open is also called from code).
func validateConfig(cfg Config) error {
	if err := config.NewDecoder().Unmarshal(nil, &cfg); err != nil {
		return fmt.Errorf("buffer config: %w", err)
	}
	return nil
}

// badgerOptions sizes Badger for a gateway: records live in the value log, so the LSM holds only
// keys and pointers and stays a few MiB; memtables are small and few, no block cache (no
// compression), one L0 table triggers compaction so deletions reach the value-log discard stats soon.
func badgerOptions(cfg Config, log *slog.Logger) badger.Options {
	b := cfg.Badger
	return badger.DefaultOptions(cfg.Dir).
		WithLogger(badgerLogger{log.With("lib", "badger")}).
		WithMetricsEnabled(false). // Badger's metrics are process-global expvars
		WithDetectConflicts(false).
		WithSyncWrites(false). // the store syncs itself, once per group or per interval
		WithCompression(options.None).
		WithMemTableSize(int64(b.MemTableSize)).
		WithNumMemtables(b.NumMemtables).
		WithBlockCacheSize(int64(b.BlockCacheSize)).
		WithIndexCacheSize(int64(b.IndexCacheSize)).
		WithValueThreshold(int64(b.ValueThreshold)).
		WithValueLogFileSize(int64(b.ValueLogFileSize)).
		WithNumCompactors(b.NumCompactors).
		WithNumLevelZeroTables(1).
		WithNumLevelZeroTablesStall(8).
		WithBaseTableSize(1 << 20).
		WithBaseLevelSize(4 << 20).
		WithNumGoroutines(2)
}

// openBadger opens the directory. A store that fails the preflight check (files Badger would
// trust blindly: its MANIFEST, its tables, its write-ahead logs) or that Badger refuses is renamed
// to <dir>.corrupt-<time>; a new store is created and everything that can be read from the damaged
// one is salvaged into it (see salvage). Errors of the environment (permissions, a lock held by
// another process, a full or read-only disk) are returned instead: moving the data aside would not
// help. prev is the state file of the store's previous life (nil when none): its incarnation and
// positions fill in what the salvage cannot find.
func openBadger(cfg Config, log *slog.Logger, prev *sidecar) (db *badger.DB, movedTo string, err error) {
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, "", fmt.Errorf("buffer %s: %w", cfg.Dir, err)
	}
	damage := preflight(cfg.Dir, prev != nil, log)
	if damage == nil {
		db, err = tryOpen(cfg, log)
		if err == nil {
			return db, "", nil
		}
		if environmental(err) {
			return nil, "", fmt.Errorf("buffer %s: open: %w", cfg.Dir, err)
		}
		damage = err
	}
	movedTo = cfg.Dir + ".corrupt-" + time.Now().UTC().Format("20060102T150405.000Z")
	log.Error("buffer store damaged, moving it aside and salvaging what it holds into a new store",
		"dir", cfg.Dir, "moved_to", movedTo, "err", damage)
	if rerr := os.Rename(cfg.Dir, movedTo); rerr != nil {
		return nil, "", fmt.Errorf("buffer %s: open: %w; moving it aside: %w", cfg.Dir, damage, rerr)
	}
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, "", fmt.Errorf("buffer %s: %w", cfg.Dir, err)
	}
	pruneMovedAside(cfg.Dir, log)
	db, err = tryOpen(cfg, log)
	if err != nil {
		return nil, "", fmt.Errorf("buffer %s: open after moving the damaged store to %s: %w", cfg.Dir, movedTo, err)
	}
	sv := salvage(movedTo)
	n, err := restore(db, sv, prev)
	if err != nil {
		_ = db.Close()
		return nil, "", fmt.Errorf("buffer %s: salvaging the damaged store %s: %w", cfg.Dir, movedTo, err)
	}
	log.Warn("buffer store salvaged", "dir", cfg.Dir, "from", movedTo, "records", n, "files", sv.sources)
	return db, movedTo, nil
}

// restore writes salvaged keys into a new store: records still waiting (above the salvaged head),
// the queue positions, the incarnation (so the salvaged records keep their message ids and
// JetStream still deduplicates those already sent) and user meta. The clean-shutdown marker is
// not restored: sequences skip ahead, past any record the salvage missed. It returns the number
// of records restored.
func restore(db *badger.DB, sv salvaged, prev *sidecar) (int, error) {
	u64 := func(v []byte) uint64 {
		if len(v) != 8 {
			return 0
		}
		return binary.BigEndian.Uint64(v)
	}
	// The positions never go back below what the state file saw: a head lost with a table would
	// bring acked records back (harmless duplicates, but counted wrong), a lost incarnation would
	// give the salvaged records new message ids.
	if prev != nil {
		if _, ok := sv.values[string(metaKey(0xff, metaIncarnation))]; !ok {
			sv.values[string(metaKey(0xff, metaIncarnation))] = []byte(prev.Incarnation)
		}
		for i := range signal.NumStreams {
			p, ok := prev.Streams[i.String()]
			if !ok {
				continue
			}
			for kind, v := range map[byte]uint64{metaHead: p.Head, metaAcked: p.Acked, metaRemoved: p.Removed, metaFloor: p.Last} {
				k := string(metaKey(uint8(i), kind))
				if v > u64(sv.values[k]) {
					sv.values[k] = binary.BigEndian.AppendUint64(nil, v)
				}
			}
		}
	}
	heads := map[uint8]uint64{}
	for k, v := range sv.values {
		if len(k) == 3 && k[0] == pfxMeta && k[2] == metaHead {
			heads[k[1]] = u64(v)
		}
	}
	wb := db.NewWriteBatch()
	defer wb.Cancel()
	n := 0
	for k, v := range sv.values {
		key := []byte(k)
		switch {
		case key[0] == pfxQueue:
			q, ok := parseQKey(key)
			if !ok || q.seq <= heads[key[1]] {
				continue
			}
			n++
		case key[0] == pfxMeta && len(key) == 3 && key[2] != metaClean:
		case key[0] == pfxUser:
		default:
			continue
		}
		if err := wb.Set(key, v); err != nil {
			return 0, err
		}
	}
	if err := wb.Flush(); err != nil {
		return 0, err
	}
	return n, db.Sync()
}

// preflight checks what Badger would trust without checking (or check only by panicking in a
// goroutine of its own, which no recover reaches): that the MANIFEST is there when the store held
// data, that it parses, that every table it lists exists and passes its checksums, that no table
// is left out of it (Badger deletes those), and that no write-ahead log has valid entries after a
// damaged one (Badger stops replaying at the damage and drops the rest without a word).
func preflight(dir string, hadState bool, log *slog.Logger) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil // tryOpen reports it
	}
	tables := map[uint64]bool{}
	var mems []string
	data := false
	for _, e := range entries {
		name := e.Name()
		switch filepath.Ext(name) {
		case ".sst":
			if id, ok := table.ParseFileID(name); ok {
				tables[id] = true
			}
			data = true
		case ".mem":
			mems = append(mems, name)
			data = true
		case ".vlog":
			data = true
		}
	}
	mpath := filepath.Join(dir, badger.ManifestFilename)
	f, err := os.Open(mpath)
	if errors.Is(err, os.ErrNotExist) {
		if data || hadState {
			return fmt.Errorf("%s is missing from a store that held data", mpath)
		}
		return nil
	} else if err != nil {
		return nil // tryOpen reports it (permissions are environmental)
	}
	mf, _, err := badger.ReplayManifestFile(f, 0, badger.DefaultOptions(dir).WithLogger(badgerLogger{log}))
	f.Close()
	if err != nil {
		return fmt.Errorf("%s: %w", mpath, err)
	}
	for id := range mf.Tables {
		if !tables[id] {
			return fmt.Errorf("%s lists table %d, which is missing", mpath, id)
		}
		path := table.NewFilename(id, dir)
		if _, err := readTable(path, nil); err != nil {
			return fmt.Errorf("table %s: %w", path, err)
		}
	}
	for id := range tables {
		if _, ok := mf.Tables[id]; !ok {
			return fmt.Errorf("table %s is not in %s (a damaged or older MANIFEST)", table.NewFilename(id, dir), mpath)
		}
	}
	for _, name := range mems {
		path := filepath.Join(dir, name)
		b, err := os.ReadFile(path)
		if err != nil {
			return nil // tryOpen reports it
		}
		if sc := scanLog(b); sc.damaged {
			return fmt.Errorf("write-ahead log %s is damaged at offset %d, with valid entries after it", path, sc.badAt)
		}
	}
	return nil
}

// keepMovedAside is how many moved-aside stores are kept for inspection. A failing disk that
// corrupts the store again and again must not fill the filesystem with copies.
const keepMovedAside = 2

func pruneMovedAside(dir string, log *slog.Logger) {
	old, _ := filepath.Glob(dir + ".corrupt-*")
	sort.Strings(old) // the UTC timestamps sort in time order
	for len(old) > keepMovedAside {
		if err := os.RemoveAll(old[0]); err != nil {
			log.Error("removing an old moved-aside store failed", "dir", old[0], "err", err)
		} else {
			log.Warn("removed an old moved-aside store", "dir", old[0], "kept", keepMovedAside)
		}
		old = old[1:]
	}
}

// tryOpen turns Badger's panics on damaged files into errors.
func tryOpen(cfg Config, log *slog.Logger) (db *badger.DB, err error) {
	defer func() {
		if p := recover(); p != nil {
			db, err = nil, fmt.Errorf("badger panicked while opening: %v", p)
		}
	}()
	return badger.Open(badgerOptions(cfg, log))
}

func environmental(err error) bool {
	for _, e := range []error{os.ErrPermission, syscall.ENOSPC, syscall.EROFS, syscall.EMFILE, syscall.ENFILE, syscall.ENOMEM} {
		if errors.Is(err, e) {
			return true
		}
	}
	msg := err.Error()
	return strings.Contains(msg, "Cannot acquire directory lock") || strings.Contains(msg, "permission denied") ||
		strings.Contains(msg, "no space left") || strings.Contains(msg, "read-only file system")
}

// badgerLogger sends Badger's printf-style logs to slog. Badger's INFO lines are routine
// (compactions, GC) and go to Debug.
type badgerLogger struct{ log *slog.Logger }

func (l badgerLogger) logf(level slog.Level, format string, args []any) {
	if !l.log.Enabled(context.Background(), level) {
		return
	}
	l.log.Log(context.Background(), level, "badger", "msg", strings.TrimSpace(fmt.Sprintf(format, args...)))
}

func (l badgerLogger) Errorf(f string, a ...any)   { l.logf(slog.LevelError, f, a) }
func (l badgerLogger) Warningf(f string, a ...any) { l.logf(slog.LevelWarn, f, a) }
func (l badgerLogger) Infof(f string, a ...any)    { l.logf(slog.LevelDebug, f, a) }
func (l badgerLogger) Debugf(f string, a ...any)   { l.logf(slog.LevelDebug-4, f, a) }

// countLeftover counts as garbage the value-log data an earlier life removed and did not reclaim
// (acked on a full disk, where reclaims are refused, or closed before one was due): the value
// logs' data less the records still waiting. The garbage counter is kept in memory only, and without
// this a store whose leftover alone is over max_bytes would never reclaim with an empty queue: no
// removal would come to count any garbage, and every append would be refused.
func (s *Store) countLeftover() {
	var vlog int64
	secured := s.securedSizes()
	entries, _ := os.ReadDir(s.cfg.Dir)
	for _, e := range entries {
		if filepath.Ext(e.Name()) != ".vlog" || !e.Type().IsRegular() {
			continue
		}
		if size, ok := secured[e.Name()]; ok {
			if end, ok := dataEnd(filepath.Join(s.cfg.Dir, e.Name()), size); ok {
				vlog += end
				continue
			}
		}
		if info, err := e.Info(); err == nil {
			size := info.Size() // Badger truncates a closed log to its data
			if st, ok := info.Sys().(*syscall.Stat_t); ok {
				size = min(size, st.Blocks*512) // an open one is sparse past it
			}
			vlog += size
		}
	}
	s.mu.Lock()
	for _, st := range s.st {
		vlog -= int64(st.bytes + st.count*entryOverhead)
	}
	s.garbage = max(vlog, 0)
	kick := s.garbage >= 2*int64(s.cfg.Badger.ValueLogFileSize)
	s.mu.Unlock()
	if kick {
		s.kickReclaim() // as a removal of that much would (removedLocked)
	}
}
