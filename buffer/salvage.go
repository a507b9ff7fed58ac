package buffer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/table"
	"github.com/dgraph-io/ristretto/v2/z"
)

// Salvage reads a store Badger refused, or that the preflight found damaged, without Badger:
// its write-ahead logs (.mem), value logs (.vlog) and every table (.sst) that passes its checksum.
// Badger writes each entry with its full (versioned) key to the logs, so the records survive a
// lost or damaged MANIFEST or table. The newest version of every key wins; deletions count.

// Badger v4's log entry format (value.go, structs.go, memtable.go): a 20-byte file header, then
// entries of meta(1) userMeta(1) uvarint(klen) uvarint(vlen) uvarint(expiresAt) key value
// CRC32C(header‖key‖value, big endian). Keys carry an 8-byte version: MaxUint64-ts, big endian.
const (
	logHeaderSize   = 20
	bitDelete       = 1 << 0
	bitValuePointer = 1 << 1
	bitFinTxn       = 1 << 7
	maxSalvageKey   = 1 << 10 // our keys are at most a few dozen bytes; user meta keys are short names
)

type logEntry struct {
	key     []byte // user key (version stripped)
	version uint64
	meta    byte
	value   []byte
}

// logScan is the result of reading one log file.
type logScan struct {
	entries []logEntry
	// damaged is set when valid entries follow a bad one: Badger stops replaying a log at its
	// first bad entry and silently drops the rest, so such a file cannot be left to Badger. A bad
	// or torn entry with nothing valid after it is what a crash leaves, and Badger handles it.
	damaged bool
	badAt   int64
}

// scanLog reads the entries of a .mem or .vlog file. It never panics on any content: lengths are
// checked against the file, and after a bad entry it searches forward for the next entry whose
// checksum holds.
func scanLog(data []byte) logScan {
	var out logScan
	if len(data) < logHeaderSize {
		return out
	}
	off := logHeaderSize
	for off < len(data) {
		e, n, ok := decodeEntry(data[off:])
		if ok && n > 0 {
			out.entries = append(out.entries, e)
			off += n
			continue
		}
		if ok && allZero(data[off:min(len(data), off+64<<10)]) {
			break // the zeroed, preallocated rest of the file
		}
		// Resynchronise: the next offset where an entry with a valid checksum starts.
		next := -1
		for j := off + 1; j+7 < len(data); j++ {
			if _, n, ok := decodeEntry(data[j:]); ok && n > 0 {
				next = j
				break
			}
		}
		if next < 0 {
			break
		}
		if !out.damaged {
			out.damaged, out.badAt = true, int64(off)
		}
		off = next
	}
	return out
}

// decodeEntry decodes one entry at the start of b. n == 0 with ok means a zero header (end of log).
func decodeEntry(b []byte) (e logEntry, n int, ok bool) {
	if len(b) < 5 {
		return e, 0, false
	}
	meta := b[0]
	i := 2
	klen, c := binary.Uvarint(b[i:])
	if c <= 0 {
		return e, 0, false
	}
	i += c
	vlen, c := binary.Uvarint(b[i:])
	if c <= 0 {
		return e, 0, false
	}
	i += c
	_, c = binary.Uvarint(b[i:])
	if c <= 0 {
		return e, 0, false
	}
	i += c
	if klen == 0 && vlen == 0 && meta == 0 && b[1] == 0 {
		return e, 0, true
	}
	if klen <= 8 || klen > maxSalvageKey || vlen > 1<<30 {
		return e, 0, false
	}
	end := i + int(klen) + int(vlen)
	if end+4 > len(b) || end+4 < i {
		return e, 0, false
	}
	if crc32.Checksum(b[:end], castagnoli) != binary.BigEndian.Uint32(b[end:]) {
		return e, 0, false
	}
	k := b[i : i+int(klen)]
	return logEntry{
		key:     append([]byte(nil), k[:len(k)-8]...),
		version: math.MaxUint64 - binary.BigEndian.Uint64(k[len(k)-8:]),
		meta:    meta,
		value:   append([]byte(nil), b[i+int(klen):end]...),
	}, end + 4, true
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// salvaged is what could be read from a damaged store: the newest live value of every key.
type salvaged struct {
	values  map[string][]byte
	sources []string // what was read and what not, for the log
}

// salvage reads every file of dir that can be read. It does not fail: what cannot be read is
// named in sources.
func salvage(dir string) salvaged {
	type versioned struct {
		version uint64
		meta    byte
		value   []byte
	}
	newest := map[string]versioned{}
	// Values in the value log, by versioned key: a table or WAL entry with a value pointer finds
	// its value here.
	vlogVals := map[string][]byte{}
	vkey := func(k []byte, v uint64) string { return string(k) + string(binary.BigEndian.AppendUint64(nil, v)) }
	put := func(k []byte, v uint64, meta byte, val []byte) {
		if old, ok := newest[string(k)]; ok && old.version > v {
			return
		}
		newest[string(k)] = versioned{v, meta, val}
	}
	out := salvaged{values: map[string][]byte{}}
	var pointers []logEntry
	for _, ext := range []string{".vlog", ".mem"} {
		files, _ := filepath.Glob(filepath.Join(dir, "*"+ext))
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				out.sources = append(out.sources, fmt.Sprintf("%s: %v", filepath.Base(f), err))
				continue
			}
			sc := scanLog(data)
			note := fmt.Sprintf("%s: %d entries", filepath.Base(f), len(sc.entries))
			if sc.damaged {
				note += fmt.Sprintf(", damaged at %d", sc.badAt)
			}
			out.sources = append(out.sources, note)
			for _, e := range sc.entries {
				if e.meta&bitFinTxn != 0 || strings.HasPrefix(string(e.key), "!badger!") {
					continue
				}
				if ext == ".vlog" {
					vlogVals[vkey(e.key, e.version)] = e.value
				}
				if e.meta&bitValuePointer != 0 {
					pointers = append(pointers, e)
					continue
				}
				put(e.key, e.version, e.meta, e.value)
			}
		}
	}
	tables, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	for _, f := range tables {
		n, err := readTable(f, func(k []byte, version uint64, meta byte, val []byte) {
			if meta&bitValuePointer != 0 {
				pointers = append(pointers, logEntry{key: k, version: version, meta: meta})
				return
			}
			put(k, version, meta, val)
		})
		if err != nil {
			out.sources = append(out.sources, fmt.Sprintf("%s: unreadable (%v), %d entries before", filepath.Base(f), err, n))
		} else {
			out.sources = append(out.sources, fmt.Sprintf("%s: %d entries", filepath.Base(f), n))
		}
	}
	for _, p := range pointers {
		if v, ok := vlogVals[vkey(p.key, p.version)]; ok {
			put(p.key, p.version, p.meta&^bitValuePointer, v)
		} else if p.meta&bitDelete != 0 {
			put(p.key, p.version, p.meta, nil)
		}
	}
	for k, v := range newest {
		if v.meta&bitDelete == 0 {
			out.values[k] = v.value
		}
	}
	return out
}

// readTable calls fn for every entry of a table that passes Badger's own checksum verification.
// Badger panics on some damaged tables (slice bounds in initBiggestAndSmallest) in its own
// goroutines, where no recover can reach; here the panic is in this goroutine and becomes an error.
func readTable(path string, fn func(k []byte, version uint64, meta byte, val []byte)) (n int, err error) {
	if _, ok := table.ParseFileID(filepath.Base(path)); !ok {
		return 0, errors.New("not a table file name")
	}
	mf, err := z.OpenMmapFile(path, os.O_RDONLY, 0)
	if err != nil {
		return 0, err
	}
	// Without verification OpenTable never closes mf itself (it does on a checksum failure), so
	// it is unmapped here exactly once, whatever happens.
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("table panicked: %.200s", fmt.Sprint(p))
		}
		_ = mf.Close(-1)
	}()
	t, err := table.OpenTable(mf, table.Options{ReadOnly: true, ChkMode: options.NoVerification, Compression: options.None})
	if err != nil {
		return 0, err
	}
	if err := t.VerifyChecksum(); err != nil {
		return 0, err
	}
	if fn == nil {
		return 0, nil
	}
	it := t.NewIterator(0)
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		k := it.Key()
		if len(k) <= 8 {
			continue
		}
		vs := it.ValueCopy()
		fn(append([]byte(nil), k[:len(k)-8]...), math.MaxUint64-binary.BigEndian.Uint64(k[len(k)-8:]), vs.Meta, append([]byte(nil), vs.Value...))
		n++
	}
	return n, nil
}
