package jsfollow

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrIdle is returned by NextWithin when no message came within its bound.
var ErrIdle = errors.New("the consumer stopped delivering")

// NextWithin is it.Next that gives up after idle without a message, with an error wrapping
// ErrIdle: a read of a stream's pending messages (a round, a build) that a consumer stopped
// delivering to, its node lost or paused, ends instead of holding its caller forever. When ctx
// ends first, its error is returned as it.Next gives it.
func NextWithin(ctx context.Context, it jetstream.MessagesContext, idle time.Duration) (jetstream.Msg, error) {
	nctx, cancel := context.WithTimeout(ctx, idle)
	defer cancel()
	m, err := it.Next(jetstream.NextContext(nctx))
	if err != nil && ctx.Err() == nil && nctx.Err() != nil {
		return nil, fmt.Errorf("no message for %s: %w", idle, ErrIdle)
	}
	return m, err
}
