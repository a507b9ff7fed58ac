// Package agents consumes the agents' stream with a durable pull consumer shared by every hub
// replica: decode, deduplicate beyond JetStream's window, update state, then acknowledge.
package agents

import (
	"bytes"
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
	"github.com/gemba-io/gemba/hub/state/features"
	"github.com/gemba-io/gemba/hub/state/inventory"
	"github.com/gemba-io/gemba/internal/kvretry"
	"github.com/gemba-io/gemba/internal/ratelog"
	"github.com/gemba-io/gemba/signal"
)

// Features is the feature store as ingest uses it.
type Features interface {
	Apply([]features.Input)
	Flush(ctx context.Context) error
}

// Stock takes produced units (idempotent by movement id): all movements of one SKU × site at once.
type Stock interface {
	MoveAll(ctx context.Context, ms []inventory.Movement) ([]inventory.Result, []error, error)
}

// Fleet takes heartbeats, with when the agents' stream stored them (the message's timestamp) and
// their sequence in it (the later is the newer, whatever the clocks).
type Fleet interface {
	HeartbeatSeq(ctx context.Context, h *signal.Header, st *signal.Status, stored time.Time, seq uint64) error
}

// Placer finds the site of a signal (the knowledge graph); ok=false when unknown.
type Placer interface {
	Place(signal string) (machine, line, site string, ok bool)
}

// Observer sees every fresh agents' message (features or samples, not status): after dedup, so a
// redelivered or re-sent copy is not seen twice by this replica, and before the ack. Observe runs
// on the ingest goroutine and must be cheap (it is on the hot path); Flush runs with the feature
// store's flush, and an error hands the batch back for redelivery like a state error (what the
// observer records must be idempotent per message identity). The batch and its records are only
// valid during Observe.
type Observer interface {
	Observe(b *signal.Batch)
	Flush(ctx context.Context) error
}

// Deps are the consumer's collaborators. Fleet, Stock and Observer may be nil.
type Deps struct {
	JS       jetstream.JetStream
	Prefix   string // subject prefix of the agents (gemba)
	Dedup    *dedup.Markers
	Features Features
	Stock    Stock
	Fleet    Fleet
	Placer   Placer
	Logger   *slog.Logger
	Metrics  *Metrics
	Observer Observer
}

// Consumer reads the agents' stream.
//
// Lifecycle: Run waits for the stream (agents create it), binds the durable consumer, and
// processes batches until ctx ends; it then stops pulling, finishes the batch in hand and the
// messages already taken (within drain of the stop) and returns. Messages it could not settle are redelivered to another replica.
type Consumer struct {
	cfg   Config
	d     Deps
	log   *slog.Logger
	m     *Metrics
	drain time.Duration
	ins   []features.Input // reused by process (one goroutine)

	mu     sync.Mutex
	why    string // not-ready reason
	warned map[string]bool
	refuse *ratelog.Logger // production the inventory refuses: per movement, a bad clock would flood the log

	doneAll func(context.Context, []dedup.Claim) error // marks claims done: Dedup.DoneAll (tests inject faults)
}

// New checks the config.
func New(cfg Config, d Deps, drain time.Duration) (*Consumer, error) {
	if d.JS == nil || d.Dedup == nil || d.Features == nil {
		return nil, errors.New("agents ingest: JetStream, dedup markers and feature store are required")
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Metrics == nil {
		d.Metrics = NewMetrics()
	}
	return &Consumer{cfg: cfg, d: d, log: d.Logger, m: d.Metrics, drain: drain, why: "not started", warned: map[string]bool{},
		refuse: ratelog.New(d.Logger, time.Minute), doneAll: d.Dedup.DoneAll}, nil
}

// Ready reports whether the consumer is bound and processing, and why not.
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

func (c *Consumer) subjects() []string {
	p := c.d.Prefix + ".*.*."
	s := []string{p + "features", p + "status"}
	if c.cfg.Samples {
		s = append(s, p+"samples")
	}
	return s
}

// bind waits for the stream and creates (or updates) the shared durable consumer.
func (c *Consumer) bind(ctx context.Context) (jetstream.Consumer, error) {
	wait := 100 * time.Millisecond
	for {
		cons, err := c.d.JS.CreateOrUpdateConsumer(ctx, c.cfg.Stream, jetstream.ConsumerConfig{
			Durable: c.cfg.Consumer, FilterSubjects: c.subjects(), AckPolicy: jetstream.AckExplicitPolicy,
			AckWait: c.cfg.AckWait, MaxAckPending: c.cfg.MaxAckPending, DeliverPolicy: jetstream.DeliverAllPolicy,
			Description: "gemba-hub: agents' features and status, shared by every hub replica",
		})
		if err == nil {
			c.checkRetention(ctx)
			return cons, nil
		}
		why := fmt.Sprintf("binding consumer %s on stream %s: %v", c.cfg.Consumer, c.cfg.Stream, err)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			why = fmt.Sprintf("waiting for stream %s (created by the first agent that connects)", c.cfg.Stream)
		}
		c.setWhy(why)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
			wait = min(wait*2, 5*time.Second)
		}
	}
}

// checkRetention warns when the stream keeps messages longer than the dedup markers remember
// them: a consumer re-created from the start would re-apply what is older than the markers.
func (c *Consumer) checkRetention(ctx context.Context) {
	st, err := c.d.JS.Stream(ctx, c.cfg.Stream)
	if err != nil {
		return
	}
	if age := st.CachedInfo().Config.MaxAge; age == 0 || age > c.cfg.DedupTTL {
		c.log.Warn("the agents' stream keeps messages longer than ingest.dedup_ttl: if the consumer is deleted and "+
			"re-created, messages older than the markers would be applied again", "stream", c.cfg.Stream,
			"stream_max_age", age, "dedup_ttl", c.cfg.DedupTTL)
	}
}

// Run consumes until ctx ends.
func (c *Consumer) Run(ctx context.Context) error {
	cons, err := c.bind(ctx)
	if err != nil {
		return nil // ctx ended while waiting
	}
	msgs := make(chan jetstream.Msg, 2*c.cfg.Batch)
	stopped := make(chan struct{})
	// Messages taken but not yet processed are bounded in bytes as well as in number: agents' feature
	// chunks are up to 256 KiB, and 2×batch of them would be hundreds of MB.
	g := newGate(bufferedBytes)
	h := newHeld()
	kctx, kstop := context.WithCancel(context.Background())
	defer kstop()
	go h.keepAlive(kctx, c.cfg.AckWait/3)
	var lastErr atomic.Pointer[error] // the consume's last error, to say why it stopped
	consume := func(cons jetstream.Consumer) (jetstream.ConsumeContext, error) {
		return cons.Consume(func(m jetstream.Msg) {
			h.add(m)
			if !g.acquire(len(m.Data())) {
				h.remove(m)
				return // stopping: redelivered after ack_wait
			}
			select {
			case msgs <- m:
			case <-stopped: // not processed: redelivered after ack_wait
				h.remove(m)
				g.release(len(m.Data()))
			}
		}, jetstream.PullMaxMessagesWithBytesLimit(2*c.cfg.Batch, c.pullBytes()), jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			lastErr.Store(&err)
			c.log.Debug("consume", "err", err)
		}))
	}
	cc, err := consume(cons)
	if err != nil {
		c.setWhy(fmt.Sprintf("consume %s: %v", c.cfg.Consumer, err))
		return fmt.Errorf("agents ingest: consume: %w", err)
	}
	c.setWhy("")
	c.log.Info("consuming agents' stream", "stream", c.cfg.Stream, "consumer", c.cfg.Consumer, "subjects", c.subjects())
	batch := make([]jetstream.Msg, 0, c.cfg.Batch)
	// fill adds what is already waiting to batch, up to the batch's count and bytes.
	fill := func(batch []jetstream.Msg, size int) ([]jetstream.Msg, int) {
		for len(batch) < c.cfg.Batch && size < batchBytes {
			select {
			case m := <-msgs:
				batch = append(batch, m)
				size += len(m.Data())
			default:
				return batch, size
			}
		}
		return batch, size
	}
	pause := time.Second // before binding again after the consume stopped: doubles while it keeps stopping
	// Batches are processed under a context that outlives ctx by the drain: a stop that arrives
	// while a batch is on its way through lets it finish (stored, marked, acked) rather than hand
	// it back to another replica. What is taken but not started shares the same deadline below.
	pctx, pcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer pcancel()
	var drainTimer *time.Timer
	var drainMu sync.Mutex
	stopDrain := context.AfterFunc(ctx, func() {
		drainMu.Lock()
		drainTimer = time.AfterFunc(c.drain, pcancel)
		drainMu.Unlock()
	})
	defer func() {
		stopDrain()
		drainMu.Lock()
		if drainTimer != nil {
			drainTimer.Stop()
		}
		drainMu.Unlock()
	}()
	for ctx.Err() == nil {
		var size int
		select {
		case m := <-msgs:
			batch, size = append(batch[:0], m), len(m.Data())
			pause = time.Second
		case <-cc.Closed():
			// The client library stopped consuming for good (the durable consumer was deleted, or the
			// server refused the pull): bind it again, as a restart would. A re-created consumer
			// delivers the stream from the start; the done markers make that a run of duplicates.
			why := fmt.Sprintf("consumer %s on stream %s stopped", c.cfg.Consumer, c.cfg.Stream)
			if e := lastErr.Load(); e != nil {
				why += ": " + (*e).Error()
			}
			c.setWhy(why + "; binding it again")
			c.log.Error("agents' consumer stopped, binding it again", "stream", c.cfg.Stream, "consumer", c.cfg.Consumer, "why", why)
			if kvretry.Sleep(ctx, pause) != nil {
				continue
			}
			pause = min(2*pause, 30*time.Second)
			if cons, err = c.bind(ctx); err != nil {
				continue // ctx ended
			}
			ncc, err := consume(cons)
			if err != nil {
				lastErr.Store(&err)
				continue // cc is still the stopped one: tried again after the pause
			}
			cc = ncc
			c.setWhy("")
			continue
		case <-ctx.Done():
			continue
		}
		batch, size = fill(batch, size)
		c.process(pctx, batch)
		h.remove(batch...)
		clear(batch) // the next batch reuses the array: drop this one's messages (MiBs of data) meanwhile
		g.release(size)
	}
	// Stop pulling, then finish what was already taken with a fresh deadline.
	cc.Stop()
	g.close()
	close(stopped)
	for {
		batch, _ = fill(batch[:0], 0)
		if len(batch) == 0 {
			break
		}
		c.process(pctx, batch)
		h.remove(batch...)
	}
	c.setWhy("stopped")
	return nil
}

// item is one message of a batch on its way through.
type item struct {
	msg    jetstream.Msg
	seq    uint64
	stored time.Time // the server's timestamp of the message
	batch  *signal.Batch
	sites  map[string]string // site of each production signal, pinned at the first delivery (see pin)
}

// process settles every message of a batch: malformed ones are terminated, duplicates and status
// acked, fresh features applied and flushed, then acked. Anything that failed is nak'ed (with a
// delay) and comes back, to this replica or another; state updates are idempotent.
func (c *Consumer) process(ctx context.Context, msgs []jetstream.Msg) {
	items := make([]item, 0, len(msgs))
	var claims []dedup.Claim
	var pins [][]byte
	var claimed []int
	for _, m := range msgs {
		meta, err := m.Metadata()
		if err != nil {
			c.malformed(m, 0, fmt.Errorf("no JetStream metadata: %w", err))
			continue
		}
		b, err := signal.DecodeBatch(m.Data())
		if err == nil {
			err = c.checkSubject(m.Subject(), &b.Header)
		}
		if err != nil {
			c.malformed(m, meta.Sequence.Stream, err)
			continue
		}
		c.m.messages.WithLabelValues(b.Stream.String()).Inc()
		if meta.NumDelivered > 1 {
			c.m.redelivered.Inc()
		}
		if b.Stream == signal.StreamStatus {
			c.status(ctx, m, b, meta.Timestamp, meta.Sequence.Stream)
			continue
		}
		claims = append(claims, dedup.Claim{ID: b.MsgID(), StreamSeq: meta.Sequence.Stream})
		claimed = append(claimed, len(items))
		sites, pin := c.place(b)
		pins = append(pins, pin)
		items = append(items, item{msg: m, seq: meta.Sequence.Stream, stored: meta.Timestamp, batch: b, sites: sites})
	}
	if len(items) == 0 {
		return
	}
	verdicts, recorded, err := c.d.Dedup.ClaimPinned(ctx, claims, pins)
	if err != nil {
		c.retry(items, fmt.Errorf("dedup: %w", err))
		return
	}
	fresh := items[:0]
	for i, v := range verdicts {
		it := items[claimed[i]]
		if v == dedup.Duplicate {
			c.m.duplicates.Inc()
			_ = it.msg.Ack()
			continue
		}
		if recorded[i] != nil && !bytes.Equal(recorded[i], pins[i]) {
			it.sites = c.pinned(it.batch, recorded[i], it.sites)
		}
		fresh = append(fresh, it)
	}
	var moves []inventory.Movement
	for _, it := range fresh {
		b := it.batch
		if b.Historical {
			c.m.historical.Inc()
		}
		if c.d.Observer != nil {
			c.d.Observer.Observe(b)
		}
		if b.Stream == signal.StreamSamples {
			c.m.records.WithLabelValues("samples").Add(float64(len(b.Samples)))
			b.Samples = nil // counted and observed: not needed any more (see b.Features below)
			continue
		}
		c.m.records.WithLabelValues("features").Add(float64(len(b.Features)))
		lin := features.Lineage{Agent: b.Agent, Site: b.Site, Incarnation: b.Incarnation, ConfigVersion: b.ConfigVersion,
			FirstSeq: b.FirstSeq, StreamSeq: it.seq}
		// One message at a time: the inputs of a whole batch (hundreds of messages of ~800 records)
		// would be a slice of tens of MB regrown on every batch.
		c.ins = c.ins[:0]
		for fi := range b.Features {
			f := &b.Features[fi]
			c.ins = append(c.ins, features.Input{Feature: f, Lineage: lin, Historical: b.Historical})
			if mv, ok := c.production(b, f, it.sites); ok {
				moves = append(moves, mv)
			}
		}
		c.d.Features.Apply(c.ins)
		// Applied: the records are not needed for the rest of the batch's path, and decoded they weigh
		// about as much as the message. Dropped, the flush, the inventory moves and the acks (round
		// trips, the longer part) hold the batch's messages only, not their decoded copy as well.
		b.Features = nil
	}
	clear(c.ins) // drop the references into this batch's messages
	// The feature writes and the inventory moves (then the observer's records) are independent round
	// trips: overlapped. Feature values and the observer's records are idempotent whatever their age;
	// inventory movements for the horizon after they left a key's list, and within its bound
	// (max_movements ids per key): past that only the done markers guard them, which a redelivery
	// passes. So once the moves are made the batch is not handed back for another write's failure:
	// that write (and the markers) is retried in place while the replica runs, and a replica that
	// dies meanwhile leaves it to the inventory. Moves that fail hand the batch back before anything
	// is marked (the keys moved absorb it).
	flushed := make(chan error, 1)
	go func() { flushed <- c.d.Features.Flush(ctx) }()
	merr := c.moveAll(ctx, moves)
	var oerr error
	if merr == nil && c.d.Observer != nil {
		oerr = c.d.Observer.Flush(ctx)
	}
	ferr := <-flushed
	if merr != nil {
		c.retry(fresh, fmt.Errorf("inventory: %w", merr))
		return
	}
	if ferr != nil {
		ferr = c.inPlace(ctx, "feature store", ferr, c.d.Features.Flush)
	}
	if oerr != nil && ferr == nil {
		oerr = c.inPlace(ctx, "observer", oerr, c.d.Observer.Flush)
	}
	if err := errors.Join(ferr, oerr); err != nil {
		c.retry(fresh, err) // stopping
		return
	}
	done := make([]dedup.Claim, len(fresh))
	for i, it := range fresh {
		done[i] = dedup.Claim{ID: it.batch.MsgID(), StreamSeq: it.seq}
	}
	if err := c.inPlace(ctx, "dedup markers", nil, func(ctx context.Context) error { return c.doneAll(ctx, done) }); err != nil {
		c.retry(fresh, err) // stopping: stored, but not marked
		return
	}
	now := time.Now()
	for _, it := range fresh {
		_ = it.msg.Ack()
		if !it.batch.Sent.IsZero() {
			c.m.latency.Observe(now.Sub(it.batch.Sent).Seconds())
		}
		if !it.stored.IsZero() {
			c.m.stored.Observe(max(now.Sub(it.stored), 0).Seconds()) // another server's clock may be ahead
		}
	}
}

func (c *Consumer) status(ctx context.Context, m jetstream.Msg, b *signal.Batch, stored time.Time, seq uint64) {
	if c.d.Fleet != nil {
		for i := range b.Status {
			if err := c.d.Fleet.HeartbeatSeq(ctx, &b.Header, &b.Status[i], stored, seq); err != nil {
				c.m.errors.Inc()
				c.log.Warn("heartbeat not stored", "agent", b.Agent, "err", err)
				_ = m.NakWithDelay(time.Second)
				return
			}
		}
	}
	_ = m.Ack()
}

// checkSubject: the envelope must belong on the subject it came on (<prefix>.<site>.<agent>.<stream>).
func (c *Consumer) checkSubject(subj string, h *signal.Header) error {
	want := signal.Subject(c.d.Prefix, h.Site, h.Agent, h.Stream)
	if subj != want {
		return fmt.Errorf("envelope of agent %q site %q stream %s arrived on subject %s", h.Agent, h.Site, h.Stream, subj)
	}
	return nil
}

// malformed terminates a message that can never be processed: counted, logged once per agent
// (the subject's agent token), never redelivered.
func (c *Consumer) malformed(m jetstream.Msg, seq uint64, err error) {
	c.m.malformed.Inc()
	agent := "?"
	if t := strings.Split(m.Subject(), "."); len(t) >= 3 {
		agent = t[len(t)-2]
	}
	c.mu.Lock()
	first := !c.warned[agent] && len(c.warned) < maxWarned
	if first {
		c.warned[agent] = true // bounded: past maxWarned agents, new ones are counted, not logged
	}
	c.mu.Unlock()
	if first {
		c.log.Error("malformed message terminated (logged once per agent)", "agent", agent, "subject", m.Subject(),
			"stream_seq", seq, "err", err)
	}
	_ = m.TermWithReason("malformed: " + truncate(err.Error(), 200))
}

// maxWarned bounds the agents remembered as already logged about.
const maxWarned = 10000

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// retry hands the messages back for redelivery; their state updates so far are idempotent.
func (c *Consumer) retry(items []item, err error) {
	c.m.errors.Inc()
	c.log.Warn("batch not stored, redelivering", "messages", len(items), "err", err)
	for _, it := range items {
		_ = it.msg.NakWithDelay(time.Second)
	}
}
