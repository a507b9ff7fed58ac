package hub

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Dial connects a command-line tool to the NATS cfg names (its servers, or the embedded listen
// address of a running hub) and fills what the decision room's sections take from the nats
// section (the audit subject prefix). The caller closes the connection.
func Dial(ctx context.Context, cfg *Config) (*nats.Conn, jetstream.JetStream, error) {
	cfg.Audit.Prefix = cfg.NATS.SubjectPrefix
	urls := strings.Join(cfg.NATS.Servers, ",")
	if urls == "" {
		urls = "nats://" + cfg.NATS.Embedded.Listen
	}
	nc, err := connect(cfg, urls, slog.New(slog.DiscardHandler), false)
	if err != nil {
		return nil, nil, err
	}
	js, err := newJetStream(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	// A server without JetStream (or one that does not answer): fail here, within a bound, rather
	// than in the command's first request.
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := js.AccountInfo(actx); err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("JetStream at %s: %w", redactAll(urls), err)
	}
	return nc, js, nil
}
