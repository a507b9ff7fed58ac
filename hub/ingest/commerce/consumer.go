package commerce

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub/ingest/dedup"
	"github.com/gemba-io/gemba/internal/kvretry"
	"github.com/gemba-io/gemba/internal/ratelog"
)

// Sink applies commerce events to the hub's state. A message is acknowledged only after its Apply
// returned nil; it can be applied again after a crash or a lost ack (the dedup claim of a redelivery is
// Fresh), so applying must be idempotent by the event's MsgID. An error is retried after
// Config.RetryDelay, unless it wraps ErrReject.
type Sink interface {
	ApplySale(ctx context.Context, s Sale) error
	ApplySnapshot(ctx context.Context, s Snapshot) error
}

// ErrReject is wrapped by a Sink error for an event that can never be applied (retrying cannot help):
// the message is terminated and counted as rejected instead of retried.
var ErrReject = errors.New("commerce event rejected")

// ConsumerOptions configure a Consumer.
type ConsumerOptions struct {
	Config  Config // Stream, Prefix, Consumer, AckWait, RetryDelay, Batch, MaxAckPending
	Markers *dedup.Markers
	Sink    Sink
	Log     *slog.Logger
	Metrics *Metrics
	// LogEvery is the least interval between two log lines about the same subject (1m when 0).
	LogEvery time.Duration
	// FetchWait is how long an idle fetch waits for a message (5s when 0). Run returns at once when its
	// context ends, whatever this is.
	FetchWait time.Duration
}

// Consumer applies the COMMERCE stream to a Sink through a durable pull consumer that every hub
// replica shares: each message goes to one replica, and the dedup markers make sure an identity
// published twice (beyond JetStream's duplicate window) is applied once.
type Consumer struct {
	js      jetstream.JetStream
	o       ConsumerOptions
	warn    *ratelog.Logger
	backoff time.Duration

	mu  sync.Mutex
	why string // not-ready reason
}

// Ready reports whether the consumer is bound and fetching, and why not.
func (c *Consumer) Ready() (bool, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.why == "", c.why
}

func (c *Consumer) setWhy(s string) {
	c.mu.Lock()
	c.why = s
	c.mu.Unlock()
}

// NewConsumer checks the options; Run does the work.
func NewConsumer(js jetstream.JetStream, o ConsumerOptions) (*Consumer, error) {
	if err := o.Config.check(false); err != nil {
		return nil, err
	}
	switch {
	case o.Markers == nil:
		return nil, errors.New("commerce consumer: no dedup markers")
	case o.Sink == nil:
		return nil, errors.New("commerce consumer: no sink")
	case o.Log == nil:
		return nil, errors.New("commerce consumer: no logger")
	}
	if o.Metrics == nil {
		o.Metrics, _ = NewMetrics(nil)
	}
	if o.LogEvery <= 0 {
		o.LogEvery = time.Minute
	}
	if o.FetchWait <= 0 {
		o.FetchWait = 5 * time.Second
	}
	return &Consumer{js: js, o: o, warn: ratelog.New(o.Log, o.LogEvery), backoff: time.Second, why: "not started"}, nil
}

// Run binds (or creates) the durable consumer and applies messages until ctx ends, then returns once
// the messages it holds are settled: applied and acknowledged, or handed back (nak) for another
// replica. It returns an error only if the server refuses to create the consumer (no such stream):
// an unanswered request, and later failures (server unavailable, sink errors), are logged, counted
// and retried.
func (c *Consumer) Run(ctx context.Context) error {
	cons, err := c.bind(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while creating it: not a failure
		}
		c.setWhy(err.Error())
		return err
	}
	c.setWhy("")
	for ctx.Err() == nil {
		msgs, err := c.fetch(ctx, cons)
		if err != nil {
			// A deleted consumer is not created again here: a new one would replay the whole stream, and
			// events older than the state's idempotence horizon would be applied twice. That takes a
			// decision (restart, or a consumer starting at a chosen sequence), so it is logged, and the
			// replica is not ready until a fetch succeeds.
			if ctx.Err() == nil {
				c.setWhy(fmt.Sprintf("commerce consumer %s on %s: fetch failed: %v", c.o.Config.Consumer, c.o.Config.Stream, err))
			}
			c.warn.Warn("fetch", "commerce: fetch failed", "consumer", c.o.Config.Consumer, "err", err)
			_ = kvretry.Sleep(ctx, c.backoff)
			continue
		}
		c.setWhy("")
		c.handle(ctx, msgs)
	}
	return nil
}

// bind creates or binds the durable consumer. A request JetStream does not answer (a server still
// recovering its streams, a cluster electing) is repeated until ctx ends; a definite refusal (no
// such stream) is returned.
func (c *Consumer) bind(ctx context.Context) (jetstream.Consumer, error) {
	cfg := c.o.Config
	for {
		actx, cancel := context.WithTimeout(ctx, kvretry.SetupAttempt)
		cons, err := c.js.CreateOrUpdateConsumer(actx, cfg.Stream, jetstream.ConsumerConfig{
			Durable:       cfg.Consumer,
			Description:   "gemba-hub: commerce events applied to state (shared by all hub replicas)",
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       cfg.AckWait,
			MaxDeliver:    -1, // a failing Sink is retried until it recovers; malformed events are terminated
			MaxAckPending: cfg.MaxAckPending,
			FilterSubject: cfg.Prefix + ".commerce.>",
			DeliverPolicy: jetstream.DeliverAllPolicy,
		})
		cancel()
		if err == nil {
			return cons, nil
		}
		err = fmt.Errorf("commerce consumer %s on %s: %w", cfg.Consumer, cfg.Stream, err)
		if !kvretry.Unanswered(err) || ctx.Err() != nil {
			return nil, err
		}
		c.setWhy(err.Error() + "; creating it again")
		c.warn.Warn("bind", "commerce: JetStream did not answer, creating the consumer again", "err", err)
		_ = kvretry.Sleep(ctx, c.backoff)
	}
}

// fetch takes what is waiting without waiting (a batch per dedup round trip); when nothing is, it
// waits for one message, so a lone event is applied at once rather than when a batch fills.
func (c *Consumer) fetch(ctx context.Context, cons jetstream.Consumer) ([]jetstream.Msg, error) {
	b, err := cons.FetchNoWait(c.o.Config.Batch)
	if err != nil {
		return nil, err
	}
	msgs, err := drain(b)
	if len(msgs) > 0 || ctx.Err() != nil {
		return msgs, nil
	}
	if err != nil {
		return nil, err
	}
	fctx, cancel := context.WithTimeout(ctx, c.o.FetchWait)
	defer cancel()
	b, err = cons.Fetch(1, jetstream.FetchContext(fctx))
	if err != nil {
		return nil, err
	}
	msgs, err = drain(b)
	if len(msgs) > 0 || fctx.Err() != nil {
		return msgs, nil
	}
	return msgs, err
}

func drain(b jetstream.MessageBatch) ([]jetstream.Msg, error) {
	var msgs []jetstream.Msg
	for m := range b.Messages() {
		msgs = append(msgs, m)
	}
	err := b.Error()
	if errors.Is(err, jetstream.ErrNoMessages) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		err = nil
	}
	return msgs, err
}

// decoded is a message that decoded, waiting for its claim.
type decoded struct {
	msg jetstream.Msg
	ev  Event
	seq uint64
}

// decode reads a message by its subject's kind.
func (c *Consumer) decode(m jetstream.Msg) (Event, string, error) {
	subj := m.Subject()
	switch {
	case strings.HasSuffix(subj, ".commerce.inventory"):
		s, err := DecodeSnapshot(m.Data())
		return s, kindInventory, err
	case strings.Contains(subj, ".commerce.sales."):
		s, err := DecodeSale(subj, m.Data())
		return s, kindSale, err
	}
	return nil, "unknown", fmt.Errorf("subject is neither <prefix>.commerce.sales.<channel> nor <prefix>.commerce.inventory")
}

func (c *Consumer) count(kind, outcome string) {
	c.o.Metrics.Consumed.WithLabelValues(kind, outcome).Inc()
}

// handle settles a fetched batch: malformed messages are terminated, the rest claimed in one round
// trip, duplicates acknowledged, fresh ones applied in stream order.
func (c *Consumer) handle(ctx context.Context, msgs []jetstream.Msg) {
	var ok []decoded
	for _, m := range msgs {
		meta, err := m.Metadata()
		var seq uint64
		if err == nil {
			seq = meta.Sequence.Stream
		}
		ev, kind, derr := c.decode(m)
		if err == nil {
			err = derr
		}
		if err != nil {
			c.count(kind, outcomeMalformed)
			c.warn.Warn(m.Subject(), "commerce: malformed event terminated", "subject", m.Subject(), "stream_seq", seq, "err", err)
			c.settle(m, m.TermWithReason("malformed: "+clipStr(err.Error())))
			continue
		}
		ok = append(ok, decoded{msg: m, ev: ev, seq: seq})
	}
	if len(ok) == 0 {
		return
	}
	var next atomic.Int64 // ok[next:] are not settled yet
	stop := c.keepAlive(ok, &next)
	defer stop()
	claims := make([]dedup.Claim, len(ok))
	for i, d := range ok {
		claims[i] = dedup.Claim{ID: d.ev.MsgID(), StreamSeq: d.seq}
	}
	// Bounded: an unanswered claim must not hold the batch for ever (it is redelivered instead).
	cctx, cancel := context.WithTimeout(ctx, c.o.Config.AckWait)
	verdicts, err := c.o.Markers.ClaimAll(cctx, claims)
	cancel()
	if err != nil {
		for _, d := range ok {
			c.count(d.ev.kind(), outcomeClaimError)
			c.giveBack(ctx, d.msg)
		}
		if ctx.Err() == nil {
			c.warn.Warn("claim", "commerce: dedup claims failed, batch retried", "events", len(ok), "err", err)
		}
		return
	}
	for i, d := range ok {
		next.Store(int64(i)) // ok[:i] are settled
		if verdicts[i] == dedup.Duplicate {
			c.count(d.ev.kind(), outcomeDuplicate)
			c.settle(d.msg, d.msg.Ack())
			continue
		}
		if ctx.Err() != nil {
			c.settle(d.msg, d.msg.Nak()) // stopping: another replica takes it now rather than after AckWait
			continue
		}
		err := c.apply(ctx, d.ev)
		if err == nil {
			// Applied: mark the claim done before the ack, so that re-reading the stream (a re-created
			// consumer) finds it done. A failure leaves it pending: the redelivery is absorbed by the sink.
			err = c.o.Markers.DoneAll(ctx, claims[i:i+1])
		}
		switch {
		case err == nil:
			c.count(d.ev.kind(), outcomeApplied)
			c.settle(d.msg, d.msg.Ack())
		case errors.Is(err, ErrReject):
			c.count(d.ev.kind(), outcomeRejected)
			c.warn.Warn(d.msg.Subject(), "commerce: event rejected by the sink, terminated", "subject", d.msg.Subject(),
				"stream_seq", d.seq, "id", d.ev.MsgID(), "err", err)
			c.settle(d.msg, d.msg.TermWithReason("rejected: "+clipStr(err.Error())))
		default:
			c.count(d.ev.kind(), outcomeSinkError)
			if ctx.Err() == nil {
				c.warn.Warn("sink", "commerce: sink failed, event retried", "subject", d.msg.Subject(), "stream_seq", d.seq,
					"id", d.ev.MsgID(), "err", err)
			}
			c.giveBack(ctx, d.msg)
		}
	}
}

// keepAlive tells the server, every third of AckWait, that the batch's unsettled messages are still
// being worked on: a slow Sink (retrying through a KV leader election) would otherwise see them
// redelivered to another replica while this one still applies them. The returned func stops it.
func (c *Consumer) keepAlive(ok []decoded, next *atomic.Int64) func() {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(c.o.Config.AckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				for i := int(next.Load()); i < len(ok); i++ {
					_ = ok[i].msg.InProgress() // a failure only means an earlier redelivery, which is absorbed
				}
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

func (c *Consumer) apply(ctx context.Context, ev Event) error {
	switch e := ev.(type) {
	case Sale:
		return c.o.Sink.ApplySale(ctx, e)
	case Snapshot:
		return c.o.Sink.ApplySnapshot(ctx, e)
	}
	return fmt.Errorf("%w: unknown event type %T", ErrReject, ev)
}

// giveBack returns a message for a later retry: after RetryDelay while running (the failure is
// likely to last a moment), at once when stopping (another replica can take it).
func (c *Consumer) giveBack(ctx context.Context, m jetstream.Msg) {
	if ctx.Err() != nil {
		c.settle(m, m.Nak())
		return
	}
	c.settle(m, m.NakWithDelay(c.o.Config.RetryDelay))
}

// settle logs a failed ack: the server then redelivers after AckWait, which the dedup claim and an
// idempotent Sink absorb.
func (c *Consumer) settle(m jetstream.Msg, err error) {
	if err != nil {
		c.warn.Warn("ack", "commerce: acknowledgement failed, message will be redelivered", "subject", m.Subject(), "err", err)
	}
}
