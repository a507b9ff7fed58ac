// Package audit is the decision log: every decision and rule change on one JetStream stream,
// decision records with a TTL, rule changes kept, the last change being the rules state.
package audit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/internal/kvretry"
)

var (
	// ErrFenced: a rules change landed after the one the decision was evaluated under; the
	// record was not stored, and the decider must evaluate again under the new rules.
	ErrFenced = errors.New("audit: a rules change landed since the decision's rules (fenced)")
	// ErrConflict: another rules change landed since the one this change was computed from.
	ErrConflict = errors.New("audit: the rules changed concurrently")
)

// Stats are the log's counters (the hub exports them).
type Stats struct {
	Published  atomic.Uint64 // records stored
	Duplicates atomic.Uint64 // records already stored (a re-publish)
	Fenced     atomic.Uint64 // records refused by the fence
	Changes    atomic.Uint64 // rules changes stored
	Conflicts  atomic.Uint64 // rules changes refused as concurrent
	Malformed  atomic.Uint64 // messages on the stream that do not decode (skipped)
	Busy       atomic.Uint64 // publishes repeated because a replicated stream could not check yet (10164)
	Retries    atomic.Uint64 // publishes repeated because no answer came (leader election, slow replica)
	Refollows  atomic.Uint64 // rules followers that made a new consumer (its server went away, or it lagged)
}

// Log is the decision log. Safe for concurrent use; several replicas open the same stream.
type Log struct {
	cfg    Config
	js     jetstream.JetStream
	stream jetstream.Stream
	log    *slog.Logger
	Stats  Stats
}

// Open checks cfg and creates or updates the stream.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config, log *slog.Logger) (*Log, error) {
	cfg.Defaults()
	if err := cfg.err(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// No MaxAge: rule changes must outlive any retention (the last one is the state); decision
	// records carry their own TTL. Direct gets let any replica serve History and Recent.
	st, err := kvretry.Stream(ctx, js, jetstream.StreamConfig{
		Name: cfg.Stream, Subjects: cfg.subjects(), Storage: jetstream.FileStorage,
		Replicas: max(cfg.Replicas, 1), Duplicates: cfg.DuplicateWindow, AllowMsgTTL: true, AllowDirect: true,
		Description: "gemba-hub: decision records (TTL'd) and rules changes (kept; the last is the rules state)",
	})
	if err != nil {
		return nil, fmt.Errorf("audit stream %s (subjects %v): %w", cfg.Stream, cfg.subjects(), err)
	}
	return &Log{cfg: cfg, js: js, stream: st, log: log.With("stream", cfg.Stream)}, nil
}

// Bind opens the decision log's stream as it is, for the CLI (why, rules history, and the rules
// changes: activate, rollback, shadow, canary): it never creates the stream nor changes its
// settings, which may be a newer release's. A stream that is not there is an error naming it.
func Bind(ctx context.Context, js jetstream.JetStream, cfg Config, log *slog.Logger) (*Log, error) {
	cfg.Defaults()
	if err := cfg.err(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var st jetstream.Stream
	err := kvretry.Attempts(ctx, kvretry.SetupAttempt, func(ctx context.Context) (err error) {
		st, err = js.Stream(ctx, cfg.Stream)
		return err
	})
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("audit stream %s: not found on these servers: the hub has not run with decisions (a guard "+
			"section) against them yet, or audit.stream names another stream, or it was deleted (see gemba-hub run --recreate): %w", cfg.Stream, err)
	}
	if err != nil {
		return nil, fmt.Errorf("audit stream %s: %w", cfg.Stream, err)
	}
	return &Log{cfg: cfg, js: js, stream: st, log: log.With("stream", cfg.Stream)}, nil
}

// Config returns the config as it runs (defaults filled).
func (l *Log) Config() Config { return l.cfg }

func apiCode(err error) jetstream.ErrorCode {
	var je jetstream.JetStreamError
	if !errors.As(err, &je) || je.APIError() == nil {
		return 0
	}
	return je.APIError().ErrorCode
}

// wrongLast reports the server's "wrong last sequence": the subject's last sequence is not the
// one expected (10071, on one server and on a replicated stream alike).
func wrongLast(err error) bool { return apiCode(err) == jetstream.JSErrCodeStreamWrongLastSequence }

// transientFor is how long a publish that got no answer is retried.
const transientFor = 15 * time.Second

// transient reports whether a publish got no answer, so that the same message may be sent again —
// also 10158 ("duplicate message id is in process", 409): an earlier copy of this very record (a
// retry after a lost answer, during an election) is still being proposed, and its outcome is known
// only by sending again once it is decided (then the duplicate window answers).
func transient(err error) bool {
	return errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders) ||
		apiCode(err) == jsErrDuplicateInProcess
}

// jsErrDuplicateInProcess is nats-server's JSStreamDuplicateMessageConflict (nats.go has no constant).
const jsErrDuplicateInProcess = 10158

// publishCAS publishes with an expected-last-subject-sequence check, again while the server cannot
// check it yet. A replicated stream refuses the check with 10164 ("wrong last sequence", constant)
// while another message checking or writing the same subject is proposed and not yet applied:
// nothing is decided then (nothing stored, the sequence may well be right), so the publish is
// repeated after a short pause. Every fenced record checks the rules subject, so on R3 concurrent
// records take turns here; a single server checks under its lock and never answers 10164.
func (l *Log) publishCAS(ctx context.Context, pub func() (*jetstream.PubAck, error)) (*jetstream.PubAck, error) {
	wait := 500 * time.Microsecond
	giveUp := time.Now().Add(transientFor)
	for {
		ack, err := pub()
		if transient(err) && time.Now().Before(giveUp) {
			// No answer (a leader election, a slow replica): the message id makes the retry of a
			// message that was stored after all a duplicate, not a second record.
			l.Stats.Retries.Add(1)
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("%w (after: %v)", ctx.Err(), err)
			case <-time.After(100*time.Millisecond + rand.N(100*time.Millisecond)):
			}
			continue
		}
		if apiCode(err) != jetstream.JSErrCodeStreamWrongLastSequenceConstant {
			return ack, err
		}
		l.Stats.Busy.Add(1)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (the server was still checking another message against the same subject)", ctx.Err())
		case <-time.After(wait/2 + rand.N(wait)):
		}
		wait = min(wait*2, 20*time.Millisecond)
	}
}

// Publish stores a decision record fenced at the rules change fence (its stream sequence; 0
// when no change existed): if another change landed since, nothing is stored and the error is
// ErrFenced. A record already stored (same decision id and event, within the duplicate window)
// is not stored again; its sequence is returned.
func (l *Log) Publish(ctx context.Context, rec Record, fence uint64) (uint64, error) {
	return l.publish(ctx, rec, &fence)
}

// Append stores a later event of a decision already recorded (approved, rejected, expired,
// released) without the fence: it answers a decision made under the rules of its decided
// record, which a rules change since does not undo. A decided record must go through Publish.
func (l *Log) Append(ctx context.Context, rec Record) (uint64, error) {
	if rec.Event == EventDecided {
		return 0, fmt.Errorf("audit record %s: a decided record is published with its fence (Publish), not appended", rec.DecisionID)
	}
	return l.publish(ctx, rec, nil)
}

func (l *Log) publish(ctx context.Context, rec Record, fence *uint64) (uint64, error) {
	if err := rec.check(); err != nil {
		return 0, err
	}
	rec.Seq = 0
	data, err := json.Marshal(rec)
	if err != nil {
		return 0, fmt.Errorf("audit record %s %s: %w", rec.DecisionID, rec.Event, err)
	}
	m := &nats.Msg{Subject: l.cfg.RecordSubject(rec.DecisionID), Data: data, Header: nats.Header{}}
	if fence != nil {
		// The fence: the server compares the last sequence of the rules subject, not the record's.
		m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(*fence, 10))
		m.Header.Set(jetstream.ExpectedLastSubjSeqSubjHeader, l.cfg.RulesSubject())
	}
	msgID := rec.DecisionID + ":" + rec.key()
	opts := []jetstream.PublishOpt{jetstream.WithMsgID(msgID), jetstream.WithMsgTTL(l.cfg.Retention)}
	ack, err := l.publishCAS(ctx, func() (*jetstream.PubAck, error) { return l.js.PublishMsg(ctx, m, opts...) })
	if fence != nil && wrongLast(err) {
		// One server checks the fence before the message id: a record stored by an earlier send
		// (its answer lost) is refused as fenced once a change lands, though it is on the log. A
		// replicated stream answers it as a duplicate; so does this.
		if seq, ok := l.storedAs(ctx, m.Subject, 1, msgID, false); ok {
			ack, err = &jetstream.PubAck{Sequence: seq, Duplicate: true}, nil
		}
	}
	switch {
	case fence != nil && wrongLast(err):
		l.Stats.Fenced.Add(1)
		return 0, fmt.Errorf("audit record %s %s at rules change %d: %w", rec.DecisionID, rec.Event, *fence, ErrFenced)
	case err != nil:
		return 0, fmt.Errorf("audit record %s %s: %w", rec.DecisionID, rec.Event, err)
	case ack.Duplicate:
		l.Stats.Duplicates.Add(1)
	default:
		l.Stats.Published.Add(1)
	}
	return ack.Sequence, nil
}

// Current returns the rules state: the last change (Seq 0 when there is none yet). It is read
// from the stream leader, not a direct get that a lagging replica could answer. A message after it
// on the rules subject that is not a change (garbage, an op this hub does not know) is skipped,
// counted and logged: the state is the last change that decodes, and Seq is that message's, so
// that a new change computed from Current lands (nothing else could replace it).
func (l *Log) Current(ctx context.Context) (Change, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	seq, data, err := l.leaderGet(ctx, map[string]any{"last_by_subj": l.cfg.RulesSubject()})
	if err != nil || seq == 0 {
		return Change{}, err
	}
	c, err := decodeChange(data, seq)
	if err == nil {
		return c, nil
	}
	l.malformed(l.cfg.RulesSubject(), seq, err)
	last := seq
	c = Change{}
	for next := uint64(1); next < last; {
		s, data, err := l.leaderGet(ctx, map[string]any{"seq": next, "next_by_subj": l.cfg.RulesSubject()})
		if err != nil {
			return Change{}, err
		}
		if s == 0 || s >= last {
			break
		}
		if d, err := decodeChange(data, s); err == nil {
			c = d
		}
		next = s + 1
	}
	c.Seq = last
	return c, nil
}

// leaderGet reads one message of the stream from its leader; seq 0: not found.
func (l *Log) leaderGet(ctx context.Context, req map[string]any) (uint64, []byte, error) {
	body, _ := json.Marshal(req)
	resp, err := l.js.Conn().RequestWithContext(ctx, l.apiPrefix()+"STREAM.MSG.GET."+l.cfg.Stream, body)
	if err != nil {
		return 0, nil, fmt.Errorf("audit: read the rules state: %w", err)
	}
	var r struct {
		Message *struct {
			Seq  uint64 `json:"seq"`
			Data []byte `json:"data"`
		} `json:"message"`
		Error *jetstream.APIError `json:"error"`
	}
	if err := json.Unmarshal(resp.Data, &r); err != nil {
		return 0, nil, fmt.Errorf("audit: read the rules state: %w", err)
	}
	if r.Error != nil {
		if r.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound {
			return 0, nil, nil
		}
		return 0, nil, fmt.Errorf("audit: read the rules state: %w", r.Error)
	}
	if r.Message == nil || r.Message.Seq == 0 {
		return 0, nil, fmt.Errorf("audit: read the rules state: empty answer")
	}
	return r.Message.Seq, r.Message.Data, nil
}

func (l *Log) apiPrefix() string {
	o := l.js.Options()
	switch {
	case o.APIPrefix != "":
		p := o.APIPrefix
		if p[len(p)-1] != '.' {
			p += "."
		}
		return p
	case o.Domain != "":
		return "$JS." + o.Domain + ".API."
	}
	return jetstream.DefaultAPIPrefix
}

func decodeChange(data []byte, seq uint64) (Change, error) {
	var c Change
	if err := json.Unmarshal(data, &c); err != nil {
		return Change{}, err
	}
	if err := c.check(); err != nil {
		return Change{}, err
	}
	c.Seq = seq
	return c, nil
}

// RecordChange stores c as the new rules state if the last change is still expect (0: none
// yet); otherwise it stores nothing and returns ErrConflict. Returns c's sequence.
func (l *Log) RecordChange(ctx context.Context, c Change, expect uint64) (uint64, error) {
	if c.At.IsZero() {
		c.At = time.Now().UTC()
	}
	if err := c.check(); err != nil {
		return 0, err
	}
	data, err := json.Marshal(c)
	if err != nil {
		return 0, fmt.Errorf("rules change %s: %w", c.Op, err)
	}
	// The id covers the content and what it was computed from: a retry of the same change after a
	// lost ack is a duplicate (its sequence comes back), a different change is judged by expect.
	h := sha256.Sum256(append(strconv.AppendUint(nil, expect, 10), data...))
	msgID := "rules:" + hex.EncodeToString(h[:16])
	ack, err := l.publishCAS(ctx, func() (*jetstream.PubAck, error) {
		return l.js.Publish(ctx, l.cfg.RulesSubject(), data,
			jetstream.WithExpectLastSequencePerSubject(expect), jetstream.WithMsgID(msgID))
	})
	if wrongLast(err) {
		// One server checks the expected sequence before the message id: this change stored by an
		// earlier send is then the change right after expect (it was checked against expect).
		if seq, ok := l.storedAs(ctx, l.cfg.RulesSubject(), expect+1, msgID, true); ok {
			ack, err = &jetstream.PubAck{Sequence: seq, Duplicate: true}, nil
		}
	}
	switch {
	case wrongLast(err):
		l.Stats.Conflicts.Add(1)
		return 0, fmt.Errorf("rules change %s computed from change %d: %w", c.Op, expect, ErrConflict)
	case err != nil:
		return 0, fmt.Errorf("rules change %s: %w", c.Op, err)
	}
	if !ack.Duplicate {
		l.Stats.Changes.Add(1)
	}
	return ack.Sequence, nil
}

// storedAs finds the message of subject from sequence from whose Nats-Msg-Id is msgID (only the
// first message when first): a send whose answer was lost. Any read error means not found.
func (l *Log) storedAs(ctx context.Context, subject string, from uint64, msgID string, first bool) (uint64, bool) {
	for seq := from; ; {
		m, err := l.stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if err != nil {
			return 0, false
		}
		if m.Header.Get(jetstream.MsgIDHeader) == msgID {
			return m.Sequence, true
		}
		if first {
			return 0, false
		}
		seq = m.Sequence + 1
	}
}

// Changes returns every rules change, oldest first.
func (l *Log) Changes(ctx context.Context) ([]Change, error) {
	var out []Change
	err := l.scanSubject(ctx, l.cfg.RulesSubject(), func(m *jetstream.RawStreamMsg) {
		c, err := decodeChange(m.Data, m.Sequence)
		if err != nil {
			l.malformed(m.Subject, m.Sequence, err)
			return
		}
		out = append(out, c)
	})
	return out, err
}

func (l *Log) malformed(subject string, seq uint64, err error) {
	l.Stats.Malformed.Add(1)
	l.log.Error("malformed message on the decision log, skipped", "subject", subject, "seq", seq, "err", err)
}

// scanSubject hands every message of subject in order, reading by "next message on subject from
// sequence" gets: one round trip per message, bounded by the subject's messages.
func (l *Log) scanSubject(ctx context.Context, subject string, fn func(*jetstream.RawStreamMsg)) error {
	for seq := uint64(1); ; {
		m, err := l.stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("audit: read %s from seq %d: %w", subject, seq, err)
		}
		fn(m)
		seq = m.Sequence + 1
	}
}
