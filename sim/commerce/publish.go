package commerce

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/gemba-io/gemba/hub/act"
	"github.com/gemba-io/gemba/hub/ingest/commerce"
)

// Pending is the number of events generated and not yet acknowledged by the stream.
func (s *Sim) Pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue)
}

// Flush publishes every queued event (those Step produced and those not acknowledged before), in
// order, and books the acknowledged ones in the ledger. Events that failed stay queued, ahead of
// later ones, and are sent again with the same identity by the next Flush (which is always safe). The
// error names how many failed and the first failure.
func (s *Sim) Flush(ctx context.Context, pub commerce.EventPublisher) error {
	s.mu.Lock()
	q := s.queue
	s.queue = nil
	s.mu.Unlock()
	if len(q) == 0 {
		return nil
	}
	res := pub.Publish(ctx, q)
	var failed []commerce.Event
	var first error
	for i, r := range res {
		if r.Err != nil {
			failed = append(failed, q[i])
			if first == nil {
				first = r.Err
			}
			continue
		}
		s.ledger.book(q[i])
	}
	if len(failed) == 0 {
		return nil
	}
	s.mu.Lock()
	s.queue = append(failed, s.queue...)
	s.mu.Unlock()
	return fmt.Errorf("commerce simulator: %d of %d events not acknowledged (kept to send again): %w", len(failed), len(q), first)
}

// Run steps the market every tick (the plant's Tick) and publishes each step, until ctx ends. A
// failed publish is logged and retried at the next tick; a step that overruns its tick delays the
// next one rather than piling up.
func (s *Sim) Run(ctx context.Context, pub commerce.EventPublisher) error {
	t := time.NewTicker(s.cfg.Plant.Tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			s.Step()
			if err := s.Flush(ctx, pub); err != nil && ctx.Err() == nil {
				s.log.Warn("commerce simulator: publish failed", "pending", s.Pending(), "err", err)
			}
		}
	}
}

// Listen applies the hub's actions: it subscribes to <prefix>.actions.promotions.* and
// <prefix>.actions.holds.* (the subjects the hub's ACTIONS stream captures) on nc. A core subscription
// sees the actions published while it listens, not earlier ones. A message that does not decode or
// names something the simulator does not sell is logged with its subject and dropped. Stop
// unsubscribes.
func (s *Sim) Listen(nc *nats.Conn, prefix string) (stop func() error, err error) {
	var subs []*nats.Subscription
	stop = func() error {
		var errs []error
		for _, sub := range subs {
			errs = append(errs, sub.Unsubscribe())
		}
		return errors.Join(errs...)
	}
	for _, kind := range []act.Kind{act.Promote, act.Hold} {
		subj := prefix + ".actions.promotions.*"
		if kind == act.Hold {
			subj = prefix + ".actions.holds.*"
		}
		sub, err := nc.Subscribe(subj, func(m *nats.Msg) {
			if err := s.take(kind, m.Subject, m.Data); err != nil {
				s.log.Warn("commerce simulator: action dropped", "subject", m.Subject, "err", err)
			}
		})
		if err != nil {
			_ = stop()
			return nil, fmt.Errorf("commerce simulator: subscribe %s: %w", subj, err)
		}
		subs = append(subs, sub)
	}
	if err := nc.Flush(); err != nil {
		_ = stop()
		return nil, fmt.Errorf("commerce simulator: subscribe to actions: %w", err)
	}
	return stop, nil
}

// take decodes one action message and checks it against its subject before applying it.
func (s *Sim) take(kind act.Kind, subject string, data []byte) error {
	var m act.Message
	if err := json.Unmarshal(data, &m); err != nil {
		return fmt.Errorf("decode act.Message: %w", err)
	}
	if m.Kind != kind {
		return fmt.Errorf("action %q: kind %q on a %s subject", m.DecisionID, m.Kind, kind)
	}
	if ch := subject[strings.LastIndexByte(subject, '.')+1:]; ch != m.Channel {
		return fmt.Errorf("action %q: channel %q differs from the subject's %q", m.DecisionID, m.Channel, ch)
	}
	return s.Apply(m)
}
