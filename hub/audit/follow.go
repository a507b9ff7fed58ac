package audit

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/internal/jsfollow"
)

// FollowChanges calls fn with the current rules state, then with every new change, in order, on
// one goroutine at a time. It follows through a server restart or a leader change: the ordered
// consumer resumes after the last change it handed, and the follower makes a new one when the
// consumer's server shuts down or a change on the stream is not delivered (checked every second;
// see jsfollow: an ordered consumer alone noticed its node's loss after 10 s, and a rollback reached
// that replica 10 s late). stop ends it and waits for fn to return.
func (l *Log) FollowChanges(fn func(Change)) (stop func(), err error) {
	// Creating the consumer can outlast one API timeout on a busy cluster (a stream leader just
	// elected): a replica that cannot follow the rules cannot decide, so it tries for a while.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	f, err := jsfollow.Follow(ctx, jsfollow.Config{
		Stream: l.stream, Subject: l.cfg.RulesSubject(), LastPerSubject: true, What: "rules changes",
		Log: l.log, Refollows: &l.Stats.Refollows,
		Unreadable: func(m jetstream.Msg, err error) { l.malformed(m.Subject(), 0, err) },
	}, func(m jetstream.Msg, md *jetstream.MsgMetadata) {
		c, err := decodeChange(m.Data(), md.Sequence.Stream)
		if err != nil {
			l.malformed(m.Subject(), md.Sequence.Stream, err)
			return
		}
		fn(c)
	})
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	return f.Stop, nil
}
