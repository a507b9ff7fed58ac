package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub/learn/demand"
)

// What a refit does with the set it stored.
const (
	PromoteActivate = "activate" // it becomes the active set (the old one goes on the rollback stack)
	PromoteShadow   = "shadow"   // it becomes the shadow set, forecasting beside the active one
	PromoteNone     = "none"     // it is stored only
)

// RefitOptions shape a refit.
type RefitOptions struct {
	Source demand.Source
	// History is how many whole days before today the fit reads (default 365).
	History  int
	Location *time.Location
	// ByChannel fits one series per channel (summed for Cover) rather than per SKU × site.
	ByChannel bool
	Fit       FitOptions
	// Promote is PromoteActivate, PromoteShadow or PromoteNone. Whatever it says, the first set ever
	// stored is promoted unless it is PromoteNone: with no active set there is no cover at all.
	Promote string
	// Now is the refit's clock: the data ends at the start of its day (today, partial, is left out).
	Now func() time.Time
	// FreshFor, when positive, makes the refit a no-op (ErrFresh) if, once it holds the lock, the
	// newest stored set is younger than this: a scheduled refit on one replica then does not repeat
	// the one another replica has just finished.
	FreshFor time.Duration
}

// ErrFresh: a scheduled refit found a set younger than FreshFor and did nothing.
var ErrFresh = errors.New("the newest model set is fresh: no refit needed")

// RefitStatus is what the last refit that ran (held the lock, was not fresh) came to, kept in the
// state bucket (key refit.last).
type RefitStatus struct {
	At      time.Time `json:"at"`
	By      string    `json:"by"`
	Version string    `json:"version,omitempty"` // the set it stored, if it got that far
	Err     string    `json:"error,omitempty"`   // why it failed; "" when it succeeded
}

const refitKey = "refit.last"

// LastRefit returns the last refit's outcome (false before any refit recorded one).
func (r *Registry) LastRefit(ctx context.Context) (RefitStatus, bool, error) {
	e, err := r.kv.Get(ctx, refitKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return RefitStatus{}, false, nil
	}
	if err != nil {
		return RefitStatus{}, false, fmt.Errorf("last refit: %w", err)
	}
	var st RefitStatus
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return RefitStatus{}, false, fmt.Errorf("last refit (%s key %q, revision %d): does not decode: %w", r.b.State, refitKey, e.Revision(), err)
	}
	return st, true, nil
}

func (r *Registry) recordRefit(st RefitStatus) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	val, _ := json.Marshal(st)
	if _, err := r.kv.Put(ctx, refitKey, val); err != nil {
		r.lg.Warn("refit outcome not recorded", "version", st.Version, "refit_error", st.Err, "err", err)
	}
}

// Fresh returns the newest stored set and whether it is fresh: younger than within at now, and the
// last refit did not fail. A set whose refit failed after storing it (its promotion or shadowing did
// not happen) changed nothing: the next scheduled check must try again, not wait a whole period.
func (r *Registry) Fresh(ctx context.Context, within time.Duration, now time.Time) (Meta, bool, error) {
	metas, err := r.List(ctx)
	if err != nil || len(metas) == 0 {
		return Meta{}, false, err
	}
	m := metas[len(metas)-1]
	if now.Sub(m.Created) >= within {
		return m, false, nil
	}
	st, ok, err := r.LastRefit(ctx)
	if err != nil {
		return m, false, err
	}
	return m, !(ok && st.Err != ""), nil
}

// RefitResult is what a refit did.
type RefitResult struct {
	Version string
	Set     *Set
	Change  *Change // nil when the set was only stored (or was the active set already)
}

// Refit takes the refit lock (ErrLocked if another refit holds it), builds the demand series from
// the stream, fits them, stores the set and promotes or shadows it as opts say.
func (r *Registry) Refit(ctx context.Context, js jetstream.JetStream, opts RefitOptions) (res RefitResult, err error) {
	if opts.History <= 0 {
		opts.History = 365
	}
	if opts.Now == nil {
		opts.Now = r.now
	}
	if opts.Location == nil {
		opts.Location = time.UTC
	}
	switch opts.Promote {
	case "":
		opts.Promote = PromoteActivate
	case PromoteActivate, PromoteShadow, PromoteNone:
	default:
		return RefitResult{}, fmt.Errorf("refit: promote %q: want %s, %s or %s", opts.Promote, PromoteActivate, PromoteShadow, PromoteNone)
	}
	by := opts.Fit.By
	if by == "" {
		by = "refit"
	}
	lock, err := r.TryLock(ctx, by)
	if err != nil {
		return RefitResult{}, err
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := lock.Release(rctx); err != nil {
			r.lg.Warn("refit lock not released (it expires)", "err", err)
		}
	}()
	// A lost lock stops the refit: another replica may be fitting by now.
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-lock.Lost():
			cancel()
		case <-fctx.Done():
		}
	}()

	if opts.FreshFor > 0 {
		m, fresh, err := r.Fresh(ctx, opts.FreshFor, opts.Now())
		if err != nil {
			return RefitResult{}, err
		}
		if fresh {
			return RefitResult{}, fmt.Errorf("%w (%s, created %s)", ErrFresh, m.Version, m.Created.Format(time.RFC3339))
		}
	}
	// From here on it is a refit: its outcome is recorded, so that a set stored but not promoted is
	// not taken for a fresh one, and an operator sees that the last refit failed.
	defer func() {
		select {
		case <-lock.Lost():
			return // another holder is refitting: its outcome is the one to record
		default:
		}
		st := RefitStatus{At: r.now().UTC(), By: by, Version: res.Version}
		if err != nil {
			st.Err = err.Error()
		}
		r.recordRefit(st)
	}()
	if opts.Promote != PromoteNone {
		// A set that cannot be promoted is not worth fitting: with the state unreadable every
		// scheduled check (a minute apart after a failure) would store another set.
		if _, _, err := r.State(ctx); err != nil {
			return RefitResult{}, fmt.Errorf("refit: nothing fitted: %w", err)
		}
	}
	now := opts.Now().In(opts.Location)
	to := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, opts.Location)
	ds, err := demand.Build(fctx, js, opts.Source, demand.Options{From: to.AddDate(0, 0, -opts.History), To: to,
		Location: opts.Location, ByChannel: opts.ByChannel})
	if err != nil {
		return RefitResult{}, lostOr(lock, err)
	}
	fo := opts.Fit
	fo.By = by
	if fo.Now == nil {
		fo.Now = opts.Now
	}
	set, err := Fit(fctx, ds, fo)
	if err != nil {
		return RefitResult{}, lostOr(lock, err)
	}
	if err := lock.Confirm(ctx); err != nil {
		return RefitResult{}, lostOr(lock, fmt.Errorf("refit not stored: %w", err))
	}
	v, err := r.Store(ctx, set)
	if err != nil {
		return RefitResult{}, err
	}
	res = RefitResult{Version: v, Set: set}
	why := fmt.Sprintf("refit: %d series, data %s to %s", len(set.Series), day(set.From), day(set.To.AddDate(0, 0, -1)))
	if opts.Fit.Why != "" {
		why = opts.Fit.Why + " (" + why + ")"
	}
	var c Change
	switch opts.Promote {
	case PromoteNone:
		return res, nil
	case PromoteActivate:
		c, err = r.Promote(ctx, v, by, why)
	default: // shadow; the first set ever is activated (decided on the state the change replaces)
		c, err = r.shadowOrFirst(ctx, v, by, why)
	}
	if errors.Is(err, ErrUnchanged) {
		return res, nil // the same set as the active one: nothing to change
	}
	if err != nil {
		return res, err
	}
	res.Change = &c
	return res, nil
}

func lostOr(lock *Lock, err error) error {
	select {
	case <-lock.Lost():
		return fmt.Errorf("%w: the refit lock was lost (this refit stalled past its TTL)", err)
	default:
		return err
	}
}
