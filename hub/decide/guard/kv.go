package guard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/gemba-io/gemba/internal/kvretry"
)

// Keys of the guard bucket. Every piece of guardrail memory is one of them; none relies on a TTL.
const (
	keyKill     = "kill"   // the kill switch
	prefixDec   = "dec."   // dec.<id>: the decision record, claimed with Create
	prefixQueue = "queue." // queue.<id>: a decision awaiting approval
	prefixCool  = "cool."  // cool.<sku>.<channel>: recent promotions of one SKU on one channel
	prefixDay   = "day."   // day.<date> and day.<date>.<channel>: the promotions of one day
)

// token writes s as one KV key token, one-to-one: letters, digits, '-', '_' stay; every other byte
// becomes '=' and two hex digits. (The state packages' kvkey does the same; the guard keeps its own
// copy to import no other hub package.)
func token(s string) string {
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('=')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&15])
	}
	return b.String()
}

func coolKey(sku, channel string) string { return prefixCool + token(sku) + "." + token(channel) }

func dayKey(day, channel string) string {
	if channel == "" {
		return prefixDay + day
	}
	return prefixDay + day + "." + token(channel)
}

// isConflict, transient and sleepCtx are the shared KV retry rules (internal/kvretry).
var (
	isConflict = kvretry.IsConflict
	transient  = kvretry.Transient
	sleepCtx   = kvretry.Sleep
)

// retrier paces retries of one operation.
type retrier = kvretry.Retrier

func (g *Guard) retrier(ctx context.Context) *retrier { return kvretry.New(ctx, g.cfg.RetryFor) }

// get reads a key: its value and revision, or revision 0 when absent or deleted. It asks the
// bucket's stream leader (STREAM.MSG.GET), not a direct get: on an R3 bucket any replica answers a
// direct get and a follower may be a little behind, and the guard decides from some reads without
// writing (a reservation already held, nothing to release, the kill switch) where a compare-and-set
// would not catch an old value.
func (g *Guard) get(ctx context.Context, key string) ([]byte, uint64, error) {
	r := g.retrier(ctx)
	for {
		val, rev, err := g.getOnce(ctx, key)
		if err == nil {
			return val, rev, nil
		}
		if err := r.Failed(err); err != nil {
			return nil, 0, fmt.Errorf("read %s: %w", key, err)
		}
	}
}

// msgGetResponse is the JetStream API's answer to STREAM.MSG.GET.
type msgGetResponse struct {
	Error *struct {
		Code        int    `json:"code"`
		ErrCode     uint16 `json:"err_code"`
		Description string `json:"description"`
	} `json:"error"`
	Message *struct {
		Seq  uint64 `json:"seq"`
		Hdrs []byte `json:"hdrs"`
		Data []byte `json:"data"`
	} `json:"message"`
}

const errCodeNoMessage = 10037 // JSNoMessageFoundErr

func (g *Guard) getOnce(ctx context.Context, key string) ([]byte, uint64, error) {
	req, _ := json.Marshal(map[string]string{"last_by_subj": g.subjPrefix + key})
	opCtx, cancel := context.WithTimeout(ctx, g.cfg.OpTimeout)
	defer cancel()
	msg, err := g.nc.RequestWithContext(opCtx, g.msgGet, req)
	if err != nil {
		return nil, 0, err
	}
	var resp msgGetResponse
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return nil, 0, fmt.Errorf("undecodable reply from the stream leader: %w", err)
	}
	if resp.Error != nil {
		if resp.Error.ErrCode == errCodeNoMessage {
			return nil, 0, nil
		}
		return nil, 0, fmt.Errorf("stream leader: %s (%d)", resp.Error.Description, resp.Error.ErrCode)
	}
	if resp.Message == nil {
		return nil, 0, errors.New("empty reply from the stream leader")
	}
	if len(resp.Message.Hdrs) > 0 {
		h, err := nats.DecodeHeadersMsg(resp.Message.Hdrs)
		if err == nil {
			if op := h.Get("KV-Operation"); op == "DEL" || op == "PURGE" {
				return nil, 0, nil
			}
		}
	}
	return resp.Message.Data, resp.Message.Seq, nil
}

// write stores val at key if the key is still at rev (0: absent). It does not retry: a lost race
// and a lost reply both need the caller to read again.
func (g *Guard) write(ctx context.Context, key string, val []byte, rev uint64) (uint64, error) {
	opCtx, cancel := context.WithTimeout(ctx, g.cfg.OpTimeout)
	defer cancel()
	if rev == 0 {
		return g.kv.Create(opCtx, key, val)
	}
	return g.kv.Update(opCtx, key, val, rev)
}

// modify is the read → change → compare-and-set loop. change sees the current value (nil when
// absent) and returns the next one, or write=false to leave the key as it is. change must be
// idempotent: a write whose reply was lost may have been stored, and the loop then reads it back
// and calls change on it again. It returns whether this call's last change was written.
func (g *Guard) modify(ctx context.Context, key string, change func(cur []byte) (next []byte, write bool, err error)) (bool, error) {
	r := g.retrier(ctx)
	for {
		cur, rev, err := g.get(ctx, key)
		if err != nil {
			return false, err
		}
		next, write, err := change(cur)
		if err != nil || !write {
			return false, err
		}
		_, err = g.write(ctx, key, next, rev)
		switch {
		case err == nil:
			return true, nil
		case isConflict(err):
			g.Metrics.Conflicts.Add(1)
			if err := r.Conflict(err); err != nil {
				return false, fmt.Errorf("update %s: %w", key, err)
			}
		default:
			g.Metrics.Retries.Add(1)
			if err := r.Failed(err); err != nil {
				return false, fmt.Errorf("update %s: %w", key, err)
			}
		}
	}
}
