// Package dedup remembers message identities beyond JetStream's duplicate window, in a KV bucket
// with a TTL that every hub replica shares: the first stream message to claim an identity owns it.
//
// A marker holds the claiming stream sequence while the message is being applied ("12") and is
// marked done once its state is stored ("d12"). A claim by the same stream message is fresh while
// the marker is pending (a redelivery after a crash: the state absorbs it) and a duplicate once it
// is done, so a consumer that re-reads the stream (deleted and re-created) applies nothing twice.
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
	prefix string // "$KV.<bucket>."
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
	return &Markers{js: js, kv: kv, prefix: "$KV." + cfg.Bucket + "."}, nil
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
	out := make([]Verdict, len(claims))
	futs := make([]jetstream.PubAckFuture, len(claims))
	// At most maxInFlight creates await their acks: a batch of up to 10,000 messages would otherwise
	// run into the connection's async publish limit (4,000 by default) and fail on a busy server.
	waited := 0
	for i, c := range claims {
		for ; waited <= i-maxInFlight; waited++ {
			if err := m.await(ctx, claims[waited], futs[waited], &out[waited]); err != nil {
				return nil, err
			}
		}
		msg := nats.NewMsg(m.prefix + Key(c.ID))
		msg.Data = strconv.AppendUint(nil, c.StreamSeq, 10)
		f, err := m.js.PublishMsgAsync(msg, jetstream.WithExpectLastSequencePerSubject(0))
		if err != nil {
			return nil, fmt.Errorf("dedup claim %s: %w", c.ID, err)
		}
		futs[i] = f
	}
	for i := waited; i < len(claims); i++ {
		if err := m.await(ctx, claims[i], futs[i], &out[i]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// maxInFlight bounds the unacknowledged creates of one ClaimAll.
const maxInFlight = 256

// await decides one claim from its create's ack.
func (m *Markers) await(ctx context.Context, c Claim, f jetstream.PubAckFuture, v *Verdict) error {
	select {
	case <-f.Ok():
		*v = Fresh
	case err := <-f.Err():
		verdict, err := m.settle(ctx, c, err)
		if err != nil {
			return err
		}
		*v = verdict
	case <-ctx.Done():
		return fmt.Errorf("dedup claim %s: %w", c.ID, ctx.Err())
	}
	return nil
}

// settle decides a claim whose create was refused: the identity exists, and it is a duplicate unless
// it was claimed by the same stream message.
func (m *Markers) settle(ctx context.Context, c Claim, cause error) (Verdict, error) {
	var apiErr *jetstream.APIError
	if !errors.As(cause, &apiErr) || (apiErr.ErrorCode != jetstream.JSErrCodeStreamWrongLastSequence &&
		apiErr.ErrorCode != jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
		return 0, fmt.Errorf("dedup claim %s: %w", c.ID, cause)
	}
	e, err := m.kv.Get(ctx, Key(c.ID))
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		// Expired between the create and the read: claim it again.
		if _, err := m.kv.Create(ctx, Key(c.ID), strconv.AppendUint(nil, c.StreamSeq, 10)); err == nil {
			return Fresh, nil
		} else if !errors.Is(err, jetstream.ErrKeyExists) {
			return 0, fmt.Errorf("dedup claim %s: %w", c.ID, err)
		}
		return m.settle(ctx, c, &jetstream.APIError{ErrorCode: jetstream.JSErrCodeStreamWrongLastSequence})
	}
	if err != nil {
		return 0, fmt.Errorf("dedup claim %s: read: %w", c.ID, err)
	}
	if seq, err := strconv.ParseUint(string(e.Value()), 10, 64); err == nil && seq == c.StreamSeq {
		return Fresh, nil // pending, by this very message
	}
	return Duplicate, nil // done, or claimed by another message
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
