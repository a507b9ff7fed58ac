package testutil

import (
	"net"
	"strconv"
	"testing"
)

// FreePort's ports are free and below the kernel's ephemeral range, where nothing takes them by
// itself between the probe and a server's listen.
func TestFreePortBelowEphemeral(t *testing.T) {
	lo, hi := portsBelowEphemeral()
	for range 20 {
		p := FreePort(t)
		if p < lo || p >= hi {
			t.Fatalf("port %d outside [%d, %d)", p, lo, hi)
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			t.Fatalf("port %d not free: %v", p, err)
		}
		_ = l.Close()
	}
}
