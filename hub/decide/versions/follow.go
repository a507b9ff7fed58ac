package versions

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/decide/rules"
)

// Live is the rules state compiled: what a replica decides with. Change.Seq is the fence its
// decision records are published at.
type Live struct {
	Change audit.Change
	Active *rules.Set // nil before any activation
	Shadow *rules.Set
	Canary *rules.Set
}

// Follow calls fn with the compiled rules state, then again after every change, in order, on one
// goroutine. A change whose versions cannot be loaded (corrupt, missing) is logged at ERROR with
// the version and counted, and fn is not called: the previous Live stays, and since its fence is
// now old, its records are refused until a change that loads arrives (nothing acts on rules
// other than the recorded state). A read that fails for a passing reason (a server restart) is
// retried until it succeeds or a newer change supersedes it. stop ends it and waits.
func (r *Registry) Follow(fn func(*Live)) (stop func(), err error) {
	var (
		mu      sync.Mutex
		latest  audit.Change
		pending bool
	)
	wake := make(chan struct{}, 1)
	stopFollow, err := r.log.FollowChanges(func(c audit.Change) {
		mu.Lock()
		latest, pending = c, true
		mu.Unlock()
		select {
		case wake <- struct{}{}:
		default:
		}
	})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-wake:
			}
			mu.Lock()
			c, ok := latest, pending
			pending = false
			mu.Unlock()
			if !ok {
				continue
			}
			newer := func() bool { mu.Lock(); defer mu.Unlock(); return pending }
			if live, ok := r.build(ctx, c, newer); ok {
				fn(live)
			}
		}
	})
	return func() {
		stopFollow()
		cancel()
		wg.Wait()
	}, nil
}

// unknownGrace is how long a version a change names may read as unknown before the change is
// taken as not loading (a replica of the versions bucket catching up).
const unknownGrace = 10 * time.Second

// build compiles a change's versions, retrying passing failures while no newer change waits.
func (r *Registry) build(ctx context.Context, c audit.Change, newer func() bool) (*Live, bool) {
	live := &Live{Change: c}
	targets := []struct {
		version string
		set     **rules.Set
	}{{c.Active, &live.Active}, {c.Shadow, &live.Shadow}}
	if c.Canary != nil {
		targets = append(targets, struct {
			version string
			set     **rules.Set
		}{c.Canary.Version, &live.Canary})
	}
	for _, t := range targets {
		if t.version == "" {
			continue
		}
		started := time.Now()
		for wait := 50 * time.Millisecond; ; wait = min(wait*2, 2*time.Second) {
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			s, err := r.compile(rctx, t.version)
			cancel()
			if err == nil {
				*t.set = s
				break
			}
			// A version is stored before the change naming it, but on a replicated bucket the replica
			// answering this read may not have it yet: "unknown" is final only after unknownGrace.
			lagging := errors.Is(err, ErrUnknownVersion) && time.Since(started) < unknownGrace
			if !lagging && (errors.Is(err, ErrUnknownVersion) || errors.Is(err, errCorrupt)) {
				r.Stats.LoadFailures.Add(1)
				r.lg.Error("rules change not applied: a version does not load; the previous rules stay and decisions wait",
					"change", c.Seq, "op", c.Op, "version", t.version, "err", err)
				return nil, false
			}
			r.Stats.LoadRetries.Add(1)
			r.lg.Warn("rules change: reading a version failed, retrying", "change", c.Seq, "version", t.version, "err", err)
			select {
			case <-ctx.Done():
				return nil, false
			case <-time.After(wait):
			}
			if newer() {
				return nil, false // the worker picks the newer change next
			}
		}
	}
	return live, true
}
