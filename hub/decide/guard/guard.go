// Package guard holds the hub's guardrails: it judges every proposed action (allow, suppress,
// needs approval) atomically across replicas, with all memory in one JetStream KV bucket.
package guard

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/internal/kvretry"
)

var (
	// ErrClosed: the Guard was closed.
	ErrClosed = errors.New("guard: closed")
	// ErrNotFound: no decision with that id.
	ErrNotFound = errors.New("guard: no such decision")
	// ErrState: the decision is not in a state the operation applies to (StateError says which).
	ErrState = errors.New("guard: decision in the wrong state")
	// ErrSelfApproval: the approver is the proposal's requester and forbid_self_approval is set.
	ErrSelfApproval = errors.New("guard: an approver cannot approve their own request")
	// ErrExpired: the approval request expired before it was decided.
	ErrExpired = errors.New("guard: approval request expired")
	// ErrKilled: an approval while the kill switch is thrown; the request stays queued.
	ErrKilled = errors.New("guard: the kill switch is thrown")
)

// StateError says what state a decision was in when an operation needed another.
type StateError struct {
	ID, Op string
	Status string
}

func (e *StateError) Error() string {
	return fmt.Sprintf("guard: %s %s: decision is %s", e.Op, e.ID, e.Status)
}

func (e *StateError) Unwrap() error { return ErrState }

// Metrics counts what the guard did; the wiring exports them.
type Metrics struct {
	Allowed, Suppressed, Queued atomic.Uint64
	Replayed                    atomic.Uint64 // Checks answered from a recorded verdict
	Takeovers                   atomic.Uint64 // decisions taken over from a replica whose claim lapsed
	Conflicts, Retries          atomic.Uint64
	Released                    atomic.Uint64
}

// Guard judges proposals. All methods are safe for concurrent use; several Guards (replicas) on
// separate connections may share a bucket: every decision, counter and cooldown is claimed or
// updated by compare-and-set, so no interleaving exceeds a limit or decides one id twice.
type Guard struct {
	cfg    Config
	zone   *time.Location
	kv     jetstream.KeyValue
	js     jetstream.JetStream // for reads of the bucket's stream from a time (AllowedSince)
	nc     *nats.Conn
	msgGet string // the stream leader's message-get subject, for reads (see get)
	purge  string // the stream's purge subject, to remove a queue entry (see dequeue)
	// subjPrefix is "$KV.<bucket>.", the subject prefix of the bucket's keys.
	subjPrefix string
	log        *slog.Logger
	replica    string
	closed     atomic.Bool
	Metrics    Metrics

	// Calls of one replica on one decision id are serialised: they would only race each other.
	stripes [64]sync.Mutex
	seed    maphash.Seed
}

// New creates or binds the bucket. replica names this Guard in records (a random name when empty).
func New(ctx context.Context, js jetstream.JetStream, cfg Config, replica string, log *slog.Logger) (*Guard, error) {
	if err := cfg.err(); err != nil {
		return nil, err
	}
	zone, _ := time.LoadLocation(cfg.Zone) // checked by cfg.err
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if replica == "" {
		var b [4]byte
		_, _ = rand.Read(b[:])
		replica = "guard-" + hex.EncodeToString(b[:])
	}
	kv, err := kvretry.KeyValue(ctx, js, jetstream.KeyValueConfig{
		Bucket:      cfg.Bucket,
		Description: "gemba-hub guardrails: decisions, daily caps, cooldowns, approvals, kill switch",
		History:     1,
		Replicas:    cfg.Replicas,
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("guard: bucket %s: %w", cfg.Bucket, err)
	}
	return newGuard(js, kv, cfg, zone, replica, log)
}

// Bind opens the bucket as it is, for the CLI (the kill switch a replay checks): it never creates
// the bucket nor changes its settings, which may be a newer release's. A bucket that is not there
// is an error naming it.
func Bind(ctx context.Context, js jetstream.JetStream, cfg Config, replica string) (*Guard, error) {
	if err := cfg.err(); err != nil {
		return nil, err
	}
	zone, _ := time.LoadLocation(cfg.Zone) // checked by cfg.err
	var kv jetstream.KeyValue
	err := kvretry.Attempts(ctx, kvretry.SetupAttempt, func(ctx context.Context) (err error) {
		kv, err = js.KeyValue(ctx, cfg.Bucket)
		return err
	})
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("guard: bucket %s: not found on these servers: the hub has not run with decisions "+
			"against them yet, or guard.bucket names another bucket, or it was deleted (see gemba-hub run --recreate): %w", cfg.Bucket, err)
	}
	if err != nil {
		return nil, fmt.Errorf("guard: bucket %s: %w", cfg.Bucket, err)
	}
	return newGuard(js, kv, cfg, zone, replica, slog.New(slog.DiscardHandler))
}

func newGuard(js jetstream.JetStream, kv jetstream.KeyValue, cfg Config, zone *time.Location, replica string, log *slog.Logger) (*Guard, error) {
	nc := js.Conn()
	if nc == nil {
		return nil, fmt.Errorf("guard: bucket %s: JetStream has no connection", cfg.Bucket)
	}
	opts := js.Options()
	api := "$JS.API."
	switch {
	case opts.Domain != "":
		api = "$JS." + opts.Domain + ".API."
	case opts.APIPrefix != "":
		api = strings.TrimSuffix(opts.APIPrefix, ".") + "."
	}
	return &Guard{cfg: cfg, zone: zone, kv: kv, js: js, nc: nc, replica: replica, seed: maphash.MakeSeed(),
		msgGet: api + "STREAM.MSG.GET.KV_" + cfg.Bucket, purge: api + "STREAM.PURGE.KV_" + cfg.Bucket, subjPrefix: "$KV." + cfg.Bucket + ".",
		log: log.With("component", "guard", "replica", replica)}, nil
}

// Close stops new calls. It is idempotent; the connection belongs to the caller.
func (g *Guard) Close() error {
	g.closed.Store(true)
	return nil
}

// Replica is the name this Guard writes into records.
func (g *Guard) Replica() string { return g.replica }

// MaxDiscount is the largest discount in percent a promotion on channel may carry: max_discount,
// or the channel's own when lower.
func (g *Guard) MaxDiscount(channel string) float64 {
	m := g.cfg.MaxDiscount
	if ch, ok := g.cfg.Channels[channel]; ok && ch.MaxDiscount > 0 {
		m = min(m, ch.MaxDiscount)
	}
	return m
}

func (g *Guard) lock(id string) func() {
	mu := &g.stripes[maphash.String(g.seed, id)%uint64(len(g.stripes))]
	mu.Lock()
	return mu.Unlock
}

// Record statuses besides the final outcomes: a replica holds the decision while it decides.
const (
	statusClaimed   = "claimed"
	statusApproving = "approving"
)

// record is the value of dec.<id>.
type record struct {
	Status   string    `json:"status"`
	Owner    string    `json:"owner"`
	Lease    time.Time `json:"lease"` // another replica may take a claimed decision over after it
	Created  time.Time `json:"created"`
	Proposal Proposal  `json:"proposal"`
	Verdict  *Verdict  `json:"verdict,omitempty"`
	// Approving: the approval being applied (kept so a replica taking over applies the same one).
	Approving *Approval `json:"approving,omitempty"`
	// Attempt is a random token of the call that wrote the verdict: after a lost reply, it tells
	// that call's own write from another's (owner and time can coincide).
	Attempt string `json:"attempt,omitempty"`
	// Round counts the decisions of the id (Verdict.Round): one more each time a suppression by
	// the kill switch is decided again after the switch was reset.
	Round int `json:"round,omitempty"`
	// Settled: a suppression by the kill switch that holds nothing any more (it reserved nothing,
	// or gave back what it held). Only then, or once the deciding call's lease has passed, may a
	// Check decide the id again: its reservations reuse the id's ledger entries, which a release
	// still under way would take from under it.
	Settled bool `json:"settled,omitempty"`
	// Reacquiring: a released decision whose reservations Owner is taking again until Lease
	// (Reacquire); another replica's Reacquire waits for it, or takes it over once it lapses.
	Reacquiring bool `json:"reacquiring,omitempty"`
}

func attempt() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func decodeRecord(id string, b []byte) (*record, error) {
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("guard: decision %s: undecodable record: %w", id, err)
	}
	return &r, nil
}

func (r *record) final() bool { return r.Status != statusClaimed && r.Status != statusApproving }

// killed reports whether the record is a suppression by the kill switch: the one final verdict
// that is not final for good, since the switch says "do nothing now", not "never this". Once the
// switch is reset, a Check of the id decides again (a new round), in the same time bucket.
func (r *record) killed() bool {
	return r.Status == string(Suppress) && r.Verdict != nil && r.Verdict.Guardrail == GKillSwitch
}

// Check judges a proposal once per decision id. The first call anywhere (any replica) decides and
// records the verdict; every later call returns the recorded verdict with Replayed set, whatever
// proposal it carries. The one exception is a suppression by the kill switch: a Check made once
// the switch is reset claims the id again by compare-and-set (one replica wins, as for a first
// claim) and decides this proposal afresh, every guardrail applying (Verdict.Round says which
// decision of the id it is). An Allow has consumed the day's caps and the cooldown (reserve-then-commit:
// counters first, then the verdict); an action that is then not delivered should be Released.
// An InputError means the proposal itself is malformed; other errors mean KV did not answer in
// retry_for, and the same call may be repeated.
func (g *Guard) Check(ctx context.Context, p Proposal) (Verdict, error) {
	if g.closed.Load() {
		return Verdict{}, ErrClosed
	}
	if err := p.check(); err != nil {
		return Verdict{}, err
	}
	defer g.lock(p.ID)()
	key := prefixDec + p.ID
	if v, ok, err := g.claimFirst(ctx, key, p); ok || err != nil {
		return v, err
	}
	r := g.retrier(ctx)
	for {
		cur, rev, err := g.get(ctx, key)
		if err != nil {
			return Verdict{}, fmt.Errorf("guard: decision %s: %w", p.ID, err)
		}
		var rec *record
		takeover, again := false, false
		if rev == 0 {
			now := g.cfg.now()
			rec = &record{Status: statusClaimed, Owner: g.replica, Lease: now.Add(g.cfg.ClaimLease), Created: now, Proposal: p}
		} else {
			if rec, err = decodeRecord(p.ID, cur); err != nil {
				return Verdict{}, err
			}
			switch {
			case rec.killed() && (rec.Settled || g.cfg.now().After(rec.Lease)):
				k, err := g.Kill(ctx)
				if err != nil {
					return Verdict{}, fmt.Errorf("guard: decision %s: %w", p.ID, err)
				}
				if k.On {
					return g.replay(rec)
				}
				// The switch was reset since: decide again, from this proposal.
				now := g.cfg.now()
				rec = &record{Status: statusClaimed, Owner: g.replica, Lease: now.Add(g.cfg.ClaimLease), Created: now,
					Proposal: p, Round: rec.Round + 1}
				again = true
			case rec.final() || rec.Status == statusApproving:
				return g.replay(rec)
			case rec.Owner == g.replica:
				// Our own claim: an earlier call failed after claiming, or a claim whose reply was
				// lost. Deciding again is safe: reservations are idempotent per id.
				p = rec.Proposal
			case g.cfg.now().After(rec.Lease):
				takeover = true
				p = rec.Proposal
				rec.Owner, rec.Lease = g.replica, g.cfg.now().Add(g.cfg.ClaimLease)
			default:
				if err := sleepCtx(ctx, 10*time.Millisecond); err != nil { // another replica is deciding
					return Verdict{}, fmt.Errorf("guard: decision %s: waiting for %s: %w", p.ID, rec.Owner, err)
				}
				continue
			}
		}
		if rev == 0 || takeover || again {
			b, _ := json.Marshal(rec)
			nrev, err := g.write(ctx, key, b, rev)
			switch {
			case isConflict(err):
				if err := r.Conflict(err); err != nil {
					return Verdict{}, fmt.Errorf("guard: decision %s: %w", p.ID, err)
				}
				continue
			case err != nil:
				if err := r.Failed(err); err != nil {
					return Verdict{}, fmt.Errorf("guard: decision %s: claim: %w", p.ID, err)
				}
				continue // the claim may have been stored: read it back
			}
			rev = nrev
			if takeover {
				g.Metrics.Takeovers.Add(1)
				g.log.Warn("decision taken over from a lapsed claim", "decision", p.ID)
			}
			if again {
				g.log.Info("decision suppressed by the kill switch decided again after its reset", "decision", p.ID, "round", rec.Round)
			}
		}
		v, touched, err := g.evaluate(ctx, &p, p.Time, nil, false, nil)
		if err != nil {
			return Verdict{}, err
		}
		// A decision taken over (or re-decided after a failed call) may hold reservations from
		// before: a suppression must give them back too.
		return g.finish(ctx, key, rec, rev, v, touched || takeover || cur != nil)
	}
}

// claimFirst decides p when this call is the first for its id, the common case: it claims the id
// with a create, reading the kill switch alongside, so the first decision costs the claim and the
// verdict's write (not a read before the claim and a read of the switch after it). ok is false
// when the id exists already (or a deleted record holds it, or the create failed): Check's loop
// then reads the record and goes on from what it says.
func (g *Guard) claimFirst(ctx context.Context, key string, p Proposal) (Verdict, bool, error) {
	now := g.cfg.now()
	rec := &record{Status: statusClaimed, Owner: g.replica, Lease: now.Add(g.cfg.ClaimLease), Created: now, Proposal: p}
	b, err := json.Marshal(rec)
	if err != nil {
		return Verdict{}, false, err
	}
	type reading struct {
		a   Assessment
		err error
	}
	killed := make(chan reading, 1)
	go func() {
		a, err := g.killAssessment(ctx)
		killed <- reading{a, err}
	}()
	opCtx, cancel := context.WithTimeout(ctx, g.cfg.OpTimeout)
	rev, err := g.kv.Update(opCtx, key, b, 0) // a create that a deleted record fails too
	cancel()
	k := <-killed
	if err != nil {
		// Taken, deleted, or not known: the loop reads what is there. A create whose reply
		// was lost reads back as our own claim and is decided from it.
		return Verdict{}, false, nil
	}
	v, touched, err := g.evaluate(ctx, &p, p.Time, nil, false, func() (Assessment, error) { return k.a, k.err })
	if err != nil {
		return Verdict{}, true, err
	}
	v, err = g.finish(ctx, key, rec, rev, v, touched)
	return v, true, err
}

// replay returns a recorded verdict.
func (g *Guard) replay(rec *record) (Verdict, error) {
	g.Metrics.Replayed.Add(1)
	if rec.Verdict == nil {
		return Verdict{}, fmt.Errorf("guard: decision %s: %s record without a verdict", rec.Proposal.ID, rec.Status)
	}
	v := *rec.Verdict
	v.Replayed = true
	judged := rec.Proposal
	v.Judged = &judged
	return v, nil
}

// finish records the verdict with compare-and-set on the revision this call claimed: reserve then
// commit. A lost race means another replica took the decision over; its verdict is returned, and
// what this call reserved is left to it (it reserved the same id, idempotently).
func (g *Guard) finish(ctx context.Context, key string, rec *record, rev uint64, v Verdict, touched bool) (Verdict, error) {
	id := rec.Proposal.ID
	if v.Outcome == NeedsApproval {
		// The queue entry goes first: a crash before the record leaves an entry whose record is
		// not pending, which Pending skips and removes.
		if _, err := g.modify(ctx, prefixQueue+id, func(cur []byte) ([]byte, bool, error) {
			return []byte(id), cur == nil, nil
		}); err != nil {
			return Verdict{}, fmt.Errorf("guard: decision %s: queue: %w", id, err)
		}
	}
	v.Round = rec.Round
	rec.Status, rec.Verdict, rec.Approving, rec.Attempt = string(v.Outcome), &v, nil, attempt()
	killed := v.Outcome == Suppress && v.Guardrail == GKillSwitch
	rec.Settled = killed && !touched // nothing to give back: it may be decided again at once
	b, err := json.Marshal(rec)
	if err != nil {
		return Verdict{}, err
	}
	r := g.retrier(ctx)
	settle := false
	for {
		nrev, err := g.write(ctx, key, b, rev)
		if err == nil {
			rev, settle = nrev, killed && touched
			break
		}
		if !isConflict(err) {
			if err := r.Failed(err); err != nil {
				return Verdict{}, fmt.Errorf("guard: decision %s: record verdict: %w", id, err)
			}
			continue
		}
		// Lost the record: our own write whose reply was lost, or a takeover.
		mine := v.ActionTime
		ours, err := g.awaitFinal(ctx, r, key, rec, &v)
		if err != nil {
			return Verdict{}, err
		}
		if !ours {
			// Suppress is final for good: nothing may hold this id any more. What this call
			// reserved after the other replica gave back (it took over while this one was slow)
			// is given back here; under any other verdict the reservations are the other's too.
			if v.Outcome == Suppress && touched {
				g.releaseAll(ctx, &rec.Proposal, mine)
			}
			return v, nil
		}
		break
	}
	switch v.Outcome {
	case Allow:
		g.Metrics.Allowed.Add(1)
	case Suppress:
		g.Metrics.Suppressed.Add(1)
		if touched {
			g.releaseAll(ctx, &rec.Proposal, v.ActionTime)
		}
		// Only now that the record says suppress: a replica that took the decision over may have
		// reserved it too, and what an allowed decision holds must never be given back.
		if settle {
			// Given back: a Check after the switch's reset may decide the id again (without
			// this mark, only once this call's lease has passed).
			rec.Settled = true
			if b, err := json.Marshal(rec); err == nil {
				if _, err := g.write(ctx, key, b, rev); err != nil {
					g.log.Debug("kill switch suppression not marked settled", "decision", id, "err", err)
				}
			}
		}
	case NeedsApproval:
		g.Metrics.Queued.Add(1)
	}
	g.log.Debug("decision", "decision", id, "outcome", v.Outcome, "guardrail", v.Guardrail)
	return v, nil
}

// awaitFinal reads a decision whose verdict write lost its compare-and-set until it is final. It
// reports ours when the final verdict is the one this call wrote (its reply was lost); otherwise v
// becomes the recorded verdict. A read may come from an R3 follower a little behind, which can
// still show this call's claim: it is read again.
func (g *Guard) awaitFinal(ctx context.Context, r *retrier, key string, rec *record, v *Verdict) (bool, error) {
	id := rec.Proposal.ID
	for {
		cur, rev, err := g.get(ctx, key)
		if err != nil {
			return false, fmt.Errorf("guard: decision %s: %w", id, err)
		}
		if rev == 0 {
			return false, fmt.Errorf("guard: decision %s: record removed while deciding", id)
		}
		now, err := decodeRecord(id, cur)
		if err != nil {
			return false, err
		}
		if now.final() && now.Verdict != nil {
			if now.Attempt == rec.Attempt {
				return true, nil
			}
			*v, err = g.replay(now)
			return false, err
		}
		if r.Expired() {
			return false, fmt.Errorf("guard: decision %s: still %s by %s after losing its record", id, now.Status, now.Owner)
		}
		if err := sleepCtx(ctx, 10*time.Millisecond); err != nil {
			return false, fmt.Errorf("guard: decision %s: %w", id, err)
		}
	}
}

// releaseAll gives back whatever a decision may hold. Failures leave a reservation behind, which
// only makes the guard stricter for the rest of the day or cooldown; they are logged.
func (g *Guard) releaseAll(ctx context.Context, p *Proposal, at time.Time) {
	if p.Kind != Promote {
		return
	}
	for _, key := range g.resourceKeys(p, at) {
		if err := g.release(ctx, key, p.ID); err != nil {
			g.log.Warn("reservation not released", "decision", p.ID, "key", key, "err", err)
		}
	}
}

func (g *Guard) day(at time.Time) string { return at.In(g.zone).Format(time.DateOnly) }

func (g *Guard) resourceKeys(p *Proposal, at time.Time) []string {
	day := g.day(at)
	return []string{coolKey(p.SKU, p.Channel), dayKey(day, p.Channel), dayKey(day, "")}
}
