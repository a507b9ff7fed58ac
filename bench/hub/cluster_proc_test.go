package hubbench

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// hubProc is a hub replica in its own process: this test binary re-run as the hub (TestMain's
// child mode, rss_test.go), so that /proc/<pid> gives each replica's memory and CPU apart from the
// NATS nodes and the load generator, which stay in the benchmark's process.
type hubProc struct {
	cmd    *exec.Cmd
	pid    string
	addr   string // HTTP listen address, as the replica printed it
	exited chan error
	lines  chan string
}

// spawnHub starts a replica on dir/hub.yaml; ready must be called before using it.
func spawnHub(tb testing.TB, dir string) *hubProc {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+dir, "HUBBENCH_HEAPPROF=")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("hub process in %s: %v", dir, err)
	}
	p := &hubProc{cmd: cmd, pid: strconv.Itoa(cmd.Process.Pid), exited: make(chan error, 1), lines: make(chan string, 16)}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case p.lines <- sc.Text():
			default: // only the first line (READY) is read; later ones are dropped
			}
		}
		close(p.lines)
		_, _ = io.Copy(io.Discard, out)
		p.exited <- cmd.Wait()
	}()
	return p
}

// ready waits for the replica's READY line.
func (p *hubProc) ready(within time.Duration) error {
	select {
	case l, ok := <-p.lines:
		if !ok {
			return fmt.Errorf("hub process %s exited before READY", p.pid)
		}
		addr, found := strings.CutPrefix(l, "READY ")
		if !found {
			return fmt.Errorf("hub process %s said %q", p.pid, l)
		}
		p.addr = addr
		return nil
	case <-time.After(within):
		return fmt.Errorf("hub process %s not ready within %s", p.pid, within)
	}
}

// stop sends SIGTERM and waits for a clean exit (killed after 60 s).
func (p *hubProc) stop(tb testing.TB) {
	tb.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.exited:
		if err != nil {
			tb.Errorf("hub process %s: %v", p.pid, err)
		}
	case <-time.After(60 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
		tb.Errorf("hub process %s did not stop within 60s of SIGTERM", p.pid)
	}
}

// procCPU is a process's user+system time so far, from /proc/<pid>/stat (0 if unreadable).
func procCPU(pid string) time.Duration {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces) start at state: utime and stime are
	// the 12th and 13th of them, in clock ticks (100 per second on Linux).
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// loadAvg is the machine's 1-minute load average, for the conditions a round ran in ("?" if unreadable).
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}
