package buffer

import (
	"path/filepath"
	"time"

	"github.com/gemba-io/gemba/config"
)

// Full policies (Config.WhenFull).
const (
	DropOldest = "drop_oldest" // evict the oldest records (samples first, then features, then status)
	DropNewest = "drop_newest" // refuse the new records with ErrFull
	Block      = "block"       // make Append wait for space (backpressure to collectors)
)

// Sync modes (Config.Sync).
const (
	SyncAlways = "always" // Append returns after fsync: a power cut loses nothing that was acknowledged
	SyncBatch  = "batch"  // fsync every SyncInterval: a power cut loses at most the last interval
	SyncNone   = "none"   // the kernel decides: a power cut can lose ~30 s (dirty writeback); a crash loses nothing
)

// Config configures the buffer. Zero fields take the DefaultConfig values when passed through
// DefaultConfig and decoded over it (the agent does this); Open also fills zero Badger knobs.
type Config struct {
	// Dir is the Badger directory. Required.
	Dir string `yaml:"dir"`
	// MaxBytes caps the store's size on disk, LSM and value log included.
	MaxBytes config.ByteSize `yaml:"max_bytes"`
	// MaxAge drops records older than this (counted as "max_age"). 0 keeps records forever.
	MaxAge time.Duration `yaml:"max_age"`
	// WhenFull is drop_oldest, drop_newest or block.
	WhenFull string `yaml:"when_full"`
	// Sync is always, batch or none.
	Sync string `yaml:"sync"`
	// SyncInterval is the fsync period of sync: batch.
	SyncInterval time.Duration `yaml:"sync_interval"`
	// Badger holds the memory and file-size knobs; the defaults fit a gateway.
	Badger BadgerConfig `yaml:"badger"`
}

// BadgerConfig sizes Badger for a small box. Zero values are filled by Open from MaxBytes.
type BadgerConfig struct {
	// MemTableSize is the size of one memtable. Records live in the value log, so memtables only
	// hold keys and pointers (~100 B per record): 2 MiB covers ~20k records, 40 s of chunks at
	// the writer's busiest (one per 2 ms linger). Each memtable is an arena on the Go heap, so it counts
	// twice in RSS under the default GOGC.
	MemTableSize config.ByteSize `yaml:"memtable_size"`
	// NumMemtables is how many memtables may be in memory at once (active + flushing).
	NumMemtables int `yaml:"num_memtables"`
	// BlockCacheSize caches LSM blocks; 0 is right without compression (blocks are read from mmap).
	BlockCacheSize config.ByteSize `yaml:"block_cache_size"`
	// IndexCacheSize caps memory for table indexes and bloom filters; 0 keeps them all (the LSM is tiny).
	IndexCacheSize config.ByteSize `yaml:"index_cache_size"`
	// ValueThreshold: records at least this big go to the value log, smaller ones stay in the LSM.
	ValueThreshold config.ByteSize `yaml:"value_threshold"`
	// ValueLogFileSize is the size of one value-log file, the unit in which disk space is given
	// back. 0 means MaxBytes/512 within [1 MiB, 4 MiB]: value-log GC reads a whole file through
	// its mmap, so the file size is a step in the agent's peak RSS (64 MiB files made 113-125 MiB
	// peaks at 5,000 variables × 100 ms; see docs/BENCHMARKS.md).
	ValueLogFileSize config.ByteSize `yaml:"value_log_file_size"`
	// NumCompactors is the number of compaction goroutines (Badger needs at least 2).
	NumCompactors int `yaml:"num_compactors"`
}

// DefaultConfig returns the defaults: a 2 GiB / 72 h buffer that drops the oldest samples when full
// and fsyncs every 200 ms.
func DefaultConfig() Config {
	return Config{
		Dir:          "/var/lib/gemba/buffer",
		MaxBytes:     2 << 30,
		MaxAge:       72 * time.Hour,
		WhenFull:     DropOldest,
		Sync:         SyncBatch,
		SyncInterval: 200 * time.Millisecond,
		Badger: BadgerConfig{
			MemTableSize:   2 << 20,
			NumMemtables:   2,
			BlockCacheSize: 0,
			IndexCacheSize: 0,
			ValueThreshold: 256,
			NumCompactors:  2,
		},
	}
}

// minMaxBytes is the smallest useful cap: Badger's fixed overhead (a memtable log, a value-log
// file, the manifest) needs a few MiB before any record fits.
const minMaxBytes = 4 << 20

// Validate implements config.Validator.
func (c Config) Validate(r config.Report) {
	if c.Dir == "" {
		r.Errorf("dir", "required: the directory of the buffer's Badger store")
	} else if !filepath.IsAbs(c.Dir) && !filepath.IsLocal(c.Dir) {
		r.Errorf("dir", "%q is neither absolute nor relative to the working directory", c.Dir)
	}
	if c.MaxBytes < minMaxBytes {
		r.Errorf("max_bytes", "%v is too small: at least 4MiB (Badger's files need a few MiB)", c.MaxBytes)
	}
	if c.MaxAge < 0 {
		r.Errorf("max_age", "must not be negative (0 keeps records until max_bytes)")
	}
	switch c.WhenFull {
	case DropOldest, DropNewest, Block:
	default:
		r.Errorf("when_full", "%q is not one of drop_oldest, drop_newest, block", c.WhenFull)
	}
	switch c.Sync {
	case SyncAlways, SyncNone:
	case SyncBatch:
		if c.SyncInterval <= 0 {
			r.Errorf("sync_interval", "must be positive with sync: batch (e.g. 200ms)")
		} else if c.SyncInterval > time.Minute {
			r.Errorf("sync_interval", "%v is longer than 1m: a power cut would lose that much", c.SyncInterval)
		}
	default:
		r.Errorf("sync", "%q is not one of always, batch, none", c.Sync)
	}
	c.Badger.validate(r.Sub("badger"))
}

func (b BadgerConfig) validate(r config.Report) {
	if b.MemTableSize != 0 && (b.MemTableSize < 1<<20 || b.MemTableSize > 256<<20) {
		r.Errorf("memtable_size", "%v is outside 1MiB..256MiB", b.MemTableSize)
	}
	if b.NumMemtables < 0 || b.NumMemtables == 1 || b.NumMemtables > 16 {
		r.Errorf("num_memtables", "%d is outside 2..16", b.NumMemtables)
	}
	if b.BlockCacheSize < 0 || b.IndexCacheSize < 0 {
		r.Errorf("", "cache sizes must not be negative")
	}
	if b.ValueThreshold < 0 || b.ValueThreshold > 1<<20 {
		r.Errorf("value_threshold", "%v is outside 0..1MiB", b.ValueThreshold)
	}
	if b.ValueLogFileSize != 0 && (b.ValueLogFileSize < 1<<20 || b.ValueLogFileSize >= 2<<30) {
		r.Errorf("value_log_file_size", "%v is outside 1MiB..2GiB", b.ValueLogFileSize)
	}
	if b.NumCompactors < 0 || b.NumCompactors == 1 || b.NumCompactors > 8 {
		r.Errorf("num_compactors", "%d is outside 2..8 (Badger needs at least 2)", b.NumCompactors)
	}
}

// maxDefaultVlog caps the derived value-log file size (see BadgerConfig.ValueLogFileSize).
const maxDefaultVlog = 4 << 20

// withDefaults fills zero Badger knobs and derives the value-log file size from MaxBytes.
func (c Config) withDefaults() Config {
	d := DefaultConfig().Badger
	b := &c.Badger
	if b.MemTableSize == 0 {
		b.MemTableSize = d.MemTableSize
	}
	if b.NumMemtables == 0 {
		b.NumMemtables = d.NumMemtables
	}
	if b.ValueThreshold == 0 {
		b.ValueThreshold = d.ValueThreshold
	}
	if b.NumCompactors == 0 {
		b.NumCompactors = d.NumCompactors
	}
	if b.ValueLogFileSize == 0 {
		b.ValueLogFileSize = min(max(c.MaxBytes/512, 1<<20), maxDefaultVlog)
	}
	if c.SyncInterval <= 0 {
		c.SyncInterval = 200 * time.Millisecond
	}
	return c
}
