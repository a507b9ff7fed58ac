package act

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub/decide/guard"
	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

// A promotion whose start webhook is dead-lettered (410) after its NATS start went out still ends
// on NATS at its end: subscribers of the stream never see a promotion that does not end. A replay
// then gives the webhook its start and end, and NATS nothing more.
func TestGoneStartStillEndsOnNATS(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := connect(t, n)
	ctx := context.Background()
	var gone atomic.Bool
	gone.Store(true)
	recv := newReceiver(t, func(int, string) (int, http.Header, time.Duration) {
		if gone.Load() {
			return http.StatusGone, nil, 0
		}
		return http.StatusOK, nil, 0
	})
	o := open(t, js, testConfig(recv.srv.URL))
	run(t, o)
	a := promo("dec-gone-end", "web", time.Now().Add(2*time.Second))
	if _, err := o.Enqueue(ctx, a); err != nil {
		t.Fatal(err)
	}
	waitState(t, o, a.DecisionID, Dead, EventStart)
	testutil.WaitFor(t, 15*time.Second, "the NATS end of the dead-lettered promotion", func() bool {
		return len(streamMsgs(t, js, "ACTIONS")[a.DecisionID+":end"]) == 1
	})
	rec, err := o.Get(ctx, a.DecisionID)
	if err != nil || rec.State != Dead || rec.Phase != EventStart || !strings.Contains(rec.LastError, "410") {
		t.Fatalf("after the NATS end: %v %+v, want still dead in its start (410)", err, rec)
	}
	gone.Store(false)
	if err := o.Replay(ctx, a.DecisionID); err != nil {
		t.Fatal(err)
	}
	waitState(t, o, a.DecisionID, Done, EventEnd)
	msgs := streamMsgs(t, js, "ACTIONS")
	if len(msgs) != 2 || len(msgs[a.DecisionID]) != 1 || len(msgs[a.DecisionID+":end"]) != 1 {
		t.Errorf("stream: %v, want the start and the end once each", msgs)
	}
	if recv.count(a.DecisionID) != 1 || recv.count(a.DecisionID+":end") != 1 {
		t.Errorf("webhook receipts %v, want the start and the end once each after the replay", recv.got)
	}
	recv.checkSigned()
}

// Publishes that can never succeed are dead-lettered at the first attempt, with an error naming
// the decision and the cause: a message larger than the stream takes, and a subject the stream
// no longer takes. Before, they were retried forever.
func TestPermanentPublishErrorsDeadLettered(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := connect(t, n)
	ctx := context.Background()
	o := open(t, js, testConfig(""))
	run(t, o)
	update := func(change func(*jetstream.StreamConfig)) {
		t.Helper()
		s, err := js.Stream(ctx, "ACTIONS")
		if err != nil {
			t.Fatal(err)
		}
		c := s.CachedInfo().Config
		change(&c)
		if _, err := js.UpdateStream(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	update(func(c *jetstream.StreamConfig) { c.MaxMsgSize = 64 })
	big := hold("dec-too-big", "store")
	if _, err := o.Enqueue(ctx, big); err != nil {
		t.Fatal(err)
	}
	rec := waitState(t, o, big.DecisionID, Dead, EventStart)
	if rec.Attempts != 1 || rec.Published || !strings.Contains(rec.LastError, big.DecisionID) || !strings.Contains(rec.LastError, "exceeds maximum") {
		t.Errorf("too big: %+v", rec)
	}
	update(func(c *jetstream.StreamConfig) {
		c.MaxMsgSize = -1
		c.Subjects = []string{"gemba.actions.promotions.store"} // holds on store are no longer taken
	})
	lost := hold("dec-no-subject", "store")
	if _, err := o.Enqueue(ctx, lost); err != nil {
		t.Fatal(err)
	}
	rec = waitState(t, o, lost.DecisionID, Dead, EventStart)
	if rec.Attempts != 1 || rec.Published || !strings.Contains(rec.LastError, lost.DecisionID) ||
		!strings.Contains(rec.LastError, "does not take gemba.actions.holds.store") {
		t.Errorf("no subject: %+v", rec)
	}
	if c := streamCount(t, js, "ACTIONS"); c != 0 {
		t.Errorf("%d messages on the stream", c)
	}
}

// A promotion whose channel leaves the config while it runs (its start delivered on NATS and to
// the webhook) is dead-lettered when its end is due — nowhere to call — but its NATS end still
// goes out: subscribers of the stream saw it start.
func TestChannelGoneBeforeEndStillEndsOnNATS(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := connect(t, n)
	ctx := context.Background()
	recv := newReceiver(t, func(int, string) (int, http.Header, time.Duration) { return http.StatusOK, nil, 0 })
	o := open(t, js, testConfig(recv.srv.URL))
	stop := run(t, o)
	a := promo("dec-channel-gone", "web", time.Now().Add(2*time.Second))
	if _, err := o.Enqueue(ctx, a); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 15*time.Second, "the start delivered", func() bool {
		rec, err := o.Get(ctx, a.DecisionID)
		return err == nil && rec.Phase == EventEnd && recv.count(a.DecisionID) == 1
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	o2 := open(t, js, testConfig("")) // the web channel is gone from the config
	run(t, o2)
	waitState(t, o2, a.DecisionID, Dead, EventEnd)
	testutil.WaitFor(t, 15*time.Second, "the NATS end of the promotion whose channel went away", func() bool {
		return len(streamMsgs(t, js, "ACTIONS")[a.DecisionID+":end"]) == 1
	})
}

// What a promotion dead-lettered in its start reserved in the guard: given back (once) when none of
// it went out — here its channel left the config before its start — and kept when its NATS start
// went out (a 410 from the webhook after it): it ran, on one channel at least.
func TestDeadLetterGivesBackOnlyWhenNothingWentOut(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := connect(t, n)
	ctx := context.Background()
	kg, allow := guarded(t, js)
	recv := newReceiver(t, func(int, string) (int, http.Header, time.Duration) { return http.StatusGone, nil, 0 })
	o := open(t, js, testConfig(recv.srv.URL))
	o.SetGuard(kg)
	stop := run(t, o)
	ran := allow("ran", "sku-1", "web", Promote)
	if _, err := o.Enqueue(ctx, ran); err != nil {
		t.Fatal(err)
	}
	rec := waitState(t, o, ran.DecisionID, Dead, EventStart)
	if !rec.Published || rec.GiveBack || !rec.GivenBack.IsZero() {
		t.Errorf("dead after its NATS start: %+v, want its reservations kept", rec)
	}

	// Enqueued by a replica that has the web channel, delivered by one that no longer has it.
	o2 := open(t, js, testConfig(""))
	o2.SetGuard(kg)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	never := allow("never", "sku-2", "web", Promote)
	if _, err := o.Enqueue(ctx, never); err != nil {
		t.Fatal(err)
	}
	run(t, o2)
	testutil.WaitFor(t, 15*time.Second, "the reservations of the promotion that never ran given back", func() bool {
		r, err := o2.Get(ctx, never.DecisionID)
		return err == nil && r.State == Dead && !r.GivenBack.IsZero() && !r.GiveBack
	})
	for _, a := range []Action{ran, never} {
		v, err := kg.g.Check(ctx, guard.Proposal{ID: a.DecisionID, RuleVersion: "v3", Rule: a.Rule, SKU: a.SKU, Site: a.Site,
			Channel: a.Channel, Kind: guard.Promote, Discount: 15, Duration: guard.Duration(time.Hour), Time: a.Start})
		want := guard.Allow
		if a.DecisionID == never.DecisionID {
			want = guard.Released
		}
		if err != nil || v.Outcome != want {
			t.Errorf("%s: decision %s %v, want %s", a.Rule, v.Outcome, err, want)
		}
	}
}

// A promotion whose NATS start may have gone out unmarked (its loop stopped after the publish,
// before the mark: maybe_out) and which is then dead-lettered before it is known to have gone out
// (here its channel left the config of the loop that took it over) keeps what it reserved, as the
// expiry path keeps it: its start may be on the stream, so it may have acted. Given back, its budget
// and daily count could be spent twice.
func TestMaybeOutDeadLetterKeepsReservations(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := connect(t, n)
	ctx := context.Background()
	kg, allow := guarded(t, js)
	o1 := open(t, js, named(testConfig("http://127.0.0.1:1"), "loop-1"))
	o1.SetGuard(kg)
	crashed := make(chan struct{})
	o1.afterPublish = func(string) error {
		close(crashed)
		return errors.New("crashed after the start's publish")
	}
	stop1 := run(t, o1)
	a := allow("overstock", "sku-2", "web", Promote)
	if _, err := o1.Enqueue(ctx, a); err != nil {
		t.Fatal(err)
	}
	<-crashed
	if err := stop1(); err != nil {
		t.Fatal(err)
	}
	o2 := open(t, js, named(testConfig(""), "loop-2")) // the web channel is gone from its config
	o2.SetGuard(kg)
	run(t, o2)
	var rec Record
	testutil.WaitFor(t, 15*time.Second, "the record dead and settled", func() bool {
		r, err := o2.Get(ctx, a.DecisionID)
		rec = r
		return err == nil && r.State == Dead && !r.GiveBack
	})
	if !rec.MaybeOut || !rec.GivenBack.IsZero() {
		t.Errorf("record %+v: want maybe_out, its reservations kept (not given back)", rec)
	}
	if msgs := streamMsgs(t, js, "ACTIONS"); len(msgs[a.DecisionID]) != 1 {
		t.Errorf("stream %v: want its start (sent before the stop) once", msgs)
	}
	if ids := allowedIDs(t, kg.g); !slices.Contains(ids, a.DecisionID) {
		t.Errorf("allowed in the guard: %v, want %s (its start may be out: its reservations kept)", ids, a.DecisionID)
	}
}

// logGuard is killGuard with the decision log's released and reacquired records kept in order
// (what DeliveryGuard writes), and a give-back that fails while failDead is set (the log or the
// guard not answering).
type logGuard struct {
	*killGuard
	failDead atomic.Bool
	mu       sync.Mutex
	events   []string
}

func (l *logGuard) DeadLettered(ctx context.Context, a Action, why string) error {
	if l.failDead.Load() {
		return errors.New("decision log not answering")
	}
	if err := l.killGuard.DeadLettered(ctx, a, why); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if n := len(l.events); n == 0 || l.events[n-1] != "released" { // deduplicated, as on the log
		l.events = append(l.events, "released")
	}
	return nil
}

func (l *logGuard) Reacquired(context.Context, Action, time.Time) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n := len(l.events); n == 0 || l.events[n-1] != "reacquired" {
		l.events = append(l.events, "reacquired")
	}
	return nil
}

func (l *logGuard) log() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.events, " ")
}

// A replay of a dead letter whose reservations are still to be given back (the give-back failed
// and waits for its retry) is refused until they are: replayed then, the guard still holds them
// and the replay's "reserved again" would stand on the decision log with no release before it
// (and the release, never recorded, would leave the KPIs' order of releases and reservations
// again one step behind). Once given back, the replay reserves again and the log says released,
// then reacquired.
func TestReplayWhileGivingBackRefused(t *testing.T) {
	n := natstest.JetStream(t)
	_, js := connect(t, n)
	ctx := context.Background()
	kg, allow := guarded(t, js)
	lg := &logGuard{killGuard: kg}
	lg.failDead.Store(true)
	o1 := open(t, js, testConfig("http://127.0.0.1:1"))
	o := open(t, js, testConfig("")) // the web channel is gone from the delivering loop's config
	o.SetGuard(lg)
	run(t, o)
	a := allow("overstock", "sku-2", "web", Promote)
	if _, err := o1.Enqueue(ctx, a); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 15*time.Second, "dead, its give-back failing", func() bool {
		r, err := o.Get(ctx, a.DecisionID)
		return err == nil && r.State == Dead && r.GiveBack && strings.Contains(r.LastError, "no longer configured")
	})
	err := o.Replay(ctx, a.DecisionID)
	lg.failDead.Store(false)
	if err == nil || !strings.Contains(err.Error(), "still being given back") {
		t.Errorf("replay while its reservations were still to be given back: %v, want it refused, saying why", err)
	}
	testutil.WaitFor(t, 15*time.Second, "dead and given back", func() bool {
		r, err := o.Get(ctx, a.DecisionID)
		return err == nil && r.State == Dead && !r.GiveBack && !r.GivenBack.IsZero()
	})
	if got := lg.log(); !strings.HasPrefix(got, "released") {
		t.Fatalf("decision log %q: want released first (no reacquired with no release before it)", got)
	}
	if err := o.Replay(ctx, a.DecisionID); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 15*time.Second, "released, reacquired, released again", func() bool {
		return lg.log() == "released reacquired released"
	})
}
