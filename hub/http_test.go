package hub

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gemba-io/gemba/internal/testutil"
)

// serve runs hd on a test listener with the hub's server settings, its log in logs; closed is
// closed when a connection closes.
func serve(t *testing.T, hd http.Handler, logs *testutil.Buffer) (srv *httptest.Server, closed chan struct{}) {
	t.Helper()
	h := &Hub{log: slog.New(slog.NewTextHandler(logs, nil))}
	srv = httptest.NewUnstartedServer(nil)
	srv.Config = h.server(hd)
	closed = make(chan struct{})
	var once sync.Once
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			once.Do(func() { close(closed) })
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, closed
}

// TestStuckClientReleasesHandler: a client that asks for a large response and stops reading it (a
// zero TCP window: a peer gone to sleep, or one doing it on purpose) must not hold the handler for
// good: the write gives up after a deadline, the handler returns and the connection is closed.
// The server has no blanket WriteTimeout (which would cut the console's live feed): a response that
// sets its own deadlines, as the live feed does before each write, streams on past it.
func TestStuckClientReleasesHandler(t *testing.T) {
	defer func(d time.Duration) { writeTimeout = d }(writeTimeout)
	writeTimeout = 500 * time.Millisecond
	returned := make(chan error, 1)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/big", func(w http.ResponseWriter, _ *http.Request) {
		chunk := []byte(strings.Repeat("x", 1<<20))
		for {
			if _, err := w.Write(chunk); err != nil {
				returned <- err
				return
			}
		}
	})
	mux.HandleFunc("GET /stream", func(w http.ResponseWriter, _ *http.Request) {
		rc := http.NewResponseController(w)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		end := time.Now().Add(4 * writeTimeout)
		for n := 0; time.Now().Before(end); n++ {
			<-tick.C
			_ = rc.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if _, err := fmt.Fprintf(w, "event %d\n", n); err != nil || rc.Flush() != nil {
				return
			}
		}
		_, _ = w.Write([]byte("end\n"))
	})
	var logs testutil.Buffer
	srv, closed := serve(t, mux, &logs)

	// A stream that sets its own write deadlines runs past writeTimeout to its end.
	resp, err := http.Get(srv.URL + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || !strings.HasSuffix(string(b), "end\n") {
		t.Fatalf("stream cut: %v after %q", err, b)
	}

	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close() // runs before srv.Close: a handler still stuck in Write then fails
	_ = conn.(*net.TCPConn).SetReadBuffer(4096)
	if _, err := fmt.Fprintf(conn, "GET /api/v1/big HTTP/1.1\r\nHost: %s\r\n\r\n", srv.Listener.Addr()); err != nil {
		t.Fatal(err)
	}
	// The client reads nothing: the response fills the socket's buffers, then the writes block.
	select {
	case err := <-returned:
		t.Logf("handler returned: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("the handler is still writing 20 s after its client stopped reading: no write deadline")
	}
	select {
	case <-closed:
	case <-time.After(20 * time.Second):
		t.Fatal("the stuck client's connection is still open")
	}
}

// TestHandlerPanicLogged: a panic in a handler is logged by the hub's logger, at error level (not
// on the standard library's log, which the hub's log handler, level and format never see), and
// the server goes on serving.
func TestHandlerPanicLogged(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /panic", func(http.ResponseWriter, *http.Request) { panic("boom in a handler") })
	mux.HandleFunc("GET /ok", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	var logs testutil.Buffer
	srv, _ := serve(t, mux, &logs)
	if resp, err := http.Get(srv.URL + "/panic"); err == nil {
		resp.Body.Close()
		t.Fatalf("a panicking handler answered %s", resp.Status)
	}
	testutil.WaitFor(t, 10*time.Second, "the panic in the hub's log", func() bool {
		return strings.Contains(logs.String(), "boom in a handler")
	})
	if out := logs.String(); !strings.Contains(out, "level=ERROR") || !strings.Contains(out, "panic serving") {
		t.Fatalf("panic logged without its level or what it is:\n%s", out)
	}
	resp, err := http.Get(srv.URL + "/ok")
	if err != nil {
		t.Fatalf("after a panic: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("after a panic: %s", resp.Status)
	}
}
