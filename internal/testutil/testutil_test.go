package testutil

import (
	"net"
	"strconv"
	"testing"
	"time"
)

// fakeT records a Fatalf instead of stopping the test, to check that WaitFor gives up.
type fakeT struct {
	testing.TB
	failed string
}

func (f *fakeT) Helper() {}
func (f *fakeT) Fatalf(format string, args ...any) {
	f.failed = format
	panic(f)
}

func TestWaitFor(t *testing.T) {
	n := 0
	WaitFor(t, 10*time.Second, "the third poll", func() bool { n++; return n == 3 })
	if n != 3 {
		t.Fatalf("polled %d times", n)
	}
	ft := &fakeT{}
	func() {
		defer func() {
			if r := recover(); r != ft {
				panic(r)
			}
		}()
		WaitFor(ft, time.Millisecond, "never", func() bool { return false })
	}()
	if ft.failed == "" {
		t.Fatal("WaitFor did not fail on a condition that never holds")
	}
}

func TestFreePort(t *testing.T) {
	p := FreePort(t)
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
	if err != nil {
		t.Fatalf("port %d not free: %v", p, err)
	}
	l.Close()
}
