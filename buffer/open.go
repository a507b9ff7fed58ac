package buffer

import (
	"context"
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

	"github.com/gemba-io/gemba/config"
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

// openBadger opens the directory; when Badger refuses a directory it left itself (a damaged
// manifest, a truncated table), the directory is renamed to <dir>.corrupt-<time> and a new store is
// created. Errors of the environment (permissions, a lock held by another process, a full or
// read-only disk) are returned instead: moving the data aside would not help.
func openBadger(cfg Config, log *slog.Logger) (db *badger.DB, movedTo string, err error) {
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, "", fmt.Errorf("buffer %s: %w", cfg.Dir, err)
	}
	db, err = tryOpen(cfg, log)
	if err == nil {
		return db, "", nil
	}
	if environmental(err) {
		return nil, "", fmt.Errorf("buffer %s: open: %w", cfg.Dir, err)
	}
	movedTo = cfg.Dir + ".corrupt-" + time.Now().UTC().Format("20060102T150405.000Z")
	log.Error("buffer store unreadable, moving it aside and starting empty",
		"dir", cfg.Dir, "moved_to", movedTo, "err", err)
	if rerr := os.Rename(cfg.Dir, movedTo); rerr != nil {
		return nil, "", fmt.Errorf("buffer %s: open: %w; moving it aside: %w", cfg.Dir, err, rerr)
	}
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, "", fmt.Errorf("buffer %s: %w", cfg.Dir, err)
	}
	pruneMovedAside(cfg.Dir, log)
	db, err = tryOpen(cfg, log)
	if err != nil {
		return nil, "", fmt.Errorf("buffer %s: open after moving the damaged store to %s: %w", cfg.Dir, movedTo, err)
	}
	return db, movedTo, nil
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
