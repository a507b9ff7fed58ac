package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

const lockKey = "refit"

// Holder is who holds the refit lock and since when.
type Holder struct {
	By    string    `json:"by"`
	Since time.Time `json:"since"`
}

// ErrLocked: another refit holds the lock.
var ErrLocked = errors.New("a refit is already running")

// Lock is a held refit lock. It refreshes itself (every third of the bucket's TTL) until Release;
// Lost closes if a refresh finds the lock gone or taken (the key expired: this holder stalled past
// the TTL), and the refit should then stop rather than store.
type Lock struct {
	r      *Registry
	rev    uint64
	holder Holder
	val    []byte
	lost   chan struct{}
	once   sync.Once
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
}

// TryLock takes the refit lock for by, or returns ErrLocked naming the holder. The lock is a key
// created only if absent (CAS) in a bucket whose TTL removes it when its holder stops refreshing it.
func (r *Registry) TryLock(ctx context.Context, by string) (*Lock, error) {
	h := Holder{By: by, Since: r.now().UTC()}
	val, _ := json.Marshal(h)
	rev, err := r.lock.Create(ctx, lockKey, val)
	if errors.Is(err, jetstream.ErrKeyExists) {
		cur := Holder{By: "?"}
		if e, gerr := r.lock.Get(ctx, lockKey); gerr == nil {
			_ = json.Unmarshal(e.Value(), &cur)
		}
		return nil, fmt.Errorf("%w: held by %s since %s", ErrLocked, cur.By, cur.Since.Format(time.RFC3339))
	}
	if err != nil {
		return nil, fmt.Errorf("refit lock (%s): %w", r.b.Lock, err)
	}
	st, err := r.lock.Status(ctx)
	if err != nil {
		_ = r.lock.Delete(ctx, lockKey, jetstream.LastRevision(rev))
		return nil, fmt.Errorf("refit lock (%s): %w", r.b.Lock, err)
	}
	cctx, cancel := context.WithCancel(context.Background())
	l := &Lock{r: r, rev: rev, holder: h, val: val, lost: make(chan struct{}), cancel: cancel}
	every := max(st.TTL()/3, 10*time.Millisecond)
	l.wg.Go(func() { l.refresh(cctx, every) })
	return l, nil
}

func (l *Lock) refresh(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := l.renew(ctx)
		if errors.Is(err, errLockLost) {
			return
		}
		if err != nil && ctx.Err() == nil {
			l.r.lg.Warn("refit lock: refresh failed, retrying", "err", err)
		}
	}
}

var errLockLost = errors.New("lost (expired or taken by another holder)")

// renew refreshes the lock once: errLockLost (and Lost closed) when the key is gone or another's.
func (l *Lock) renew(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.lost:
		return errLockLost
	default:
	}
	rev, err := l.r.lock.Update(ctx, lockKey, l.val, l.rev)
	if err == nil {
		l.rev = rev
		return nil
	}
	if ctx.Err() == nil && (errors.Is(err, jetstream.ErrKeyNotFound) || isWrongLast(err) || errors.Is(err, jetstream.ErrKeyExists)) {
		l.r.lg.Error("refit lock lost (expired or taken): the refit stops", "holder", l.holder.By, "err", err)
		l.once.Do(func() { close(l.lost) })
		return errLockLost
	}
	return err
}

// Confirm refreshes the lock now and returns nil only if it is still this holder's: the refit
// calls it right before storing, since the periodic refresh may not have run since the key expired
// (a stall past the TTL) and another holder took it.
func (l *Lock) Confirm(ctx context.Context) error {
	if err := l.renew(ctx); err != nil {
		return fmt.Errorf("refit lock: %w", err)
	}
	return nil
}

// Lost is closed when the lock was lost.
func (l *Lock) Lost() <-chan struct{} { return l.lost }

// Release stops refreshing and deletes the lock if it is still this holder's.
func (l *Lock) Release(ctx context.Context) error {
	l.cancel()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.lost:
		return nil
	default:
	}
	if err := l.r.lock.Delete(ctx, lockKey, jetstream.LastRevision(l.rev)); err != nil && !isWrongLast(err) {
		return fmt.Errorf("release refit lock: %w", err)
	}
	return nil
}

// LockHolder returns who holds the refit lock, if anyone.
func (r *Registry) LockHolder(ctx context.Context) (Holder, bool, error) {
	e, err := r.lock.Get(ctx, lockKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Holder{}, false, nil
	}
	if err != nil {
		return Holder{}, false, err
	}
	var h Holder
	if err := json.Unmarshal(e.Value(), &h); err != nil {
		return Holder{}, false, fmt.Errorf("refit lock (%s): does not decode: %w", r.b.Lock, err)
	}
	return h, true, nil
}
