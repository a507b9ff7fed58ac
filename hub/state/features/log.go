package features

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub/state/kvkey"
	"github.com/gemba-io/gemba/internal/jsfollow"
	"github.com/gemba-io/gemba/internal/kvretry"
)

// The feature log is one stream per store (named after Config.Bucket) whose messages each carry
// values, one JSON value per line: a flush's changed values ("d" messages) or a part of a snapshot
// of every value ("s" messages). The state is the fold of every message in the stream with one
// rule — per key, the later window wins (ties broken by the agents' stream sequence, then the
// signal) — which is commutative and idempotent: replicas append without compare-and-set, read
// each other's messages in any order and reach the same state, and folding a message twice changes
// nothing. A flush is one message for the whole batch (a KV bucket took one write per key).
//
// Compaction keeps the stream bounded: a replica writes a snapshot of its whole state, covering
// every message it has folded up to sequence S, then purges the messages up to S. Whatever the
// interleaving of replicas, the messages that remain hold every value: those up to S are in the
// snapshot (written after S), and a replica behind the purge point reads the snapshot's parts next.

// writerHeader names the Store instance that wrote a log message, so that its follower skips it.
const writerHeader = "Gemba-Writer"

const (
	// maxMessage bounds one log message (JetStream's default max payload is 1 MiB).
	maxMessage = 768 << 10
	// followBytes bounds what a replica's follower asks for per pull: room for many messages, well
	// under the connection's pending limit (64 MiB).
	followBytes = 16 << 20
	// compactAbove: the stream is compacted when it holds this many bytes beyond the last snapshot's
	// own size times compactRatio.
	compactAbove = 32 << 20
	compactRatio = 4
	// compactEvery is how often a replica considers compacting (with jitter).
	compactEvery = time.Minute
)

// later reports whether a value at window end end, from agents' stream sequence seq and signal sig,
// replaces cur: a later window, or at the same window end the later message (two sources of one
// key closing a window at the same instant), so every replica keeps the same one.
func later(end time.Time, seq uint64, sig string, cur *Value) bool {
	if c := end.Compare(cur.WindowEnd); c != 0 {
		return c > 0
	}
	if seq != cur.Lineage.StreamSeq {
		return seq > cur.Lineage.StreamSeq
	}
	return sig > cur.Lineage.Signal
}

// Open creates or binds the feature log, folds it into memory, and follows it until Close.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config, res Resolver, log *slog.Logger) (*Store, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	subj := "gemba_features." + cfg.Bucket + "."
	st, err := kvretry.Stream(ctx, js, jetstream.StreamConfig{
		Name: cfg.Bucket, Subjects: []string{subj + ">"}, Replicas: max(cfg.Replicas, 1),
		Retention: jetstream.LimitsPolicy, Discard: jetstream.DiscardOld, Storage: jetstream.FileStorage,
		MaxMsgSize: maxMessage + 64<<10, AllowDirect: true,
		Description: "gemba-hub: the feature store's log (latest value of each feature per key, with lineage)",
	})
	if err != nil {
		return nil, fmt.Errorf("features log %s: %w", cfg.Bucket, err)
	}
	s := newStore(cfg, res, log)
	s.js, s.stream, s.subj, s.writer = js, st, subj, rand.Text()
	if err := s.follow(ctx); err != nil {
		return nil, fmt.Errorf("features log %s: %w", cfg.Bucket, err)
	}
	return s, nil
}

// newStore is a store's in-memory side, not yet bound to its log.
func newStore(cfg Config, res Resolver, log *slog.Logger) *Store {
	maxFuture := cfg.MaxFuture
	if maxFuture <= 0 {
		maxFuture = DefaultMaxFuture
	}
	return &Store{cfg: cfg, defVer: cfg.Definitions.Version(), res: res, log: log, now: time.Now,
		vals: map[string]*Value{}, dirty: map[string]struct{}{}, warn: map[string]bool{}, route: map[routeKey][]route{},
		warnFuture: map[string]bool{}, maxFuture: maxFuture}
}

// Close stops following the log and compacting. It does not flush: the caller flushes before
// acking input.
func (s *Store) Close() {
	if s.closing.Swap(true) || s.stop == nil {
		return
	}
	s.stop()
	s.wg.Wait()
}

// Notify sets fn to be called with the name and key of every new value: this replica's as its
// ingest applies it (a decider need not wait for the flush: the value comes from the agents'
// stream, and a replica that dies before flushing leaves the message to be applied again), other
// replicas' as their log messages arrive. It is what a decider re-evaluates on. fn must not block;
// it runs on the ingest or the following goroutine.
func (s *Store) Notify(fn func(name, key string)) { s.notify.Store(&fn) }

func (s *Store) notifyAll(keys []*Value) {
	if fn := s.notify.Load(); fn != nil {
		for _, v := range keys {
			(*fn)(v.Name, v.Key)
		}
	}
}

// follow folds the whole log (returning once the messages that were there at the start are folded,
// so a new replica starts complete), then every new message until Close. It follows through the
// loss of its consumer's node (see jsfollow: an ordered consumer alone noticed it after 10 s, and the
// replica decided on values that old).
func (s *Store) follow(ctx context.Context) error {
	var lr LogReader // the callback runs on one goroutine at a time; fold copies what it keeps
	f, err := jsfollow.Follow(ctx, jsfollow.Config{
		Stream: s.stream, Subject: s.subj + ">", What: "feature log " + s.cfg.Bucket, Log: s.log, Refollows: &s.Stats.Refollows,
		// By count (500 of up to 768 KiB) a pull outgrows the client's pending limit: "slow consumer".
		Pull: []jetstream.PullConsumeOpt{jetstream.PullMaxBytes(followBytes)},
	}, func(m jetstream.Msg, meta *jetstream.MsgMetadata) {
		if m.Headers().Get(writerHeader) == s.writer {
			// Our own write since Open: its values are in memory already (their revision is set
			// from the ack). Decoding them again would double the cost of every record.
			s.advance(meta.Sequence.Stream)
		} else if lines, err := lr.Lines(m.Headers(), m.Data()); err != nil {
			s.Stats.Unreadable.Add(1)
			s.log.Error("feature log message unreadable, skipped", "stream", s.cfg.Bucket, "subject", m.Subject(), "seq", meta.Sequence.Stream, "err", err)
			if enc := m.Headers().Get(encodingHeader); enc != "" && enc != encodingS2 {
				s.mu.Lock()
				if s.unknownFrom == 0 {
					s.unknownFrom = meta.Sequence.Stream
				}
				s.mu.Unlock()
			}
			s.advance(meta.Sequence.Stream)
		} else {
			s.fold(m.Subject(), lines, meta.Sequence.Stream)
		}
	})
	if err != nil {
		return err
	}
	select {
	case <-f.Loaded():
	case <-ctx.Done():
		f.Stop()
		return ctx.Err()
	}
	fctx, cancel := context.WithCancel(context.Background())
	s.stop = func() { cancel(); f.Stop() }
	s.wg.Go(func() { s.compactLoop(fctx) })
	return nil
}

// fold merges one log message into memory and notifies the keys it changed.
func (s *Store) fold(subject string, data []byte, seq uint64) {
	// Decoded before taking the lock: Apply (the ingest) waits for it, not for the decoding.
	vs := make([]*Value, 0, bytes.Count(data, []byte{'\n'})+1)
	for line := range bytes.SplitSeq(data, []byte{'\n'}) {
		if len(line) == 0 {
			continue
		}
		v := &Value{}
		if err := decodeValue(line, v); err != nil || v.Name == "" {
			s.Stats.Unreadable.Add(1)
			s.log.Error("feature log entry unreadable, skipped", "stream", s.cfg.Bucket, "subject", subject, "seq", seq, "err", err)
			continue
		}
		v.Revision = seq
		vs = append(vs, v)
	}
	var changed []*Value
	s.mu.Lock()
	for _, v := range vs {
		k := kvkey.Join(v.Name, v.Key)
		cur := s.vals[k]
		if cur != nil && !later(v.WindowEnd, v.Lineage.StreamSeq, v.Lineage.Signal, cur) {
			if cur.Revision == 0 && sameValue(cur, v) {
				cur.Revision = seq // our own write, back before its ack
			}
			continue
		}
		if _, dirty := s.dirty[k]; dirty && cur != nil {
			// A newer value of ours waits for the next flush; this one is newer still: ours is
			// dropped from the flush, the log already holds a later one.
			delete(s.dirty, k)
		}
		s.vals[k] = v
		changed = append(changed, v)
	}
	if seq > s.applied {
		s.applied = seq
	}
	s.mu.Unlock()
	s.notifyAll(changed)
}

// advance notes that the follower is past seq.
func (s *Store) advance(seq uint64) {
	s.mu.Lock()
	if seq > s.applied {
		s.applied = seq
	}
	s.mu.Unlock()
}

func sameValue(a, b *Value) bool {
	return a.WindowEnd.Equal(b.WindowEnd) && a.Lineage.StreamSeq == b.Lineage.StreamSeq && a.Lineage.Signal == b.Lineage.Signal
}

// Flush writes every changed value to the log — one message per batch, split only past
// maxMessage — and returns when all are stored. On error the values stay dirty.
func (s *Store) Flush(ctx context.Context) error {
	s.mu.Lock()
	vs := make([]*Value, 0, len(s.dirty))
	for k := range s.dirty {
		vs = append(vs, s.vals[k])
	}
	clear(s.dirty)
	s.mu.Unlock()
	if len(vs) == 0 {
		return nil
	}
	err := s.write(ctx, s.subj+"d", vs, func(part []*Value, seq uint64) {
		s.mu.Lock()
		for _, v := range part {
			if v.Revision == 0 || v.Revision > seq {
				v.Revision = seq
			}
		}
		s.mu.Unlock()
		s.Stats.Writes.Add(uint64(len(part)))
	})
	if err != nil {
		s.mu.Lock()
		for _, v := range vs {
			k := kvkey.Join(v.Name, v.Key)
			if s.vals[k] == v && v.Revision == 0 {
				s.dirty[k] = struct{}{}
			}
		}
		s.mu.Unlock()
	}
	return err
}

// lineBufs keeps the lines of a flush for the next one once its message holds them compressed.
var lineBufs = sync.Pool{New: func() any { return new([]byte) }}

// write publishes values to subject in messages of at most maxMessage bytes, all at once, and
// calls stored for each message's values once acknowledged. The values are encoded as they are:
// the caller is the only writer of a value not yet stored.
func (s *Store) write(ctx context.Context, subject string, vs []*Value, stored func([]*Value, uint64)) error {
	type part struct {
		vals []*Value
		fut  jetstream.PubAckFuture
	}
	var parts []part
	var tc timeCache
	bp := lineBufs.Get().(*[]byte)
	buf := (*bp)[:0] // the previous write's lines, when its message held a compressed copy
	defer func() {
		if buf != nil && cap(buf) <= 2*maxMessage {
			*bp = buf[:0]
			lineBufs.Put(bp)
		}
	}()
	var cur []*Value
	var firstErr error
	send := func() {
		if len(cur) == 0 {
			return
		}
		msg := nats.NewMsg(subject)
		free := pack(msg, buf)
		msg.Header.Set(writerHeader, s.writer)
		fut, err := s.js.PublishMsgAsync(msg)
		if err != nil && firstErr == nil {
			firstErr = fmt.Errorf("features: write %d values: %w", len(cur), err)
		}
		parts = append(parts, part{cur, fut})
		if free {
			buf = buf[:0] // the message holds its compressed copy: the next one reuses the lines
		} else {
			buf = nil
		}
		cur = nil
	}
	// room gives buf a backing array when send handed the last one to its message.
	room := func() {
		if cap(buf) == 0 {
			buf = make([]byte, 0, min(maxMessage, 384*(len(vs)-len(cur)+1)))
		}
	}
	for _, v := range vs {
		room()
		// Encoded in place (most values), or by encoding/json when the fast path declines.
		n := len(buf)
		var err error
		line, ok := appendValue(buf, v, &tc)
		if !ok {
			var j []byte
			if j, err = json.Marshal(v); err == nil {
				line = append(buf[:n], j...)
			}
		}
		if err == nil && len(line)-n >= maxMessage {
			err = fmt.Errorf("%d bytes encoded, more than a log message holds (%d)", len(line)-n, maxMessage)
		}
		if err != nil {
			// Retrying cannot help: the value is dropped, said and counted.
			buf = line[:n]
			s.Stats.Dropped.Add(1)
			s.log.Error("feature value not storable, dropped", "feature", v.Name, "key", v.Key, "signal", v.Lineage.Signal, "err", err)
			continue
		}
		if len(line)+1 > maxMessage && n > 0 {
			// The value does not fit this message: send what came before it, start the next with it.
			enc := slices.Clone(line[n:])
			buf = line[:n]
			send()
			room()
			buf = append(buf, enc...)
			line = buf
		}
		buf = append(line, '\n')
		cur = append(cur, v)
	}
	send()
	for _, p := range parts {
		if p.fut == nil {
			continue
		}
		select {
		case ack := <-p.fut.Ok():
			s.Stats.Messages.Add(1)
			stored(p.vals, ack.Sequence)
		case err := <-p.fut.Err():
			if firstErr == nil {
				firstErr = fmt.Errorf("features: write %d values: %w", len(p.vals), err)
			}
		case <-ctx.Done():
			if firstErr == nil {
				firstErr = ctx.Err()
			}
		}
	}
	return firstErr
}

// compactLoop compacts the log when it has grown well past its state, until ctx ends. Any replica
// may; two at once are harmless.
func (s *Store) compactLoop(ctx context.Context) {
	var lastSnap uint64 // bytes of the last snapshot written here
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(compactEvery/2 + mrand.N(compactEvery)):
		}
		info, err := s.stream.Info(ctx)
		if err != nil {
			continue
		}
		if info.State.Bytes < compactAbove+compactRatio*lastSnap {
			continue
		}
		n, err := s.Compact(ctx)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("feature log compaction failed, retried later", "stream", s.cfg.Bucket, "err", err)
			}
			continue
		}
		lastSnap = n
	}
}

// Compact writes a snapshot of every value this replica holds, covering the log up to the last
// message it folded, then purges the messages up to there. It returns the snapshot's size in bytes.
// A message in an encoding this version does not know is never purged (nor anything after it):
// its values are not in the snapshot. A replica that reads it may purge it.
func (s *Store) Compact(ctx context.Context) (uint64, error) {
	s.mu.RLock()
	covers := s.applied
	if s.unknownFrom > 0 {
		covers = min(covers, s.unknownFrom-1)
	}
	if covers <= s.purged {
		covers = 0 // nothing more to purge: another snapshot would only grow the log
	}
	vs := make([]*Value, 0, len(s.vals))
	for _, v := range s.vals {
		c := *v // the follower replaces values, Apply may overwrite an unflushed one in place
		vs = append(vs, &c)
	}
	s.mu.RUnlock()
	if covers == 0 {
		return 0, nil
	}
	var size uint64
	for _, v := range vs {
		size += uint64(200 + len(v.Name) + len(v.Key))
	}
	if err := s.write(ctx, s.subj+"s", vs, func([]*Value, uint64) {}); err != nil {
		return 0, fmt.Errorf("snapshot: %w", err)
	}
	// Everything up to covers is in the snapshot just written (after covers).
	if err := s.stream.Purge(ctx, jetstream.WithPurgeSequence(covers+1)); err != nil {
		return 0, fmt.Errorf("purge up to %d: %w", covers, err)
	}
	s.mu.Lock()
	s.purged = max(s.purged, covers)
	s.mu.Unlock()
	s.Stats.Snapshots.Add(1)
	s.log.Info("feature log compacted", "stream", s.cfg.Bucket, "values", len(vs), "covers", covers)
	return size, nil
}
