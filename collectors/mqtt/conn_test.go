package mqtt

import (
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gemba-io/gemba/internal/testutil"
)

// inWrite holds once the flusher has taken everything queued and is inside its write.
func inWrite(c *bufConn) func() bool {
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.flushing && len(c.pending) == 0
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
	c := newBufConn(client, 0)
	defer c.Close()
	if _, err := c.Write([]byte("a")); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the flusher writing", inWrite(c)) // net.Pipe: the write of "a" blocks until the server reads
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
	c := newBufConn(client, 0)
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
	c := newBufConn(failWrites{client}, 0)
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
	c := newBufConn(client, 0)
	if _, err := c.Write([]byte("ack1")); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the flusher writing", inWrite(c))
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

// TestBufConnCloseGivesUpOnAStuckPeer: a peer that never reads does not hold Close forever, with
// or without a write timeout longer than Close's flush, whatever deadlines paho sets meanwhile.
func TestBufConnCloseGivesUpOnAStuckPeer(t *testing.T) {
	for _, timeout := range []time.Duration{0, time.Hour} {
		t.Run(timeout.String(), func(t *testing.T) {
			client, server := net.Pipe()
			defer server.Close()
			c := newBufConn(client, timeout)
			if _, err := c.Write([]byte("never read")); err != nil {
				t.Fatal(err)
			}
			testutil.WaitFor(t, 10*time.Second, "the flusher writing", inWrite(c))
			closed := make(chan error, 1)
			go func() { closed <- c.Close() }()
			testutil.WaitFor(t, 10*time.Second, "Close to begin", func() bool {
				c.mu.Lock()
				defer c.mu.Unlock()
				return c.closed
			})
			// paho resetting its deadlines after a write must not lift Close's.
			_ = c.SetWriteDeadline(time.Time{})
			_ = c.SetDeadline(time.Time{})
			select {
			case <-closed:
			case <-time.After(10 * time.Second):
				t.Fatal("Close blocked on a peer that never reads")
			}
		})
	}
}

// TestBufConnWriteTimeoutEndsStuckConnection: with a peer that stopped reading, the write timeout
// fails the flusher's write (paho's own deadlines around Write bound nothing, as Write only
// queues) and the reader gets the error, so paho sees the connection as lost.
func TestBufConnWriteTimeoutEndsStuckConnection(t *testing.T) {
	client, server := net.Pipe()
	defer server.Close()
	c := newBufConn(client, 20*time.Millisecond)
	defer c.Close()
	// What paho does around each packet it writes.
	_ = c.SetWriteDeadline(time.Now().Add(time.Hour))
	if _, err := c.Write([]byte("never read")); err != nil {
		t.Fatal(err)
	}
	_ = c.SetWriteDeadline(time.Time{})
	testutil.WaitFor(t, 10*time.Second, "the write to time out", func() bool { return c.writeErr() != nil })
	// paho clearing its handshake deadline must not put the woken reader back to sleep.
	_ = c.SetDeadline(time.Time{})
	readErr := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		readErr <- err
	}()
	var err error
	testutil.WaitFor(t, 10*time.Second, "the reader to fail", func() bool {
		select {
		case err = <-readErr:
			return true
		default:
			return false
		}
	})
	if !errors.Is(err, os.ErrDeadlineExceeded) || !strings.Contains(err.Error(), "write to broker") {
		t.Fatalf("reader got %v, want the write timeout", err)
	}
	if _, err := c.Write([]byte("y")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write after the timeout: %v", err)
	}
}

// TestBufConnWriterWakesWhenPendingIsTaken: a writer held at connMaxPending goes on as soon as the
// flusher takes the queue, not only once the peer has read all of it.
func TestBufConnWriterWakesWhenPendingIsTaken(t *testing.T) {
	client, server := net.Pipe()
	c := newBufConn(client, 0)
	defer c.Close()
	defer server.Close() // first, so Close need not wait for the peer
	if _, err := c.Write([]byte("a")); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the flusher writing", inWrite(c))
	if _, err := c.Write(make([]byte, connMaxPending)); err != nil {
		t.Fatal(err)
	}
	written := make(chan error, 1)
	go func() {
		_, err := c.Write([]byte("b")) // waits: the queue is full
		written <- err
	}()
	if got := readN(t, server, 1); got != "a" {
		t.Fatalf("first write %q", got)
	}
	// The server reads nothing more: the full queue is now in flight, and the writer must not wait for it.
	var err error
	testutil.WaitFor(t, 10*time.Second, "the held writer to go on", func() bool {
		select {
		case err = <-written:
			return true
		default:
			return false
		}
	})
	if err != nil {
		t.Fatal(err)
	}
}
