package console

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub/api"
	"github.com/gemba-io/gemba/hub/audit"
)

// busyLog is a decision log that has 50 new records, each with a 32 KiB SKU, at every read.
type busyLog struct {
	*fakeDecisions
	mu  sync.Mutex
	seq uint64
}

func (b *busyLog) Recent(context.Context, audit.Filter) ([]audit.Record, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]audit.Record, 50)
	for i := range out {
		b.seq++
		out[len(out)-1-i] = rec(b.seq, strings.Repeat("x", 32<<10)) // newest first
	}
	return out, nil
}

// TestLiveStuckClient: a client that opens the live feed and stops reading (a zero TCP window: a
// peer gone to sleep, or one doing it on purpose) must not hold the stream's handler for good:
// the write gives up after a deadline, the handler returns and the connection is closed. Without
// one, the handler sits in Write forever, past its session and liveFor, one goroutine and its
// buffers per such connection.
func TestLiveStuckClient(t *testing.T) {
	defer func(d time.Duration) { liveWriteTimeout = d }(liveWriteTimeout)
	liveWriteTimeout = 500 * time.Millisecond
	e := newEnv(t, func(c *Config) { c.LivePoll = 100 * time.Millisecond })
	busy := &busyLog{fakeDecisions: e.dec}
	e.c.src.Decisions = func() api.Decisions { return busy }
	srv := httptest.NewUnstartedServer(e.c)
	closed := make(chan struct{})
	var once sync.Once
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			once.Do(func() { close(closed) })
		}
	}
	srv.Start()
	defer srv.Close()
	sc, _ := e.login(t, "vera", "viewer-pw")

	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close() // runs before srv.Close: a handler still stuck in Write then fails
	_ = conn.(*net.TCPConn).SetReadBuffer(4096)
	if _, err := fmt.Fprintf(conn, "GET /console/decisions/live?after=0 HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\nCookie: %s=%s\r\n\r\n",
		srv.Listener.Addr(), sessionCookie, sc.Value); err != nil {
		t.Fatal(err)
	}
	// The client reads nothing more: the feed fills the socket's buffers, then its writes block.
	select {
	case <-closed:
	case <-time.After(20 * time.Second):
		busy.mu.Lock()
		n := busy.seq
		busy.mu.Unlock()
		t.Fatalf("the live feed's connection is still open 20 s after its client stopped reading (%d records read from the log): "+
			"the handler is stuck writing to it", n)
	}
}
