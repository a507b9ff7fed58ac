package buffer

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// trimMappings drops the pages of Badger's memory-mapped files (value log, memtable logs, tables)
// from the process's page tables. Badger v4 reads and writes these files through shared mmaps, so
// every page written or read stays in the agent's RSS (as RssFile) until the kernel needs the memory:
// a gateway reading 1 GiB of backlog would show 1 GiB RSS. MADV_DONTNEED on a shared file mapping
// only unmaps: the data stays in the page cache (dirty pages are still written back) and the next
// access faults it in again, so this is safe while Badger uses the mapping. Private mappings are
// never touched (for them MADV_DONTNEED would discard data).
func trimMappings(dir string) {
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return
	}
	defer f.Close()
	prefix := []byte(dir + "/")
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Bytes()
		i := bytes.Index(line, prefix)
		if i < 0 {
			continue
		}
		name := string(line[i:])
		if !strings.HasSuffix(name, ".vlog") && !strings.HasSuffix(name, ".mem") && !strings.HasSuffix(name, ".sst") {
			continue
		}
		fields := strings.Fields(string(line[:i]))
		if len(fields) < 2 || len(fields[1]) != 4 || fields[1][3] != 's' {
			continue
		}
		lo, hi, ok := strings.Cut(fields[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		// Best effort: the range may have been unmapped since the read (Badger closing a file).
		_, _, _ = unix.Syscall(unix.SYS_MADVISE, uintptr(start), uintptr(end-start), unix.MADV_DONTNEED)
	}
}
