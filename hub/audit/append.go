package audit

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Append stores a later event of a decision already recorded (approved, rejected, expired,
// released), without the fence: the decision was taken under the rules of its first record, and a
// rules change since does not undo a person's approval of it. Deduplicated like Publish.
func (l *Log) Append(ctx context.Context, rec Record) (uint64, error) {
	if err := rec.check(); err != nil {
		return 0, err
	}
	rec.Seq = 0
	data, err := json.Marshal(rec)
	if err != nil {
		return 0, fmt.Errorf("audit record %s %s: %w", rec.DecisionID, rec.Event, err)
	}
	m := &nats.Msg{Subject: l.cfg.RecordSubject(rec.DecisionID), Data: data}
	ack, err := l.js.PublishMsg(ctx, m, jetstream.WithMsgID(rec.DecisionID+":"+rec.Event), jetstream.WithMsgTTL(l.cfg.Retention))
	switch {
	case err != nil:
		return 0, fmt.Errorf("audit record %s %s: %w", rec.DecisionID, rec.Event, err)
	case ack.Duplicate:
		l.Stats.Duplicates.Add(1)
	default:
		l.Stats.Published.Add(1)
	}
	return ack.Sequence, nil
}
