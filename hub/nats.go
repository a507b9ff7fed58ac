package hub

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/config"
)

// startEmbedded runs a single-node NATS server with JetStream in <data_dir>/nats: the default for
// one machine and the demo. Agents connect to its listen address.
func startEmbedded(cfg *Config, log *slog.Logger) (*server.Server, error) {
	host, port, err := net.SplitHostPort(cfg.NATS.Embedded.Listen)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: listen %q: %w", cfg.NATS.Embedded.Listen, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: listen %q: port: %w", cfg.NATS.Embedded.Listen, err)
	}
	o := &server.Options{
		ServerName: cfg.Hub.ID, Host: host, Port: p, JetStream: true,
		StoreDir: filepath.Join(cfg.Hub.DataDir, "nats"), NoSigs: true,
		JetStreamMaxStore: int64(cfg.NATS.Embedded.MaxStore), JetStreamMaxMemory: int64(cfg.NATS.Embedded.MaxMemory),
		MaxPayload: 8 << 20,
	}
	// The hub's own credentials are the server's: agents (and the CLI) connect with the same ones
	// (as connect chooses them: a creds file, which needs a server with accounts, leaves it open).
	switch n := cfg.NATS; {
	case n.CredsFile == "" && n.User != "":
		o.Username, o.Password = n.User, n.Password.Value()
	case n.CredsFile == "" && n.Token.Value() != "":
		o.Authorization = n.Token.Value()
	default:
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			log.Warn("the embedded NATS server listens beyond loopback without authentication: anyone who reaches it "+
				"can change the hub's state; set nats.user and nats.password (or nats.token)", "listen", cfg.NATS.Embedded.Listen)
		}
	}
	s, err := server.NewServer(o)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	sl := serverLogger{log: log.With("component", "nats-server"), fatal: new(atomic.Pointer[string])}
	s.SetLoggerV2(sl, false, false, false)
	go s.Start()
	// Start gives up on a fatal error (a store it cannot create, a port in use) by logging it and
	// returning: say that error now rather than wait out the bound.
	for deadline := time.Now().Add(30 * time.Second); !s.ReadyForConnections(100 * time.Millisecond); {
		if f := sl.fatal.Load(); f != nil {
			s.Shutdown()
			s.WaitForShutdown()
			return nil, fmt.Errorf("embedded nats on %s (store %s): %s", cfg.NATS.Embedded.Listen, o.StoreDir, *f)
		}
		if time.Now().After(deadline) {
			s.Shutdown()
			return nil, fmt.Errorf("embedded nats on %s: not ready after 30s (port in use?)", cfg.NATS.Embedded.Listen)
		}
	}
	if !s.JetStreamEnabled() {
		s.Shutdown()
		return nil, errors.New("embedded nats: JetStream did not start (see the nats-server log lines)")
	}
	log.Info("embedded NATS server started", "listen", s.ClientURL(), "store", o.StoreDir)
	return s, nil
}

// connect opens the hub's client connection: reconnect forever, fail publishes while disconnected
// (state writes are retried by their callers, never silently buffered). With retry the first
// connection is retried in the background too (the hub waits for NATS, saying so on /readyz);
// without it (a command) a server that cannot be reached is the error.
func connect(cfg *Config, urls string, log *slog.Logger, retry bool) (*nats.Conn, error) {
	n := cfg.NATS
	name := n.Name
	if name == "" {
		name = "gemba-hub/" + cfg.Hub.ID
	}
	opts := []nats.Option{
		nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectBufSize(-1), nats.RetryOnFailedConnect(retry),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("disconnected from NATS", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { log.Info("reconnected to NATS", "server", c.ConnectedUrlRedacted()) }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { log.Warn("NATS async error", "err", err) }),
	}
	switch {
	case n.CredsFile != "":
		opts = append(opts, nats.UserCredentials(n.CredsFile))
	case n.User != "":
		opts = append(opts, nats.UserInfo(n.User, n.Password.Value()))
	case n.Token.Value() != "":
		opts = append(opts, nats.Token(n.Token.Value()))
	}
	if n.TLS.CAFile != "" || n.TLS.CertFile != "" {
		opts = append(opts, nats.Secure(&tls.Config{MinVersion: tls.VersionTLS12}))
		if n.TLS.CAFile != "" {
			opts = append(opts, nats.RootCAs(n.TLS.CAFile))
		}
		if n.TLS.CertFile != "" {
			opts = append(opts, nats.ClientCert(n.TLS.CertFile, n.TLS.KeyFile))
		}
	}
	nc, err := nats.Connect(urls, opts...)
	if err != nil {
		var ue *url.Error // an unparsable URL: its error quotes it, credentials and all
		if errors.As(err, &ue) {
			ue.URL = config.RedactURL(ue.URL)
		}
		return nil, fmt.Errorf("nats %s: %w", redactAll(urls), err)
	}
	return nc, nil
}

// serverLogger sends nats-server's logs to slog; its notices are routine and go to Debug. fatal keeps
// the first fatal error (the server does not exit on it: it stops starting).
type serverLogger struct {
	log   *slog.Logger
	fatal *atomic.Pointer[string]
}

func (l serverLogger) Noticef(f string, a ...any) { l.log.Debug(fmt.Sprintf(f, a...)) }
func (l serverLogger) Warnf(f string, a ...any)   { l.log.Warn(fmt.Sprintf(f, a...)) }
func (l serverLogger) Fatalf(f string, a ...any) {
	m := fmt.Sprintf(f, a...)
	if l.fatal != nil {
		l.fatal.CompareAndSwap(nil, &m)
	}
	l.log.Error(m)
}
func (l serverLogger) Errorf(f string, a ...any) { l.log.Error(fmt.Sprintf(f, a...)) }
func (l serverLogger) Debugf(f string, a ...any) { l.log.Debug(fmt.Sprintf(f, a...)) }
func (l serverLogger) Tracef(f string, a ...any) {}

// redactAll hides the credentials of each URL of a comma-separated server list.
func redactAll(urls string) string {
	us := strings.Split(urls, ",")
	for i, u := range us {
		us[i] = config.RedactURL(u)
	}
	return strings.Join(us, ",")
}

// asyncAckTimeout bounds the wait for an asynchronous publish's acknowledgement. nats.go waits
// forever by default: an ack lost with a NATS node that stopped mid-publish then held a batch (and,
// through the consumer's in-progress pings, its messages) on this replica for good — chaos saw a
// replica stop ingesting after a node restart. With a bound the publish fails, the batch is
// retried, and its messages are redelivered if this replica cannot finish them.
const asyncAckTimeout = 20 * time.Second

// newJetStream is the hub's JetStream context on nc.
func newJetStream(nc *nats.Conn) (jetstream.JetStream, error) {
	return jetstream.New(nc, jetstream.WithPublishAsyncTimeout(asyncAckTimeout))
}
