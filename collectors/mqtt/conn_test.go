package mqtt

import (
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// waitFlushing polls until the flusher has taken everything queued and is inside its write.
func waitFlushing(t *testing.T, c *bufConn) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.mu.Lock()
		inWrite := c.flushing && len(c.pending) == 0
		c.mu.Unlock()
		if inWrite {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("flusher never started writing")
		}
		time.Sleep(time.Millisecond)
	}
}

func readN(t *testing.T, r io.Reader, n int) string {
	t.Helper()
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		t.Fatal(err)
	}
	return string(buf)
}

// TestBufConnCoalescesWritesInOrder: what is written while a write is in flight leaves in one
// write, after it and in order.
func TestBufConnCoalescesWritesInOrder(t *testing.T) {
	client, server := net.Pipe()
	defer server.Close()
	c := newBufConn(client)
	defer c.Close()
	if _, err := c.Write([]byte("a")); err != nil {
		t.Fatal(err)
	}
	waitFlushing(t, c) // net.Pipe: the write of "a" blocks until the server reads
	for _, p := range []string{"b", "c", "d"} {
		if _, err := c.Write([]byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	if got := readN(t, server, 1); got != "a" {
		t.Fatalf("first write %q", got)
	}
	// net.Pipe hands over one Write per Read when the buffer is big enough: "bcd" arriving
	// in one Read proves the three writes became one.
	buf := make([]byte, 16)
	n, err := server.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(buf[:n]); got != "bcd" {
		t.Fatalf("second write %q, want the three queued writes as one", got)
	}
}

// TestBufConnReadsThroughBuffer: reads are served from the buffer, byte-exact.
func TestBufConnReadsThroughBuffer(t *testing.T) {
	client, server := net.Pipe()
	defer server.Close()
	c := newBufConn(client)
	defer c.Close()
	go func() { _, _ = server.Write([]byte("\x30\x05hello-rest")) }()
	if got := readN(t, c, 1); got != "\x30" {
		t.Fatalf("%q", got)
	}
	if got := readN(t, c, 1); got != "\x05" {
		t.Fatalf("%q", got)
	}
	if got := readN(t, c, 10); got != "hello-rest" {
		t.Fatalf("%q", got)
	}
}

// failWrites is a connection whose writes fail while its reads keep waiting, as on a link that
// broke in one direction.
type failWrites struct{ net.Conn }

func (failWrites) Write([]byte) (int, error) { return 0, errors.New("connection reset by peer") }

// TestBufConnWriteErrorReachesReaderAndWriters: a failed write is returned by later writes and
// wakes a blocked reader with the same error, so paho sees the connection as lost.
func TestBufConnWriteErrorReachesReaderAndWriters(t *testing.T) {
	client, server := net.Pipe()
	defer server.Close()
	c := newBufConn(failWrites{client})
	defer c.Close()
	readErr := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		readErr <- err
	}()
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err) // queued: the failure comes from the flusher
	}
	select {
	case err := <-readErr:
		if err == nil || !strings.Contains(err.Error(), "write to broker: connection reset by peer") {
			t.Fatalf("reader got %v, want the write error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("reader not woken by the failed write")
	}
	if _, err := c.Write([]byte("y")); err == nil || !strings.Contains(err.Error(), "write to broker") {
		t.Fatalf("write after failure: %v", err)
	}
}

// TestBufConnCloseFlushesQueuedBytes: the last acknowledgements queued before Close still leave.
func TestBufConnCloseFlushesQueuedBytes(t *testing.T) {
	client, server := net.Pipe()
	defer server.Close()
	c := newBufConn(client)
	if _, err := c.Write([]byte("ack1")); err != nil {
		t.Fatal(err)
	}
	waitFlushing(t, c)
	if _, err := c.Write([]byte("ack2")); err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	if got := readN(t, server, 8); got != "ack1ack2" {
		t.Fatalf("%q", got)
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if _, err := server.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("after close: %v", err)
	}
	if _, err := c.Write([]byte("late")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
}

// TestBufConnCloseGivesUpOnAStuckPeer: a peer that never reads does not hold Close forever.
func TestBufConnCloseGivesUpOnAStuckPeer(t *testing.T) {
	client, server := net.Pipe()
	defer server.Close()
	c := newBufConn(client)
	if _, err := c.Write([]byte("never read")); err != nil {
		t.Fatal(err)
	}
	waitFlushing(t, c)
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close blocked on a peer that never reads")
	}
}
