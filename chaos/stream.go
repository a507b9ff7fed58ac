package chaos

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	gsignal "github.com/gemba-io/gemba/signal"
	"github.com/gemba-io/gemba/sim"
)

// StreamCount is what one agent's samples subject held.
type StreamCount struct {
	Messages    uint64 // JetStream messages
	DupMessages uint64 // messages whose id (agent, stream, first sequence) was already seen
	Samples     uint64 // samples in the messages counted once per id
	// Gaps is the number of buffer sequences missing between the messages (records dropped by the
	// buffer's policy, or lost); Jumps counts the deliberate sequence jumps of unclean restarts.
	Gaps, Jumps uint64
	Historical  uint64 // messages marked historical (sent late, after an outage)
	Counter     *sim.Counter
}

// EachMessage calls fn for every message of subject (every subject when empty) from the start of
// stream, in order, until the consumer has nothing pending.
func EachMessage(ctx context.Context, js jetstream.JetStream, stream, subject string, fn func(jetstream.Msg) error) error {
	var cc jetstream.OrderedConsumerConfig
	if subject != "" {
		cc.FilterSubjects = []string{subject}
	}
	cons, err := js.OrderedConsumer(ctx, stream, cc)
	if err != nil {
		return fmt.Errorf("consumer on %s: %w", stream, err)
	}
	for ctx.Err() == nil {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return fmt.Errorf("fetch from %s: %w", stream, err)
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			if err := fn(msg); err != nil {
				return err
			}
		}
		if n > 0 {
			continue
		}
		ci, err := cons.Info(ctx)
		if err != nil {
			return fmt.Errorf("consumer info %s: %w", stream, err)
		}
		if ci.NumPending == 0 {
			return nil
		}
	}
	return ctx.Err()
}

// CountStream reads every message of subject from the start of stream and counts its samples. A
// message repeated under the same id is counted in DupMessages and its samples are left out, so
// Counter shows sample-level duplicates that got past the message ids.
func CountStream(ctx context.Context, js jetstream.JetStream, stream, subject string) (StreamCount, error) {
	sc := StreamCount{Counter: sim.NewCounter()}
	var at uint64
	seen := map[uint64]uint64{} // first seq -> last seq
	err := EachMessage(ctx, js, stream, subject, func(msg jetstream.Msg) error {
		if md, err := msg.Metadata(); err == nil {
			at = md.Sequence.Stream
		}
		sc.Messages++
		b, err := gsignal.DecodeBatch(msg.Data())
		if err != nil {
			return fmt.Errorf("stream message %d: %w", at, err)
		}
		if _, dup := seen[b.FirstSeq]; dup {
			sc.DupMessages++
			return nil
		}
		seen[b.FirstSeq] = b.LastSeq
		if b.Historical {
			sc.Historical++
		}
		for i := range b.Samples {
			sc.Counter.Add(b.Samples[i].Signal, b.Samples[i].Time)
		}
		sc.Samples += uint64(len(b.Samples))
		return nil
	})
	if err != nil {
		return sc, err
	}
	// Sequence coverage. After an unclean stop the buffer deliberately jumps its sequences by 2^20
	// (buffer/frame.go, uncleanGap), so holes that large are restarts, not drops.
	firsts := make([]uint64, 0, len(seen))
	for first := range seen {
		firsts = append(firsts, first)
	}
	slices.Sort(firsts)
	var next uint64 = 1
	for _, first := range firsts {
		lastSeq := seen[first]
		if first > next {
			if hole := first - next; hole < 1<<19 {
				sc.Gaps += hole
			} else {
				sc.Jumps++
			}
		}
		next = max(next, lastSeq+1)
	}
	return sc, ctx.Err()
}
