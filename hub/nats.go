package hub

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"strings"
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
	s, err := server.NewServer(o)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	s.SetLoggerV2(serverLogger{log.With("component", "nats-server")}, false, false, false)
	go s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("embedded nats on %s: not ready after 30s (port in use?)", cfg.NATS.Embedded.Listen)
	}
	if !s.JetStreamEnabled() {
		s.Shutdown()
		return nil, errors.New("embedded nats: JetStream did not start (see the nats-server log lines)")
	}
	log.Info("embedded NATS server started", "listen", s.ClientURL(), "store", o.StoreDir)
	return s, nil
}

// connect opens the hub's client connection: reconnect forever, fail publishes while disconnected
// (state writes are retried by their callers, never silently buffered).
func connect(cfg *Config, urls string, log *slog.Logger) (*nats.Conn, error) {
	n := cfg.NATS
	name := n.Name
	if name == "" {
		name = "gemba-hub/" + cfg.Hub.ID
	}
	opts := []nats.Option{
		nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectBufSize(-1), nats.RetryOnFailedConnect(true),
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
		return nil, fmt.Errorf("nats %s: %w", redactAll(urls), err)
	}
	return nc, nil
}

// serverLogger sends nats-server's logs to slog; its notices are routine and go to Debug.
type serverLogger struct{ log *slog.Logger }

func (l serverLogger) Noticef(f string, a ...any) { l.log.Debug(fmt.Sprintf(f, a...)) }
func (l serverLogger) Warnf(f string, a ...any)   { l.log.Warn(fmt.Sprintf(f, a...)) }
func (l serverLogger) Fatalf(f string, a ...any)  { l.log.Error(fmt.Sprintf(f, a...)) }
func (l serverLogger) Errorf(f string, a ...any)  { l.log.Error(fmt.Sprintf(f, a...)) }
func (l serverLogger) Debugf(f string, a ...any)  { l.log.Debug(fmt.Sprintf(f, a...)) }
func (l serverLogger) Tracef(f string, a ...any)  {}

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
