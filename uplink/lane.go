package uplink

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/signal"
)

// A lane forwards one buffered stream. One goroutine reads the buffer and publishes; PubAck
// callbacks mark messages done; a second goroutine acks the buffer up to the floor: the highest
// sequence below which every record read has a PubAck.
//
// Live before backlog: when the records being read are historical and the buffer's tail is far
// ahead, the lane splits at the tail T. Records <= T are the backlog (read from the floor up),
// records > T are live (read from T up); both are published in sequence order within their part,
// live first, with the backlog getting at least backfill_share of the bytes while live data is
// pending and everything when it is not. The buffer is still acked only up to the floor, which
// cannot pass the backlog's read position, so a crash during catch-up re-sends (same ids,
// deduplicated) rather than loses. When the backlog reaches T the parts merge.
//
// A failed publish (timeout, disconnect, stream full) ends the lane's generation: the lane waits
// for the other in-flight PubAcks, rewinds to the floor and re-reads from the buffer, so the same
// records go out again with the same message ids; those JetStream already acknowledged (live data
// sent ahead of the backlog, PubAcks that overtook the failed one) are passed over, not re-sent.
type lane struct {
	u       *Uplink
	stream  signal.Stream
	subject string

	ackWake chan struct{}
	settled chan struct{}

	mu          sync.Mutex
	gen         uint64
	cancel      context.CancelFunc
	q           []*pending // sequence order; the backlog while split
	live        []*pending // live part while split
	cursor      uint64     // highest sequence read into q
	split       bool
	liveCursor  uint64 // highest sequence read into live
	backlogEnd  uint64 // the split point T
	liveBytes   int
	backBytes   int
	outstanding int // published in this generation, no callback yet
	genAcks     int
	failErr     error
	floor       uint64
	sourceAcked uint64
	// stored are sequences above the floor that JetStream acknowledged and that are no longer in
	// q or live (live data sent ahead of a backlog, PubAcks that overtook a failed one before a
	// rewind): sorted, disjoint, dropped once the floor passes them. A re-read does not send them
	// again.
	stored []span
	// A PubAck may say "duplicate" only for a record that could have been published before: one
	// in the buffer when the uplink started (seq <= replayTo) or one sent by an earlier generation
	// (seq <= prevSent). sent is the highest sequence handed to publish so far.
	replayTo, prevSent, sent uint64
}

type pstate uint8

const (
	unsent pstate = iota
	inflight
	acked
	failed
)

type pending struct {
	lane    *lane
	gen     uint64
	seq     uint64
	records int
	size    int
	sent    time.Time
	state   pstate
	resend  bool // a duplicate PubAck is expected (see lane.replayTo)
	msg     *nats.Msg
	buf     *[]byte
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

func newLane(u *Uplink, s signal.Stream) *lane {
	return &lane{
		u: u, stream: s, subject: u.cfg.NATS.subjectFor(u.id, s),
		ackWake: make(chan struct{}, 1), settled: make(chan struct{}, 1),
	}
}

func (l *lane) msgID(seq uint64) string {
	return signal.MsgID(l.u.id.Agent, l.stream, l.u.id.Incarnation, seq)
}

func (l *lane) health() StreamHealth {
	l.mu.Lock()
	defer l.mu.Unlock()
	read := l.cursor
	if l.split {
		read = max(read, l.liveCursor)
	}
	return StreamHealth{Stream: l.stream.String(), ReadSeq: read, AckedSeq: l.sourceAcked, CatchingUp: l.split}
}

// run is the lane's reader: one generation after another until ctx ends.
func (l *lane) run(ctx context.Context) {
	bo := backoff{min: 50 * time.Millisecond, max: l.u.cfg.NATS.ReconnectMaxWait}
	l.mu.Lock()
	l.replayTo = math.MaxUint64 // without a tail, any record may be a re-send
	if l.u.tail != nil {
		l.replayTo = l.u.tail(l.stream)
	}
	l.mu.Unlock()
	for ctx.Err() == nil {
		select {
		case <-l.u.connectedCh():
		case <-ctx.Done():
			return
		}
		genCtx, cancel := context.WithCancel(ctx)
		l.mu.Lock()
		l.gen++
		l.cancel, l.genAcks, l.failErr = cancel, 0, nil
		l.prevSent = l.sent
		l.mu.Unlock()
		err := l.forward(genCtx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		l.settle(ctx)
		l.mu.Lock()
		if l.failErr != nil {
			err = l.failErr
		}
		progressed := l.genAcks > 0
		from := l.rewindLocked()
		l.mu.Unlock()
		if progressed {
			bo.reset()
		}
		d := bo.next()
		l.u.log.Info("resending from buffer", "stream", l.stream.String(), "after_seq", from,
			"cause", l.u.redact(errString(err)), "retry_in", d.Round(time.Millisecond))
		if !sleepCtx(ctx, d) {
			return
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// forward reads and publishes until the generation fails or ctx ends.
func (l *lane) forward(ctx context.Context) error {
	u := l.u
	for {
		after, live := l.nextRead()
		recs, err := u.src.Read(ctx, l.stream, after, u.cfg.ReadBatch)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			msg := u.setErr(err)
			u.log.Error("buffer read failed", "stream", l.stream.String(), "after", after, "err", msg)
			return fmt.Errorf("buffer read %s after %d: %w", l.stream, after, err)
		}
		batch := l.accept(recs, live)
		for i, p := range batch {
			if err := l.publish(ctx, p); err != nil {
				l.mu.Lock()
				for _, q := range batch[i+1:] {
					if q.state == unsent { // never published: return the buffer now
						bufPool.Put(q.buf)
						q.buf, q.state = nil, failed
					}
				}
				l.mu.Unlock()
				return err
			}
		}
	}
}

// nextRead picks the part to read next and the sequence to read after.
func (l *lane) nextRead() (after uint64, live bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.split {
		return l.cursor, false
	}
	liveReady := l.u.tail(l.stream) > l.liveCursor
	backlogDue := float64(l.backBytes) < l.u.cfg.BackfillShare*float64(l.backBytes+l.liveBytes)
	if liveReady && !backlogDue {
		return l.liveCursor, true
	}
	return l.cursor, false
}

// accept turns records into pending messages (envelopes built now, as Data is only valid until
// the next Read) and adds them to the lane's queue before any is published, so the floor cannot
// pass a record that is not yet in flight.
func (l *lane) accept(recs []signal.Record, live bool) []*pending {
	u := l.u
	now := time.Now()
	out := make([]*pending, 0, len(recs))
	l.mu.Lock()
	defer l.mu.Unlock()
	merge := false
	for _, r := range recs {
		if l.split && !live && r.Seq > l.backlogEnd {
			merge = true // the backlog reached the live part
			break
		}
		p := &pending{lane: l, gen: l.gen, seq: r.Seq, resend: r.Seq <= max(l.replayTo, l.prevSent)}
		l.sent = max(l.sent, r.Seq)
		c, err := signal.ParseChunk(r.Data)
		if err == nil && c.Stream != l.stream {
			err = fmt.Errorf("chunk of stream %s in buffer stream %s", c.Stream, l.stream)
		}
		switch {
		case l.storedLocked(r.Seq):
			p.state = acked // JetStream acknowledged it before the lane rewound: never sent again
		case err != nil:
			// Unforwardable: count it, say where it is, and let the floor pass it.
			u.m.errors.Add(1)
			u.m.corrupt.Add(1)
			u.log.Error("skipping corrupt buffer record", "stream", l.stream.String(), "seq", r.Seq, "err", err)
			p.state = acked
		default:
			h := signal.Header{
				Schema: signal.SchemaVersion, Agent: u.id.Agent, Site: u.id.Site, Stream: l.stream,
				ConfigVersion: c.ConfigVersion, Incarnation: u.id.Incarnation, FirstSeq: r.Seq, LastSeq: r.Seq, Count: c.Count,
				Oldest: c.Oldest, Newest: c.Newest, Sent: now.UTC(),
			}
			// Late relative to capture (receive) time, not to the values' source times: the first
			// OPC UA snapshot after a start carries old source times and is live.
			if ct := c.CaptureTime(); !ct.IsZero() && now.Sub(ct) > u.cfg.HistoricalAfter {
				h.Historical, h.Delay = true, now.Sub(ct)
			}
			p.buf = bufPool.Get().(*[]byte)
			*p.buf = signal.AppendEnvelope((*p.buf)[:0], &h, c.Records)
			p.size, p.records = len(*p.buf), c.Count
			p.msg = &nats.Msg{Subject: l.subject, Data: *p.buf, Header: nats.Header{
				jetstream.MsgIDHeader:          []string{l.msgID(r.Seq)},
				jetstream.ExpectedStreamHeader: []string{u.cfg.NATS.Stream},
			}}
			out = append(out, p)
		}
		if live {
			l.live = append(l.live, p)
			l.liveCursor = r.Seq
			l.liveBytes += p.size
		} else {
			l.q = append(l.q, p)
			l.cursor = r.Seq
			if l.split {
				l.backBytes += p.size
			}
		}
	}
	if l.split && !live && (merge || l.cursor >= l.backlogEnd) {
		l.q = append(l.q, l.live...)
		l.cursor = max(l.cursor, l.liveCursor)
		l.live, l.split = nil, false
		u.log.Info("backlog replayed", "stream", l.stream.String(), "up_to_seq", l.backlogEnd)
	} else if !l.split && !live && len(recs) > 0 && u.tail != nil {
		// Split when what we read is historical and the tail is more than a read ahead.
		if hist := now.Sub(lastCaptured(recs)) > u.cfg.HistoricalAfter; hist {
			if t := u.tail(l.stream); t > l.cursor+uint64(u.cfg.ReadBatch) {
				l.split, l.backlogEnd, l.liveCursor = true, t, t
				l.liveBytes, l.backBytes = 0, 0
				u.log.Info("replaying backlog next to live data", "stream", l.stream.String(),
					"backlog_from", l.cursor, "backlog_to", t, "backfill_share", u.cfg.BackfillShare)
			}
		}
	}
	if l.updateFloorLocked() { // skipped records alone can raise the floor: no PubAck will wake the acker
		l.wakeAcker()
	}
	return out
}

func lastCaptured(recs []signal.Record) time.Time {
	c, err := signal.ParseChunk(recs[len(recs)-1].Data)
	if err != nil {
		return time.Now()
	}
	return c.CaptureTime()
}

// publish sends one message asynchronously once the window has room.
func (l *lane) publish(ctx context.Context, p *pending) error {
	u := l.u
	if err := u.win.acquire(ctx, p.size); err != nil {
		return err
	}
	l.mu.Lock()
	if p.gen != l.gen || ctx.Err() != nil {
		l.mu.Unlock()
		u.win.release(p.size)
		return context.Canceled
	}
	p.state, p.sent = inflight, time.Now()
	l.outstanding++
	l.mu.Unlock()

	m := p.msg // done (on another goroutine) clears p.msg
	u.infMu.Lock()
	u.inflight[m] = p
	u.infMu.Unlock()
	_, err := u.js.PublishMsgAsync(m)
	if errors.Is(err, nats.ErrMaxPayload) {
		err = fmt.Errorf("%d bytes, over the NATS server's max_payload of %d bytes: %w", p.size, u.maxPayload(), err)
	}
	if err != nil {
		// The client may already have reported this message through the error callback (a
		// disconnect racing the publish); whoever takes it from the map finishes it.
		if u.take(m) != nil {
			l.done(p, nil, fmt.Errorf("publish %s: %w", l.msgID(p.seq), err))
		}
		return err
	}
	u.m.published.Add(1)
	return nil
}

// take removes the bookkeeping of a message whose PubAck or error arrived.
func (u *Uplink) take(m *nats.Msg) *pending {
	u.infMu.Lock()
	p := u.inflight[m]
	delete(u.inflight, m)
	u.infMu.Unlock()
	return p
}

func (u *Uplink) onAck(_ jetstream.JetStream, m *nats.Msg, pa *jetstream.PubAck) {
	if p := u.take(m); p != nil {
		p.lane.done(p, pa, nil)
	}
}

func (u *Uplink) onErr(_ jetstream.JetStream, m *nats.Msg, err error) {
	if p := u.take(m); p != nil {
		p.lane.done(p, nil, err)
	}
}

// done records the outcome of one publish.
func (l *lane) done(p *pending, pa *jetstream.PubAck, err error) {
	u := l.u
	u.win.release(p.size)
	if err == nil {
		u.m.acked.Add(1)
		u.m.ackedRecords.Add(uint64(p.records))
		u.m.latency.Observe(time.Since(p.sent).Seconds())
		if pa.Duplicate {
			u.m.duplicates.Add(1)
			if !p.resend {
				l.collision(p)
			}
		}
	} else {
		u.m.errors.Add(1)
	}
	l.mu.Lock()
	current := p.gen == l.gen
	if current {
		l.outstanding--
	}
	if err == nil {
		p.state = acked
		if current {
			l.genAcks++
		}
	} else {
		p.state = failed
		if current && l.failErr == nil {
			l.failErr = err
			l.cancel()
		}
	}
	if p.buf != nil {
		bufPool.Put(p.buf)
	}
	p.buf, p.msg = nil, nil
	moved := l.updateFloorLocked()
	settled := current && l.outstanding == 0
	l.mu.Unlock()

	if err == nil {
		u.clearPublishWhy(l)
	} else if current {
		u.publishFailed(l, err)
	}
	if moved {
		l.wakeAcker()
	}
	if settled {
		select {
		case l.settled <- struct{}{}:
		default:
		}
	}
}

func (l *lane) wakeAcker() {
	select {
	case l.ackWake <- struct{}{}:
	default:
	}
}

// updateFloorLocked pops acknowledged messages off the queue and reports whether the floor rose.
func (l *lane) updateFloorLocked() bool {
	i := 0
	for i < len(l.q) && l.q[i].state == acked {
		i++
	}
	if i > 0 {
		clear(l.q[:i])
		l.q = l.q[i:]
	}
	// While the backlog holds the floor down, the live part's acknowledged prefix is kept as a
	// span, not as messages: a catch-up can last hours.
	j := 0
	for j < len(l.live) && l.live[j].state == acked {
		j++
	}
	if j > 0 {
		l.stored = mergeSpans(append(l.stored, span{l.live[0].seq, l.live[j-1].seq}), l.floor)
		clear(l.live[:j])
		l.live = l.live[j:]
	}
	f := l.cursor
	if len(l.q) > 0 {
		f = l.q[0].seq - 1
	}
	if f > l.floor {
		l.floor = f
		return true
	}
	return false
}

// settle waits until every message of the ended generation has its callback, bounded by the
// publish timeout (after which the client reports a timeout anyway).
func (l *lane) settle(ctx context.Context) {
	t := time.NewTimer(l.u.cfg.PublishTimeout + time.Second)
	defer t.Stop()
	for {
		l.mu.Lock()
		n := l.outstanding
		l.mu.Unlock()
		if n <= 0 {
			return
		}
		select {
		case <-l.settled:
		case <-t.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// rewindLocked drops the queue and continues from the floor with a new generation, remembering
// what above the floor JetStream has already stored.
func (l *lane) rewindLocked() uint64 {
	l.updateFloorLocked()
	spans := l.stored
	for _, part := range [][]*pending{l.q, l.live} {
		for _, p := range part {
			if p.state == unsent && p.buf != nil {
				bufPool.Put(p.buf)
				p.buf = nil
			}
			if p.state == acked && p.seq > l.floor {
				spans = append(spans, span{p.seq, p.seq})
			}
		}
	}
	l.stored = mergeSpans(spans, l.floor)
	l.q, l.live, l.split = nil, nil, false
	l.cursor, l.outstanding = l.floor, 0
	return l.floor
}

// span is an inclusive range of sequences.
type span struct{ lo, hi uint64 }

// mergeSpans sorts spans, merges overlapping and adjacent ones and drops what is at or below floor.
func mergeSpans(spans []span, floor uint64) []span {
	slices.SortFunc(spans, func(a, b span) int { return cmp.Compare(a.lo, b.lo) })
	out := spans[:0]
	for _, s := range spans {
		if s.hi <= floor {
			continue
		}
		s.lo = max(s.lo, floor+1)
		if n := len(out); n > 0 && s.lo <= out[n-1].hi+1 {
			out[n-1].hi = max(out[n-1].hi, s.hi)
			continue
		}
		out = append(out, s)
	}
	return slices.Clip(out)
}

// storedLocked reports whether JetStream acknowledged seq before the last rewind.
func (l *lane) storedLocked(seq uint64) bool {
	i, _ := slices.BinarySearchFunc(l.stored, seq, func(s span, seq uint64) int {
		if s.hi < seq {
			return -1
		}
		if s.lo > seq {
			return 1
		}
		return 0
	})
	return i < len(l.stored) && l.stored[i].lo <= seq && seq <= l.stored[i].hi
}

// ackEvery rate-limits buffer acks: each is a write (deletes) in the buffer's store, and at live
// rates every PubAck would move the floor. A crash re-sends at most this much more (deduplicated).
const ackEvery = 10 * time.Millisecond

// acker acknowledges the buffer as the floor rises; it runs apart from the PubAck callbacks so
// that buffer I/O never delays them.
func (l *lane) acker(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.ackWake:
		}
		l.flushAck()
		if !sleepCtx(ctx, ackEvery) {
			return
		}
	}
}

func (l *lane) flushAck() {
	l.mu.Lock()
	f, done := l.floor, l.sourceAcked
	l.mu.Unlock()
	if f <= done {
		return
	}
	if err := l.u.src.Ack(l.stream, f); err != nil {
		l.u.log.Error("buffer ack failed", "stream", l.stream.String(), "up_to", f, "err", l.u.setErr(err))
		return
	}
	l.mu.Lock()
	l.sourceAcked = max(l.sourceAcked, f)
	l.mu.Unlock()
}

// collisionShown is how long an id collision keeps /readyz failing after the last one.
const collisionShown = 10 * time.Minute

// collision reports a PubAck that called a message a duplicate although this buffer incarnation
// never published its id before: JetStream holds another message under that id and dropped this
// one. With incarnations that takes a second agent configured with the same id and incarnation (a
// copied buffer directory) or someone else publishing under our ids. The record is acked (a
// re-send would be dropped the same way), counted, logged as an ERROR and shown in /readyz.
func (l *lane) collision(p *pending) {
	u := l.u
	u.m.collisions.Add(1)
	why := fmt.Sprintf("JetStream dropped message %s as a duplicate, but this buffer never sent it: "+
		"another publisher uses this agent's ids (a copied buffer directory or a duplicate agent id?)", l.msgID(p.seq))
	u.log.Error("message id collision: new data dropped by JetStream", "stream", l.stream.String(),
		"seq", p.seq, "records", p.records, "msg_id", l.msgID(p.seq), "incarnation", u.id.Incarnation)
	u.mu.Lock()
	u.collideWhy, u.collideAt = why, time.Now()
	u.mu.Unlock()
}
