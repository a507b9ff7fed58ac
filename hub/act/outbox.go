package act

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/internal/kvretry"
)

// State is where a record is in its delivery.
type State string

const (
	// Pending: some delivery of the current phase is still to do (at NextAt).
	Pending State = "pending"
	// Done: every message of the action was delivered.
	Done State = "done"
	// Dead: a webhook gave up (410 Gone, too many attempts, too old), or a publish can never
	// succeed; Replay re-queues it. A promotion dead before any of it went out gives back what it
	// reserved in the guard (GiveBack), and its replay reserves again first.
	Dead State = "dead"
	// Cancelled: never delivered, by Cancel or by the kill switch, or a promotion whose end passed
	// before any of its start went out (LastError "expired: …"; GiveBack until a loop gave its
	// reservations back); its decision was given back to the guard. The record keeps the decision
	// id so that a late Enqueue of it is a no-op.
	Cancelled State = "cancelled"
)

// Record is an action's outbox entry: the action and how far its delivery got. Each field that
// says something was delivered is written only after the receiver acknowledged it.
type Record struct {
	Action Action `json:"action"`
	State  State  `json:"state"`
	// Phase is the event being delivered: start, then (promotions) end once Action.End has passed.
	Phase     string `json:"phase"`
	Published bool   `json:"published"` // the phase's NATS message has its PubAck
	Hooked    bool   `json:"hooked"`    // the phase's webhook answered 2xx
	// Attempts counts failed webhook calls of this phase; FirstAt is when the phase became due.
	Attempts  int       `json:"attempts"`
	FirstAt   time.Time `json:"first_at"`
	NextAt    time.Time `json:"next_at"`
	LastError string    `json:"last_error,omitempty"`
	// Owner holds a claimed record until LeaseUntil; another loop may take it over afterwards.
	Owner      string    `json:"owner,omitempty"`
	LeaseUntil time.Time `json:"lease_until,omitzero"`
	// DoneAt is when the record became Done; Sweep removes it a retention later.
	DoneAt time.Time `json:"done_at,omitzero"`
	// Killed says the kill switch stopped the start (by whom, when, why). Written before anything
	// is given back: whoever takes the record over finishes the cancellation and never delivers
	// it, whatever the switch says by then. A promotion whose start went out in part (on NATS)
	// is ended at once, on NATS only.
	Killed string `json:"killed,omitempty"`
	// EndedEarly says the kill switch, thrown with end_live, ended this running promotion before
	// its end time (by whom, when, why): its end was made due at once, for every place its start
	// went. Written once, by compare-and-set, whichever loop read the switch's mark first.
	EndedEarly string `json:"ended_early,omitempty"`
	// StartedAt is when the start's NATS message was first tried: saved before any of it is tried
	// (with try's claim, or a mark of its own for a record Enqueue handed over), kept once it went
	// out or may have (a Replay keeps it for a MaybeOut record). A mark of the kill switch thrown
	// with end_live at or after it ends the promotion; a start claimed by a loop that stopped is
	// maybe out only with it (without it, it was never tried); a maybe-out start is looked for on
	// the stream from it. Zero in a record written before it existed: Action.Start stands for it.
	StartedAt time.Time `json:"started_at,omitzero"`
	// EndDue: a promotion dead-lettered in its start after its NATS start went out (or may have:
	// MaybeOut) still gets its NATS end, at NextAt (the promotion's end); EndPublished says that end
	// has its PubAck (its start is then never published after it, by a replay).
	EndDue       bool `json:"end_due,omitempty"`
	EndPublished bool `json:"end_published,omitempty"`
	// GiveBack: a promotion dead-lettered (or cancelled as expired) before any of it went out
	// (see wentOut), whose reservations a loop is still to give back to the guard
	// (Guard.DeadLettered); GivenBack is when that was done. A Replay of either reserves again
	// first (Guard.Reacquire).
	GiveBack  bool      `json:"give_back,omitempty"`
	GivenBack time.Time `json:"given_back,omitzero"`
	// Reacquired is when a Replay reserved again what the record had given back (the decision log's
	// released record predates it: the decision is allowed again). ReacquireLogged: a loop had the
	// Guard record it on the decision log (Guard.Reacquired), before anything else of the replay.
	Reacquired      time.Time `json:"reacquired,omitzero"`
	ReacquireLogged bool      `json:"reacquire_logged,omitempty"`
	// MaybeOut: the start's NATS message may be on the stream though not marked published (an
	// attempt of it stopped part way and was taken over, or a publish got no answer). Before it is
	// published again later than the stream's duplicate window after StartedAt, the loop looks for
	// it on the stream (startStored): found, it is marked published and not sent again. Should its
	// end pass before it is known to have gone out, its NATS end goes out all the same (NATSOnly:
	// its end goes to NATS alone) and it keeps its reservations, rather than being cancelled unseen;
	// dead-lettered before it is known to have gone out, it keeps them too (no GiveBack) and its
	// NATS end stays due (EndDue), as for a start known to have gone out; met by the kill switch,
	// it is ended on NATS at once, as a start the switch stopped after its NATS publish.
	MaybeOut bool `json:"maybe_out,omitempty"`
	NATSOnly bool `json:"nats_only,omitempty"`
}

// active reports whether a loop has something to do with the record: a pending phase, or the
// NATS end of a dead-lettered promotion, or giving back what a dead letter holds.
func (r *Record) active() bool {
	return r.State == Pending || r.State == Dead && (r.EndDue || r.GiveBack) || r.State == Cancelled && r.GiveBack
}

// wentOut reports whether any part of the action was delivered: its start's NATS message (a
// PubAck) or webhook (a 2xx), or anything of its end. A start's webhook is called only after its
// NATS message went out, so a start not published has gone nowhere.
func (r *Record) wentOut() bool {
	return r.Phase != EventStart || r.Published || r.Hooked || r.EndPublished
}

// pastEnd reports whether the record is a promotion whose end has passed at now before its start is
// known to have gone out: nothing of it went out, or its NATS start may have (MaybeOut) — its NATS
// end then maybe out too, as the end of a dead letter (a replay of one after its end).
func (r *Record) pastEnd(now time.Time) bool {
	return r.Action.Kind == Promote && r.Phase == EventStart && !r.Published && (!r.wentOut() || r.MaybeOut) && !now.Before(r.Action.End)
}

// msgID is the idempotency key of the record's current phase.
func (r *Record) msgID() string {
	if r.Phase == EventEnd {
		return r.Action.DecisionID + ":end"
	}
	return r.Action.DecisionID
}

// Outbox is the durable list of actions to deliver, shared by every replica through a KV bucket
// keyed by decision id. Safe for concurrent use.
type Outbox struct {
	cfg    Config
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	log    *slog.Logger
	client *http.Client
	keys   map[string][]byte // channel → webhook key

	// afterPublish, when set by a test, runs after a PubAck and before the record is marked: a
	// non-nil error stops the attempt there as a crash would.
	afterPublish func(id string) error

	hand handoff // records Enqueue created already claimed, for this replica's Run

	guard Guard // the kill switch and giving back, for starts (nil: never stopped; SetGuard)
	// endChecks counts the loop's readings of the kill switch for end_live (tests wait on it).
	endChecks atomic.Uint64

	// missing says why the actions stream cannot take a publish (nil while it can): it was found
	// gone at missingAt, and is created again after streamPause (see checkStream).
	missing   atomic.Pointer[string]
	streamMu  sync.Mutex
	missingAt time.Time
}

// Guard is what delivery asks of the guardrails (wired by the hub to hub/decide/guard and the
// decision log): the kill switch, read fresh before any part of an action's start goes out, and
// what to do with a start the switch cancelled for good.
type Guard interface {
	// Killed reads the kill switch from its store (no cache that could lag): whether it is thrown,
	// and a text saying by whom, when and why.
	Killed(ctx context.Context) (on bool, why string, err error)
	// Cancelled gives back what the decision of a start the kill switch cancelled holds (the
	// guard's Release) and records why on the decision log. It is called again after a failure or
	// a crash, so it must be idempotent.
	Cancelled(ctx context.Context, a Action, why string) error
	// EndLive reads the kill switch's last end-live mark as Killed reads the switch: the zero
	// EndMark when it was never thrown with end_live. The mark outlives a reset of the switch.
	EndLive(ctx context.Context) (EndMark, error)
	// DeadLettered gives back what the decision of a promotion dead-lettered before any of it went
	// out holds (the guard's Release) and records why on the decision log. It is called again
	// after a failure or a crash, so it must be idempotent.
	DeadLettered(ctx context.Context, a Action, why string) error
	// Reacquire reserves again, as of now, what DeadLettered gave back, checking the guardrails
	// as a decision would (kill switch, discount, daily caps of today, cooldown): an error wrapping
	// ErrRefused names the guardrail that refuses it now. Idempotent: a decision that holds its
	// reservations already is left as it is.
	Reacquire(ctx context.Context, a Action) error
	// Reacquired records on the decision log that a Replay reserved the decision again at `at`
	// (Reacquire ran where the Replay did, which may have no decision log: the CLI). The loop
	// calls it before it delivers anything of the replayed record, again after a failure or a
	// crash, so it must be idempotent.
	Reacquired(ctx context.Context, a Action, at time.Time) error
}

// EndMark is the last throw of the kill switch with end_live: every promotion whose start went out
// by At is to be ended, whatever the switch says now. Gen numbers the throws.
type EndMark struct {
	Gen uint64
	At  time.Time
	Why string // by whom, when, why
}

// SetGuard makes the outbox read the kill switch through g before any part of an action's start
// goes out, and refuse Replay while it is thrown. Call it before Run and Replay.
func (o *Outbox) SetGuard(g Guard) { o.guard = g }

// Open checks cfg, creates or updates the outbox bucket and the actions stream, and returns the
// outbox. Several replicas open the same bucket and stream.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config, log *slog.Logger) (*Outbox, error) {
	cfg.Defaults()
	if err := cfg.err(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Owner == "" {
		var b [6]byte
		_, _ = rand.Read(b[:])
		cfg.Owner = "act-" + hex.EncodeToString(b[:])
	}
	o := &Outbox{cfg: cfg, js: js, log: log.With("owner", cfg.Owner), client: &http.Client{CheckRedirect: noRedirects}, keys: map[string][]byte{}}
	for name, ch := range cfg.Channels {
		if ch.Webhook != nil {
			o.keys[name], _ = decodeSecret(ch.Webhook.Secret.Value()) // checked by cfg.err
		}
	}
	// History 1 and no TTL: the record itself is the memory that a decision was enqueued; a TTL
	// would let a late duplicate Enqueue deliver again.
	kv, err := kvretry.KeyValue(ctx, js, jetstream.KeyValueConfig{
		Bucket: cfg.Bucket, History: 1, Replicas: max(cfg.Replicas, 1),
		Description: "gemba-hub: actions to deliver, keyed by decision id, with their delivery state",
	})
	if err != nil {
		return nil, fmt.Errorf("act outbox bucket %s: %w", cfg.Bucket, err)
	}
	o.kv = kv
	if err := o.createStream(ctx); err != nil {
		return nil, err
	}
	return o, nil
}

// createStream creates the actions stream, or updates it with this config's subjects.
func (o *Outbox) createStream(ctx context.Context) error {
	cfg := o.cfg
	subjects := cfg.subjects()
	err := kvretry.Attempts(ctx, kvretry.SetupAttempt, func(ctx context.Context) error {
		// Subjects already on the stream stay: another replica, or the CLI, may run with a channel
		// this config lacks, and that channel's actions must still find the stream. A channel left
		// out of every config keeps its two subjects, unused.
		subjects = cfg.subjects()
		if s, err := o.js.Stream(ctx, cfg.Stream); err == nil {
			subjects = union(s.CachedInfo().Config.Subjects, subjects)
		} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
			return err
		}
		_, err := o.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
			Name: cfg.Stream, Subjects: subjects, Storage: jetstream.FileStorage,
			Replicas: max(cfg.Replicas, 1), Duplicates: cfg.DuplicateWindow,
			Description: "gemba-hub: promotions and holds, one message per decision (Nats-Msg-Id = decision id)",
		})
		return err
	})
	if err != nil {
		return fmt.Errorf("act stream %s (subjects %v): %w", cfg.Stream, subjects, err)
	}
	return nil
}

// Bind opens the outbox bucket as it is, for the CLI (actions dead, replay; why's delivery state):
// it never creates the bucket or the actions stream nor changes their settings, which may be a
// newer release's. A bucket that is not there is an error naming it. The outbox delivers nothing
// (no Run: a running hub delivers).
func Bind(ctx context.Context, js jetstream.JetStream, cfg Config) (*Outbox, error) {
	cfg.Defaults()
	if err := cfg.err(); err != nil {
		return nil, err
	}
	var kv jetstream.KeyValue
	err := kvretry.Attempts(ctx, kvretry.SetupAttempt, func(ctx context.Context) (err error) {
		kv, err = js.KeyValue(ctx, cfg.Bucket)
		return err
	})
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("act outbox bucket %s: not found on these servers: the hub has not run with decisions "+
			"against them yet, or act.bucket names another bucket, or it was deleted (see gemba-hub run --recreate): %w", cfg.Bucket, err)
	}
	if err != nil {
		return nil, fmt.Errorf("act outbox bucket %s: %w", cfg.Bucket, err)
	}
	return &Outbox{cfg: cfg, js: js, kv: kv, log: slog.New(slog.DiscardHandler), client: &http.Client{CheckRedirect: noRedirects},
		keys: map[string][]byte{}}, nil
}

// union returns the strings of a and b once each, sorted.
func union(a, b []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range append(append([]string{}, a...), b...) {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}

// noRedirects makes a redirect a failed call: following it would turn the POST into a GET and
// send the signed action somewhere its configuration did not name.
func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

func key(decisionID string) string { return "a." + token(decisionID) }

// Delivers reports whether the act config lists channel: Enqueue refuses any other.
func (o *Outbox) Delivers(channel string) bool {
	_, ok := o.cfg.Channels[channel]
	return ok
}

// Enqueue records the action for delivery. A second Enqueue of the same decision id is a no-op
// (false, nil), whatever its content: the first replica to create the key owns the action.
func (o *Outbox) Enqueue(ctx context.Context, a Action) (bool, error) {
	if err := a.check(); err != nil {
		return false, err
	}
	if _, ok := o.cfg.Channels[a.Channel]; !ok {
		return false, fmt.Errorf("action %q: channel %q: %w", a.DecisionID, a.Channel, ErrUnknownChannel)
	}
	now := o.cfg.now()
	rec := Record{Action: a, State: Pending, Phase: EventStart, FirstAt: now, NextAt: now}
	// While this replica's loop runs and has room, the record is created claimed by it and
	// handed over in memory: its delivery starts without waiting for the watch, a read and a
	// claim. Should the replica stop first, the lease runs out and any loop takes it over.
	own := o.hand.reserve()
	if own {
		rec.Owner, rec.LeaseUntil = o.cfg.Owner, now.Add(o.cfg.Lease)
	}
	data, err := json.Marshal(rec)
	if err != nil {
		o.hand.cancel(own)
		return false, fmt.Errorf("action %q: %w", a.DecisionID, err)
	}
	rev, err := o.kv.Create(ctx, key(a.DecisionID), data)
	if err != nil {
		o.hand.cancel(own)
		if errors.Is(err, jetstream.ErrKeyExists) {
			return false, nil
		}
		return false, fmt.Errorf("enqueue action %q: %w", a.DecisionID, err)
	}
	if own {
		o.hand.give(handed{key: key(a.DecisionID), rec: rec, rev: rev})
	}
	return true, nil
}

// Cancel records that a decision's action is never to be delivered, unless it was enqueued first:
// it creates the decision's record in state Cancelled (reason as its last error) and reports
// whether it did. Whoever releases an allowed decision that nothing enqueued calls it first: a
// replica deciding the same id again enqueues under the same key, and only one of the two creates
// it — never an action delivered for a decision whose caps were given back.
func (o *Outbox) Cancel(ctx context.Context, a Action, reason string) (bool, error) {
	if a.DecisionID == "" {
		return false, errors.New("cancel action: decision_id is empty")
	}
	now := o.cfg.now()
	rec := Record{Action: a, State: Cancelled, Phase: EventStart, FirstAt: now, NextAt: now, LastError: reason, DoneAt: now}
	data, err := json.Marshal(rec)
	if err != nil {
		return false, fmt.Errorf("cancel action %q: %w", a.DecisionID, err)
	}
	if _, err := o.kv.Create(ctx, key(a.DecisionID), data); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return false, nil
		}
		return false, fmt.Errorf("cancel action %q: %w", a.DecisionID, err)
	}
	return true, nil
}

// Get returns the record of a decision (jetstream.ErrKeyNotFound when none).
func (o *Outbox) Get(ctx context.Context, decisionID string) (Record, error) {
	rec, _, err := o.read(ctx, key(decisionID))
	return rec, err
}

// ErrNotDead is returned by Replay for a record that is not dead-lettered.
var ErrNotDead = errors.New("not dead-lettered")

// ErrKilled is returned by Replay while the kill switch is thrown.
var ErrKilled = errors.New("the kill switch is thrown")

// ErrPermanent is wrapped by an error of the Guard that no retry can change (the guard does not
// know the decision id, or the decision is not in a state the call takes): the loop records it on
// the outbox record, logs it once and leaves the record final instead of retrying.
var ErrPermanent = errors.New("refused by the guard whatever the retry")

// ErrRefused is returned by Replay when the guard refuses, as of now, to reserve again what a
// promotion dead-lettered before any of it went out gave back; the error names the guardrail.
var ErrRefused = errors.New("refused by the guard")

// Replay re-queues a dead-lettered action: its failed phase starts again with fresh attempts.
// What was already delivered (the NATS message, an earlier phase) is not delivered again. A
// promotion that gave its reservations back (GivenBack) reserves them again first
// (Guard.Reacquire): refused, the record stays dead and the error wraps ErrRefused. One still to
// give them back (GiveBack: its give-back failed and waits for its retry) is refused until it has.
// A write of the replayed record that fails after Reacquire gives them back again (undoReacquire).
func (o *Outbox) Replay(ctx context.Context, decisionID string) error {
	for {
		rec, rev, err := o.read(ctx, key(decisionID))
		if err != nil {
			return fmt.Errorf("replay %q: %w", decisionID, err)
		}
		if rec.State != Dead {
			return fmt.Errorf("replay %q: state %s: %w", decisionID, rec.State, ErrNotDead)
		}
		dead := rec // as read (undoReacquire)
		if rec.Owner != "" && o.cfg.now().Before(rec.LeaseUntil) {
			// A loop is publishing its NATS end: taking the record from under it could leave that
			// end unmarked, published again later. Its claim is short.
			if err := kvretry.Sleep(ctx, 50*time.Millisecond); err != nil {
				return fmt.Errorf("replay %q: %w", decisionID, err)
			}
			continue
		}
		if o.guard != nil {
			// The loop reads the switch again before it sends any part of a start; refusing here
			// tells the operator now rather than with a cancelled record later.
			on, why, err := o.guard.Killed(ctx)
			if err != nil {
				return fmt.Errorf("replay %q: read the kill switch: %w", decisionID, err)
			}
			if on {
				return fmt.Errorf("replay %q: %w (%s): reset it first", decisionID, ErrKilled, why)
			}
		}
		if rec.GiveBack {
			// Its give-back is still to do (it failed, and waits for its retry): reserved again
			// now, the guard would find them held, and the decision log would say reserved again
			// with no release before it — then released after it, when the give-back is done.
			return fmt.Errorf("replay %q: its reservations are still being given back to the guard (a delivery loop retries it; "+
				"the hub's log says why it failed): replay it once they are", decisionID)
		}
		reacquired := !rec.GivenBack.IsZero()
		if reacquired {
			// Its reservations were given back: delivered without them, it could pass a cap or a
			// cooldown. Reserved again as of now, or not replayed.
			if o.guard == nil {
				return fmt.Errorf("replay %q: its reservations were given back to the guard, and there is no guard to reserve them again", decisionID)
			}
			if err := o.guard.Reacquire(ctx, rec.Action); err != nil {
				return fmt.Errorf("replay %q: reserve again what it gave back when it was dead-lettered: %w", decisionID, err)
			}
			rec.GivenBack, rec.Reacquired, rec.ReacquireLogged = time.Time{}, o.cfg.now(), false
		}
		now := o.cfg.now()
		rec.State, rec.Attempts, rec.FirstAt, rec.NextAt, rec.Owner, rec.LeaseUntil = Pending, 0, now, now, "", time.Time{}
		if !rec.Published && rec.Phase == EventStart && !rec.MaybeOut {
			rec.StartedAt = time.Time{} // its start never went out: it starts when it does
		}
		rec.EndDue = false // the replayed phase leads to the end, which publishes what is left of it
		_, err = o.write(ctx, key(decisionID), rec, rev)
		if isConflict(err) {
			continue // someone changed it meanwhile: look again
		}
		if err != nil && reacquired {
			err = o.undoReacquire(ctx, key(decisionID), dead, rev, rec.Reacquired, err)
		}
		if err != nil {
			return fmt.Errorf("replay %q: %w", decisionID, err)
		}
		o.log.Info("dead letter replayed", "decision", decisionID)
		return nil
	}
}

// DeadLetters lists the decision ids whose delivery gave up. A record it cannot read (other than
// one removed meanwhile: undecodable, or a read that failed) may be dead too: the error names each,
// beside the ids found.
func (o *Outbox) DeadLetters(ctx context.Context) ([]string, error) {
	lister, err := o.kv.ListKeys(ctx)
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return nil, nil
		}
		return nil, err
	}
	var ids []string
	var unread []error
	for k := range lister.Keys() {
		rec, _, err := o.read(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			continue // removed meanwhile
		}
		if err != nil {
			// Its state is unknown: it may be dead. Named, not taken as removed.
			unread = append(unread, err)
			continue
		}
		if rec.State == Dead {
			ids = append(ids, rec.Action.DecisionID)
		}
	}
	return ids, errors.Join(unread...)
}

// Sweep removes records done (or cancelled) more than retention ago (each at the revision it
// judged) and then the delete markers older than retention, and returns how many records it removed. A removed
// decision could be enqueued and delivered again, so retention must exceed how long a decider can
// still produce the same decision id (the guard's own retention and time buckets). Pending and
// dead records are never removed.
func (o *Outbox) Sweep(ctx context.Context, retention time.Duration) (int, error) {
	if retention <= 0 {
		return 0, fmt.Errorf("act sweep: retention %s must be positive", retention)
	}
	lister, err := o.kv.ListKeys(ctx)
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return 0, nil
		}
		return 0, fmt.Errorf("act sweep: %w", err)
	}
	cut := o.cfg.now().Add(-retention)
	var ks []string
	for k := range lister.Keys() {
		ks = append(ks, k)
	}
	removed := 0
	for _, k := range ks {
		rec, rev, err := o.read(ctx, k)
		if err != nil || rec.State != Done && rec.State != Cancelled || rec.GiveBack || rec.DoneAt.IsZero() || rec.DoneAt.After(cut) {
			continue
		}
		if err := o.kv.Delete(ctx, k, jetstream.LastRevision(rev)); err != nil {
			if isConflict(err) {
				continue // changed meanwhile (a replay): judged again next time
			}
			return removed, fmt.Errorf("act sweep: delete %s: %w", k, err)
		}
		removed++
	}
	if err := o.kv.PurgeDeletes(ctx, jetstream.DeleteMarkersOlderThan(retention)); err != nil {
		return removed, fmt.Errorf("act sweep: purge delete markers: %w", err)
	}
	return removed, nil
}

func (o *Outbox) read(ctx context.Context, k string) (Record, uint64, error) {
	e, err := o.kv.Get(ctx, k)
	if err != nil {
		return Record{}, 0, err
	}
	var rec Record
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return Record{}, 0, fmt.Errorf("outbox key %s: undecodable record: %w", k, err)
	}
	return rec, e.Revision(), nil
}

// write replaces the record if it is still at rev: every change is a compare-and-set, so a loop
// whose lease was taken over cannot overwrite its successor's progress.
func (o *Outbox) write(ctx context.Context, k string, rec Record, rev uint64) (uint64, error) {
	data, err := json.Marshal(rec)
	if err != nil {
		return 0, err
	}
	return o.kv.Update(ctx, k, data, rev)
}

func isConflict(err error) bool {
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch)
}
