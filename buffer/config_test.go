package buffer

import (
	"strings"
	"testing"
	"time"

	"github.com/gemba-io/gemba/config"
)

func TestConfigDecode(t *testing.T) {
	cfg := DefaultConfig()
	doc := `
dir: /var/lib/gemba/buf
max_bytes: 512MiB
max_age: 24h
when_full: block
sync: always
badger: {memtable_size: 4MiB, value_log_file_size: 16MiB}
`
	if err := config.NewDecoder().Unmarshal([]byte(doc), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.MaxBytes != 512<<20 || cfg.MaxAge != 24*time.Hour || cfg.WhenFull != Block || cfg.Sync != SyncAlways ||
		cfg.Badger.MemTableSize != 4<<20 || cfg.Badger.ValueLogFileSize != 16<<20 || cfg.Badger.NumMemtables != 2 {
		t.Fatalf("decoded %+v", cfg)
	}
}

func TestConfigErrors(t *testing.T) {
	cfg := DefaultConfig()
	doc := `
dir: ""
max_bytes: 1MiB
max_age: -1h
when_full: sometimes
sync: batch
sync_interval: 0s
badger: {num_compactors: 1, value_log_file_size: 4GiB}
`
	err := config.NewDecoder().Unmarshal([]byte(doc), &cfg)
	if err == nil {
		t.Fatal("want errors")
	}
	for _, want := range []string{
		"dir: required",
		"max_bytes: 1MiB is too small",
		"max_age: must not be negative",
		`when_full: "sometimes" is not one of drop_oldest, drop_newest, block`,
		"sync_interval: must be positive",
		"badger.num_compactors: 1 is outside 2..8",
		"badger.value_log_file_size: 4GiB is outside",
		"line ",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("errors lack %q:\n%v", want, err)
		}
	}
	if _, err := Open(cfg, Options{}); err == nil || !strings.Contains(err.Error(), "buffer config") {
		t.Fatalf("Open with a bad config = %v", err)
	}
}

func TestConfigUnknownSync(t *testing.T) {
	cfg := DefaultConfig()
	err := config.NewDecoder().Unmarshal([]byte("sync: sometimes\nmax_bytes: 2GB\n"), &cfg)
	if err == nil || !strings.Contains(err.Error(), `sync: "sometimes" is not one of always, batch, none`) {
		t.Fatalf("err = %v", err)
	}
}
