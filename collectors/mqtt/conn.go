package mqtt

// The collector's network connection. paho reads each packet with at least three read(2) calls
// (type byte, length bytes, body) and writes each PUBACK with its own write(2); at tens of
// thousands of messages a second those system calls were half of the agent's CPU. bufConn reads
// through a buffer and coalesces the writes made while an earlier one is still on its way, so a
// batch of acknowledgements leaves in one write without waiting for a timer.

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"runtime"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"golang.org/x/net/proxy"
)

const (
	connReadBuffer = 32 << 10
	// connMaxPending bounds the bytes queued behind a write in flight; writers wait beyond it.
	connMaxPending = 64 << 10
	// connCloseFlush bounds how long Close waits for queued bytes (the last acknowledgements, a
	// DISCONNECT) to leave before closing the socket.
	connCloseFlush = time.Second
)

// dialBroker opens the network connection for paho (its CustomOpenConnectionFn), the way paho
// itself would (tcp and TLS through a proxy from the environment, websockets through paho), and
// wraps it in a bufConn that bounds each write by paho's write timeout and cuts payloads beyond
// maxPayload (see pubCutter).
func dialBroker(uri *url.URL, o paho.ClientOptions, maxPayload int64) (net.Conn, error) {
	conn, err := dialRaw(uri, o)
	if err != nil {
		return nil, err
	}
	c := newBufConn(conn, o.WriteTimeout)
	if maxPayload > 0 && maxPayload < maxRemaining {
		c.cut = &pubCutter{r: c.r, limit: int(maxPayload)}
	}
	return c, nil
}

func dialRaw(uri *url.URL, o paho.ClientOptions) (net.Conn, error) {
	// paho's default dialer waits 30 s for TCP; connect_timeout bounds the whole attempt (TCP,
	// proxy and TLS handshakes together), so a dead broker in a failover list costs no more.
	ctx := context.Background()
	if o.ConnectTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.ConnectTimeout)
		defer cancel()
	}
	dialer := &net.Dialer{Timeout: o.ConnectTimeout}
	if o.Dialer != nil {
		d := *o.Dialer
		if o.ConnectTimeout > 0 && (d.Timeout == 0 || d.Timeout > o.ConnectTimeout) {
			d.Timeout = o.ConnectTimeout
		}
		dialer = &d
	}
	dialTCP := func() (net.Conn, error) {
		pd := proxy.FromEnvironmentUsing(dialer)
		if cd, ok := pd.(proxy.ContextDialer); ok {
			return cd.DialContext(ctx, "tcp", uri.Host)
		}
		return pd.Dial("tcp", uri.Host) // the dialer's Timeout: nothing of the budget is spent yet
	}
	switch uri.Scheme {
	case "ws", "wss":
		u := *uri // the websocket dialer refuses URLs with user info
		u.User = nil
		var tlsc *tls.Config
		if uri.Scheme == "wss" {
			tlsc = o.TLSConfig
		}
		return paho.NewWebsocket(u.String(), tlsc, o.ConnectTimeout, o.HTTPHeaders, o.WebsocketOptions)
	case "tcp", "mqtt":
		return dialTCP()
	case "ssl", "tls", "mqtts":
		raw, err := dialTCP()
		if err != nil {
			return nil, err
		}
		cfg := o.TLSConfig
		if cfg == nil {
			cfg = &tls.Config{}
		}
		if cfg.ServerName == "" {
			cfg = cfg.Clone()
			cfg.ServerName = uri.Hostname()
		}
		tc := tls.Client(raw, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = raw.Close()
			return nil, fmt.Errorf("tls handshake with %s: %w", uri.Host, err)
		}
		return tc, nil
	}
	return nil, fmt.Errorf("unsupported broker scheme %q", uri.Scheme)
}

// bufConn is a net.Conn with a read buffer and coalesced writes. Write queues the bytes and
// returns; one flusher goroutine writes everything queued in one call, so bytes leave in order
// and at once when the link is idle. A failed write is returned by every later Write and by Read,
// which paho turns into a lost connection.
//
// The write deadlines are bufConn's own: paho sets one around each Write, but the bytes leave
// later, in the flusher, so paho's deadline would bound nothing (and its reset to zero could
// undo Close's). The flusher bounds each write by writeTimeout instead, and by Close's closeBy.
type bufConn struct {
	net.Conn
	r            *bufio.Reader
	cut          *pubCutter    // reads through r; nil: none
	writeTimeout time.Duration // per flusher write; 0: none
	// interrupt is where Close moves the deadline of a write in flight: the connection under
	// TLS or a websocket (a websocket's own SetWriteDeadline only applies to its next write, and
	// races with the one in flight).
	interrupt net.Conn

	mu       sync.Mutex
	cond     sync.Cond // signalled when pending is taken and when a flush ends
	pending  []byte
	spare    []byte
	flushing bool      // pending is non-empty or being written
	deadline time.Time // of the flusher's current (or last) write
	closeBy  time.Time // set by Close: no write may last beyond it
	err      error     // sticky: the first write error, or net.ErrClosed
	closed   bool
	wake     chan struct{}
	done     chan struct{}
}

func newBufConn(conn net.Conn, writeTimeout time.Duration) *bufConn {
	c := &bufConn{Conn: conn, writeTimeout: writeTimeout, interrupt: conn,
		wake: make(chan struct{}, 1), done: make(chan struct{})}
	if w, ok := conn.(interface{ NetConn() net.Conn }); ok {
		c.interrupt = w.NetConn()
	}
	c.cond.L = &c.mu
	c.r = bufio.NewReaderSize(connReader{c}, connReadBuffer)
	go c.flusher()
	return c
}

func (c *bufConn) Read(p []byte) (int, error) {
	if c.cut != nil {
		return c.cut.Read(p)
	}
	return c.r.Read(p)
}

// Write queues p (paho writes one whole packet per call) and wakes the flusher.
func (c *bufConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.err == nil && len(c.pending) >= connMaxPending {
		c.cond.Wait()
	}
	if c.err != nil {
		return 0, c.err
	}
	c.pending = append(c.pending, p...)
	if !c.flushing {
		c.flushing = true
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
	return len(p), nil
}

func (c *bufConn) flusher() {
	for {
		select {
		case <-c.wake:
		case <-c.done:
			return
		}
		// Let the goroutines that are about to write (paho acknowledging a batch) run first:
		// this turns a burst of PUBACKs into one write(2) instead of one each.
		runtime.Gosched()
		c.mu.Lock()
		for len(c.pending) > 0 && c.err == nil {
			buf := c.pending
			c.pending = c.spare[:0]
			c.cond.Broadcast() // writers waiting at connMaxPending may queue behind this write
			err := c.setWriteDeadline()
			c.mu.Unlock()
			if err == nil {
				_, err = c.Conn.Write(buf)
			}
			c.mu.Lock()
			c.spare = buf[:0]
			if err != nil && c.err == nil {
				c.err = fmt.Errorf("write to broker: %w", err)
				// Wake the reader, which reports the error and so ends the connection.
				_ = c.Conn.SetReadDeadline(time.Unix(1, 0))
			}
		}
		c.flushing = false
		c.cond.Broadcast()
		c.mu.Unlock()
	}
}

// setWriteDeadline bounds the next write by writeTimeout and closeBy. Called with mu held.
func (c *bufConn) setWriteDeadline() error {
	var d time.Time
	if c.writeTimeout > 0 {
		d = time.Now().Add(c.writeTimeout)
	}
	if !c.closeBy.IsZero() && (d.IsZero() || c.closeBy.Before(d)) {
		d = c.closeBy
	}
	if d.IsZero() && c.deadline.IsZero() {
		return nil // none before, none now
	}
	c.deadline = d
	return c.Conn.SetWriteDeadline(d)
}

// Close gives queued bytes up to connCloseFlush to leave, then closes the socket.
func (c *bufConn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return net.ErrClosed
	}
	c.closed = true
	if c.flushing && c.err == nil {
		c.closeBy = time.Now().Add(connCloseFlush)
		// Cut short a write in flight that may last longer; the flusher caps later ones.
		if c.deadline.IsZero() || c.closeBy.Before(c.deadline) {
			c.deadline = c.closeBy
			_ = c.interrupt.SetWriteDeadline(c.closeBy)
		}
		for c.flushing && c.err == nil {
			c.cond.Wait()
		}
	}
	if c.err == nil {
		c.err = net.ErrClosed
	}
	c.cond.Broadcast()
	c.mu.Unlock()
	close(c.done)
	return c.Conn.Close()
}

// SetDeadline sets the read deadline only: write deadlines are the flusher's (see bufConn).
func (c *bufConn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

// SetReadDeadline moves the read deadline, unless a failed write has already woken the reader
// (paho clearing its handshake deadline must not put it back to sleep).
func (c *bufConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return nil
	}
	return c.Conn.SetReadDeadline(t)
}

// SetWriteDeadline is ignored: paho sets it around a Write that only queues (see bufConn).
func (c *bufConn) SetWriteDeadline(time.Time) error { return nil }

// writeErr is the flusher's failure, if any (not the error of a local Close).
func (c *bufConn) writeErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if errors.Is(c.err, net.ErrClosed) {
		return nil
	}
	return c.err
}

// connReader feeds the read buffer, reporting a failed write instead of the read error it caused.
type connReader struct{ c *bufConn }

func (r connReader) Read(p []byte) (int, error) {
	n, err := r.c.Conn.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		if werr := r.c.writeErr(); werr != nil {
			err = werr
		}
	}
	return n, err
}
