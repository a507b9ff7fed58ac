// Package dedup remembers message identities beyond JetStream's duplicate window, in a KV bucket
// with a TTL that every hub replica shares: the first stream message to claim an identity owns it.
//
// A marker holds the claiming stream sequence while the message is being applied ("12") and is
// marked done once its state is stored ("d12"). A claim by the same stream message is fresh while
// the marker is pending (a redelivery after a crash: the state absorbs it) and a duplicate once it
// is done, so a consumer that re-reads the stream (deleted and re-created) applies nothing twice.
//
// A claim may carry a pin (a header of its pending marker): what the first delivery decided about
// applying the message (where the agents' ingest placed its production), which a redelivery reads
// back and applies the same way.
package dedup

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/internal/kvretry"
)

// Config names the bucket and how long an identity is remembered.
type Config struct {
	Bucket   string
	TTL      time.Duration // must cover the longest a copy can still arrive (the agents' buffer.max_age + margin)
	Replicas int
}

// Verdict is what a claim found.
type Verdict uint8

const (
	// Fresh: the identity was unknown, or is claimed by this very stream message (a redelivery, which
	// the state it updates must absorb idempotently).
	Fresh Verdict = iota
	// Duplicate: another stream message already claimed the identity; drop this one.
	Duplicate
)

func (v Verdict) String() string {
	if v == Duplicate {
		return "duplicate"
	}
	return "fresh"
}

// Claim asks for one identity on behalf of the stream message at StreamSeq.
type Claim struct {
	ID        string
	StreamSeq uint64
}

// Markers is the claim table. Safe for concurrent use.
type Markers struct {
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	stream jetstream.Stream // the bucket's stream: a pin is read with its marker (a KV entry has no headers)
	prefix string           // "$KV.<bucket>."
}

// Open creates or binds the bucket.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config) (*Markers, error) {
	if cfg.TTL <= 0 {
		return nil, fmt.Errorf("dedup bucket %s: ttl must be positive", cfg.Bucket)
	}
	kv, err := kvretry.KeyValue(ctx, js, jetstream.KeyValueConfig{
		Bucket: cfg.Bucket, TTL: cfg.TTL, Replicas: max(cfg.Replicas, 1), History: 1,
		Description: "gemba-hub: message identities already applied (agent batches, commerce events)",
	})
	if err != nil {
		return nil, fmt.Errorf("dedup bucket %s: %w", cfg.Bucket, err)
	}
	st, err := js.Stream(ctx, "KV_"+cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("dedup bucket %s: %w", cfg.Bucket, err)
	}
	return &Markers{js: js, kv: kv, stream: st, prefix: "$KV." + cfg.Bucket + "."}, nil
}

// Key is the bucket key of an identity: identities hold characters KV keys refuse (':' and others)
// and can be long, so they are hashed (128 bits of SHA-256).
func Key(id string) string {
	h := sha256.Sum256([]byte(id))
	return hex.EncodeToString(h[:16])
}

// ClaimAll claims every identity of a batch in one round trip (asynchronous creates), returning a
// verdict per claim in order. A claim that could not be decided (timeout, lost connection) is an
// error for the whole call: the caller leaves the batch unacknowledged and it is redelivered.
func (m *Markers) ClaimAll(ctx context.Context, claims []Claim) ([]Verdict, error) {
	v, _, err := m.ClaimPinned(ctx, claims, nil)
	return v, err
}

// ClaimPinned is ClaimAll that also pins what the caller decided about each message when it first
// applies it (pins[i] for claims[i]; nil: nothing to pin), stored with the claim in the same create:
// recorded[i] is the pin of a Fresh claim given one — the caller's own on a first claim, the one the
// first delivery stored on a redelivery. A redelivery thus applies the message as its first delivery
// did, whatever changed meanwhile (the knowledge graph placing production at another site). The pin
// is a header of the marker (its value stays the stream sequence, as a replica of an earlier release
// reads it), and goes when the claim is marked done. A marker stored without a pin (by an earlier
// release) gives the caller's own.
func (m *Markers) ClaimPinned(ctx context.Context, claims []Claim, pins [][]byte) (verdicts []Verdict, recorded [][]byte, err error) {
	out := make([]Verdict, len(claims))
	futs := make([]jetstream.PubAckFuture, len(claims))
	if pins != nil {
		recorded = make([][]byte, len(claims))
	}
	var none []byte
	pin := func(i int) ([]byte, *[]byte) {
		if pins == nil {
			return nil, &none
		}
		return pins[i], &recorded[i]
	}
	// At most maxInFlight creates await their acks: a batch of up to 10,000 messages would otherwise
	// run into the connection's async publish limit (4,000 by default) and fail on a busy server.
	waited := 0
	for i, c := range claims {
		for ; waited <= i-maxInFlight; waited++ {
			p, rec := pin(waited)
			if err := m.await(ctx, claims[waited], p, futs[waited], &out[waited], rec); err != nil {
				return nil, nil, err
			}
		}
		p, _ := pin(i)
		f, err := m.js.PublishMsgAsync(m.claimMsg(c, p), jetstream.WithExpectLastSequencePerSubject(0))
		if err != nil {
			return nil, nil, fmt.Errorf("dedup claim %s: %w", c.ID, err)
		}
		futs[i] = f
	}
	for i := waited; i < len(claims); i++ {
		p, rec := pin(i)
		if err := m.await(ctx, claims[i], p, futs[i], &out[i], rec); err != nil {
			return nil, nil, err
		}
	}
	return out, recorded, nil
}

// pinHeader carries a claim's pin on its marker.
const pinHeader = "Gemba-Pin"

// claimMsg is the pending marker of c, with its pin.
func (m *Markers) claimMsg(c Claim, pin []byte) *nats.Msg {
	msg := nats.NewMsg(m.prefix + Key(c.ID))
	msg.Data = strconv.AppendUint(nil, c.StreamSeq, 10)
	if pin != nil {
		msg.Header.Set(pinHeader, string(pin))
	}
	return msg
}

// maxInFlight bounds the unacknowledged creates of one ClaimAll.
const maxInFlight = 256

// await decides one claim from its create's ack, and sets rec to its recorded pin when fresh.
func (m *Markers) await(ctx context.Context, c Claim, pin []byte, f jetstream.PubAckFuture, v *Verdict, rec *[]byte) error {
	select {
	case <-f.Ok():
		*v, *rec = Fresh, pin
	case err := <-f.Err():
		verdict, p, err := m.settle(ctx, c, pin, err)
		if err != nil {
			return err
		}
		*v = verdict
		if verdict == Fresh {
			*rec = p
		}
	case <-ctx.Done():
		return fmt.Errorf("dedup claim %s: %w", c.ID, ctx.Err())
	}
	return nil
}

// settle decides a claim whose create was refused: the identity exists, and it is a duplicate unless
// it was claimed by the same stream message, whose pin it then returns (pin if it has none).
func (m *Markers) settle(ctx context.Context, c Claim, pin []byte, cause error) (Verdict, []byte, error) {
	for range 10 {
		var apiErr *jetstream.APIError
		if !errors.Is(cause, jetstream.ErrKeyExists) && (!errors.As(cause, &apiErr) ||
			(apiErr.ErrorCode != jetstream.JSErrCodeStreamWrongLastSequence &&
				apiErr.ErrorCode != jetstream.JSErrCodeStreamWrongLastSequenceConstant)) {
			return 0, nil, fmt.Errorf("dedup claim %s: %w", c.ID, cause)
		}
		value, stored, err := m.read(ctx, c.ID, pin != nil)
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			// Expired between the create and the read: claim it again.
			if pin == nil {
				_, cause = m.kv.Create(ctx, Key(c.ID), strconv.AppendUint(nil, c.StreamSeq, 10))
			} else {
				_, cause = m.js.PublishMsg(ctx, m.claimMsg(c, pin), jetstream.WithExpectLastSequencePerSubject(0))
			}
			if cause == nil {
				return Fresh, pin, nil
			}
			continue
		}
		if err != nil {
			return 0, nil, fmt.Errorf("dedup claim %s: read: %w", c.ID, err)
		}
		if seq, err := strconv.ParseUint(string(value), 10, 64); err == nil && seq == c.StreamSeq {
			if stored == nil {
				stored = pin // claimed by a release without pins
			}
			return Fresh, stored, nil // pending, by this very message
		}
		return Duplicate, nil, nil // done, or claimed by another message
	}
	return 0, nil, fmt.Errorf("dedup claim %s: refused and gone again and again: %w", c.ID, cause)
}

// read returns an identity's marker and, when pinned is set, the pin stored with it (nil: none):
// both from one read of the bucket's stream, since a KV entry has no headers.
func (m *Markers) read(ctx context.Context, id string, pinned bool) (value, pin []byte, err error) {
	if !pinned {
		e, err := m.kv.Get(ctx, Key(id))
		if err != nil {
			return nil, nil, err
		}
		return e.Value(), nil, nil
	}
	msg, err := m.stream.GetLastMsgForSubject(ctx, m.prefix+Key(id))
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return nil, nil, jetstream.ErrKeyNotFound
	case err != nil:
		return nil, nil, err
	}
	if op := msg.Header.Get("KV-Operation"); op == "DEL" || op == "PURGE" {
		return nil, nil, jetstream.ErrKeyDeleted
	}
	if p := msg.Header.Get(pinHeader); p != "" {
		pin = []byte(p)
	}
	return msg.Data, pin, nil
}

// DoneAll marks claims as applied (their state is stored), in one round trip, before the messages
// are acknowledged. Only the owner of a claim marks it, so a plain put is enough.
func (m *Markers) DoneAll(ctx context.Context, claims []Claim) error {
	futs := make([]jetstream.PubAckFuture, 0, min(len(claims), maxInFlight))
	wait := func() error {
		for _, f := range futs {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				return fmt.Errorf("dedup done %s: %w", f.Msg().Subject, err)
			case <-ctx.Done():
				return fmt.Errorf("dedup done: %w", ctx.Err())
			}
		}
		futs = futs[:0]
		return nil
	}
	for _, c := range claims {
		if len(futs) == maxInFlight {
			if err := wait(); err != nil {
				return err
			}
		}
		msg := nats.NewMsg(m.prefix + Key(c.ID))
		msg.Data = strconv.AppendUint([]byte{'d'}, c.StreamSeq, 10)
		f, err := m.js.PublishMsgAsync(msg)
		if err != nil {
			return fmt.Errorf("dedup done %s: %w", c.ID, err)
		}
		futs = append(futs, f)
	}
	return wait()
}
