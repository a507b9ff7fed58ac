// Package testutil holds the helpers every package's tests share: polling with a deadline instead
// of sleeping to synchronise, and free loopback ports for real servers.
package testutil

import (
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gemba-io/gemba/internal/promtext"
)

// WaitFor polls cond every few milliseconds until it holds, and fails the test naming what it
// waited for once within has passed.
func WaitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Poll(within, cond) {
		t.Fatalf("timed out after %s waiting for %s", within, what)
	}
}

// Poll is WaitFor for a test that ends on its own terms: it polls cond every few milliseconds
// and reports whether it held before within passed.
func Poll(within time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond) // polling interval, not synchronisation
	}
	return true
}

// WaitForState is WaitFor whose condition also describes what it saw, printed when it times out.
func WaitForState(t testing.TB, within time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s (have %s)", within, what, state)
		}
		time.Sleep(5 * time.Millisecond) // polling interval, not synchronisation
	}
}

// Metric sums the series of the metric name in g whose labels include the given key/value pairs.
func Metric(t testing.TB, g prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	m, err := promtext.Gather(g)
	if err != nil {
		t.Fatal(err)
	}
	return m.Sum(name, labels...)
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago. It is drawn below the
// kernel's ephemeral range, which the kernel hands out by itself (to every outgoing connection and
// every listener on port 0, in this process and in the test binaries running beside it): a port
// from that range could be taken between this probe and the server's listen, or while a test
// restarts a server on the same port.
func FreePort(t testing.TB) int {
	t.Helper()
	lo, hi := portsBelowEphemeral()
	for range 200 {
		p := lo + rand.IntN(hi-lo)
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue // in use: draw again
		}
		_ = l.Close()
		return p
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// portsBelowEphemeral is [lo, hi) under the kernel's ephemeral port range (Linux's
// ip_local_port_range; 32768 where it cannot be read), above the well-known and common ports.
func portsBelowEphemeral() (lo, hi int) {
	lo, hi = 20000, 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > lo+1000 {
				hi = n
			}
		}
	}
	return lo, hi
}
