package act

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gemba-io/gemba/config"
	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

// The Standard Webhooks spec's published test vector, checked against Sign and against the
// receiver's own verification (which shares no code with Sign).
func TestSignSpecVector(t *testing.T) {
	const (
		id   = "msg_p5jXN8AQM9LWM0D4loKWxJek"
		ts   = int64(1614265330)
		body = `{"test": 2432232314}`
		want = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
	)
	key, err := decodeSecret(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	if got := Sign(key, id, ts, []byte(body)); got != want {
		t.Errorf("Sign = %s, want %s", got, want)
	}
	if msg := verify(testSecret, id, "1614265330", []byte(body), want); msg != "" {
		t.Errorf("independent verify of the vector: %s", msg)
	}
	if msg := verify(testSecret, id, "1614265330", []byte(body+" "), want); msg == "" {
		t.Error("independent verify accepts a changed body")
	}
	if got := Sign(key, id, ts+1, []byte(body)); got == want {
		t.Error("signature does not cover the timestamp")
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 12, 4, 20, 0, 0, 0, time.UTC)
	cases := map[string]time.Duration{
		"":                              0,
		"7":                             7 * time.Second,
		"-1":                            0,
		"soon":                          0,
		"Fri, 04 Dec 2026 20:01:00 GMT": time.Minute,
		"Fri, 04 Dec 2026 19:00:00 GMT": 0, // in the past
		// Absurd waits are bounded as a far date is (the longest Duration, beyond any max_age, so
		// the record is dead-lettered), never wrapped round into a short or negative wait.
		"Fri, 31 Dec 9999 23:59:59 GMT": time.Duration(math.MaxInt64),
		"9999999999":                    time.Duration(math.MaxInt64),
		"18446744074":                   time.Duration(math.MaxInt64),
	}
	for v, want := range cases {
		if got := retryAfter(v, now); got != want {
			t.Errorf("Retry-After %q: %s, want %s", v, got, want)
		}
	}
}

func TestBackoffGrowsWithinBounds(t *testing.T) {
	o := &Outbox{cfg: Config{Retry: Retry{Initial: 100 * time.Millisecond, Max: time.Second}}}
	for n, base := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 3: 400 * time.Millisecond, 5: time.Second, 40: time.Second} {
		for range 50 {
			d := o.backoff(n)
			if d < base/2 || d > base {
				t.Fatalf("attempt %d: backoff %s outside [%s, %s]", n, d, base/2, base)
			}
		}
	}
}

// A receiver that fails twice with 500 and once by timing out: retried until it answers, the
// attempts counted, the action published on NATS once.
func TestWebhookRetriedUntilDelivered(t *testing.T) {
	n := natstest.JetStream(t)
	rcv := newReceiver(t, func(call int, _ string) (int, http.Header, time.Duration) {
		switch call {
		case 1, 2:
			return http.StatusInternalServerError, nil, 0
		case 3:
			return 0, nil, 5 * time.Second // longer than the client's timeout
		}
		return http.StatusNoContent, nil, 0
	})
	_, js := connect(t, n)
	o := open(t, js, testConfig(rcv.srv.URL))
	run(t, o)
	a := hold("rs3:hold:sku-1:web:h20", "web")
	if _, err := o.Enqueue(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	rec := waitState(t, o, a.DecisionID, Done, EventStart)
	if rcv.totalCalls() != 4 || rcv.count(a.DecisionID) != 1 {
		t.Errorf("%d calls, %d receipts; want 4 calls, 1 receipt", rcv.totalCalls(), rcv.count(a.DecisionID))
	}
	if rec.Attempts != 3 || !strings.Contains(rec.LastError, "deadline") {
		t.Errorf("record %+v: want 3 failed attempts, the last a timeout", rec)
	}
	if c := streamCount(t, js, "ACTIONS"); c != 1 {
		t.Errorf("stream holds %d messages; retries must not publish again", c)
	}
	rcv.checkSigned()
}

// 429 and 503 with Retry-After: the next attempt waits that long, not the (shorter) backoff.
func TestWebhookRetryAfterHonoured(t *testing.T) {
	for _, status := range []int{http.StatusTooManyRequests, http.StatusServiceUnavailable} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			n := natstest.JetStream(t)
			rcv := newReceiver(t, func(int, string) (int, http.Header, time.Duration) {
				return status, http.Header{"Retry-After": {"1800"}}, 0
			})
			_, js := connect(t, n)
			o := open(t, js, testConfig(rcv.srv.URL))
			run(t, o)
			a := hold("rs3:hold:sku-1:web:h21", "web")
			before := time.Now()
			if _, err := o.Enqueue(context.Background(), a); err != nil {
				t.Fatal(err)
			}
			var rec Record
			testutil.WaitFor(t, 10*time.Second, "a failed attempt", func() bool {
				rec, _ = o.Get(context.Background(), a.DecisionID)
				return rec.Attempts == 1 && rec.Owner == ""
			})
			if rec.State != Pending || rec.NextAt.Before(before.Add(30*time.Minute)) {
				t.Errorf("record %+v: want pending with the next attempt half an hour away (within max_age 1h)", rec)
			}
			if c := rcv.totalCalls(); c != 1 {
				t.Errorf("%d calls; the receiver asked for half an hour", c)
			}
		})
	}
}

// 410 Gone dead-letters at once; Replay re-queues it and the webhook is delivered without
// publishing on NATS again.
func TestWebhookGoneThenReplayed(t *testing.T) {
	n := natstest.JetStream(t)
	gone := true
	rcv := newReceiver(t, func(int, string) (int, http.Header, time.Duration) {
		if gone {
			return http.StatusGone, nil, 0
		}
		return http.StatusOK, nil, 0
	})
	_, js := connect(t, n)
	o := open(t, js, testConfig(rcv.srv.URL))
	run(t, o)
	ctx := context.Background()
	a := hold("rs3:hold:sku-1:web:h22", "web")
	if _, err := o.Enqueue(ctx, a); err != nil {
		t.Fatal(err)
	}
	rec := waitState(t, o, a.DecisionID, Dead, EventStart)
	if rec.Attempts != 1 || !strings.Contains(rec.LastError, "410") || !rec.Published {
		t.Errorf("dead letter %+v: want one attempt, 410, published on NATS", rec)
	}
	ids, err := o.DeadLetters(ctx)
	if err != nil || len(ids) != 1 || ids[0] != a.DecisionID {
		t.Errorf("dead letters %v, %v", ids, err)
	}
	rcv.mu.Lock()
	gone = false
	rcv.mu.Unlock()
	if err := o.Replay(ctx, a.DecisionID); err != nil {
		t.Fatal(err)
	}
	waitState(t, o, a.DecisionID, Done, EventStart)
	if rcv.count(a.DecisionID) != 1 || rcv.totalCalls() != 2 {
		t.Errorf("%d receipts in %d calls after replay", rcv.count(a.DecisionID), rcv.totalCalls())
	}
	if c := streamCount(t, js, "ACTIONS"); c != 1 {
		t.Errorf("stream holds %d messages after replay, want 1", c)
	}
	if err := o.Replay(ctx, a.DecisionID); !errors.Is(err, ErrNotDead) {
		t.Errorf("replay of a delivered action: %v", err)
	}
	if err := o.Replay(ctx, "no-such-decision"); err == nil || !strings.Contains(err.Error(), "no-such-decision") {
		t.Errorf("replay of an unknown decision: %v", err)
	}
	rcv.checkSigned()
}

// A receiver that always fails: dead-lettered after max_attempts calls, or earlier once the next
// attempt would come after max_age.
func TestWebhookDeadLetteredAfterLimits(t *testing.T) {
	n := natstest.JetStream(t)
	rcv := newReceiver(t, func(int, string) (int, http.Header, time.Duration) {
		return http.StatusBadGateway, nil, 0
	})
	_, js := connect(t, n)
	cfg := testConfig(rcv.srv.URL)
	cfg.Retry.MaxAttempts = 3
	o := open(t, js, cfg)
	run(t, o)
	a := hold("rs3:hold:sku-1:web:h23", "web")
	if _, err := o.Enqueue(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	rec := waitState(t, o, a.DecisionID, Dead, EventStart)
	if rec.Attempts != 3 || rcv.totalCalls() != 3 || !strings.Contains(rec.LastError, "3 attempts") {
		t.Errorf("record %+v after %d calls", rec, rcv.totalCalls())
	}

	cfg = testConfig(rcv.srv.URL)
	cfg.Bucket, cfg.Stream = "age_outbox", "AGE"
	cfg.Channels = map[string]Channel{"web2": {Webhook: cfg.Channels["web"].Webhook}}
	cfg.Retry.MaxAge = 30 * time.Millisecond // the first backoff (10..20 ms) may fit; the later ones do not
	o2 := open(t, js, cfg)
	run(t, o2)
	b := hold("rs3:hold:sku-1:web2:h23", "web2")
	if _, err := o2.Enqueue(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	rec = waitState(t, o2, b.DecisionID, Dead, EventStart)
	if rec.Attempts >= 10 || !strings.Contains(rec.LastError, "older than") {
		t.Errorf("record %+v: want dead by age before max_attempts", rec)
	}
	rcv.checkSigned()
}

// A webhook that hangs does not hold up the other channels: however many of its calls are due,
// they leave a worker to the rest.
func TestHangingWebhookLeavesAWorker(t *testing.T) {
	n := natstest.JetStream(t)
	rcv := newReceiver(t, func(int, string) (int, http.Header, time.Duration) {
		return 0, nil, 3 * time.Minute // until the client gives up (the loop's stop ends it)
	})
	_, js := connect(t, n)
	cfg := testConfig(rcv.srv.URL)
	cfg.Lease, cfg.Workers = 4*time.Minute, 2
	cfg.Channels["web"].Webhook.Timeout = 2 * time.Minute
	o := open(t, js, cfg)
	run(t, o)
	ctx := context.Background()
	for i := range 3 {
		if _, err := o.Enqueue(ctx, hold(fmt.Sprintf("rs3:hold:sku-%d:web:h26", i), "web")); err != nil {
			t.Fatal(err)
		}
	}
	testutil.WaitFor(t, 10*time.Second, "a call hanging", func() bool { return rcv.totalCalls() >= 1 })
	a := hold("rs3:hold:sku-9:store:h26", "store")
	if _, err := o.Enqueue(ctx, a); err != nil {
		t.Fatal(err)
	}
	waitState(t, o, a.DecisionID, Done, EventStart)
	if c := rcv.totalCalls(); c != 1 {
		t.Errorf("%d calls to the hanging webhook at once; want 1 of the 2 workers", c)
	}
}

// A webhook URL often carries the receiver's token (in its path, query or user info): a failed call
// names the webhook by scheme and host only, in the record's last error as in the logs, and the
// effective config shows the URL redacted.
func TestWebhookURLNeverShown(t *testing.T) {
	n := natstest.JetStream(t)
	rcv := newReceiver(t, func(int, string) (int, http.Header, time.Duration) {
		return http.StatusInternalServerError, nil, 0
	})
	_, js := connect(t, n)
	u, err := url.Parse(rcv.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	withToken := "http://hook:tok-user-pw@" + u.Host + "/services/tok-path-1234?token=tok-query-5678"
	cfg := testConfig(withToken)
	cfg.Retry.MaxAttempts = 2
	// A second channel whose receiver is not there: the client's own error repeats the URL.
	dead := testutil.FreePort(t)
	cfg.Channels["gone"] = Channel{Webhook: &Webhook{URL: config.NewSecret(fmt.Sprintf("http://127.0.0.1:%d/hooks/tok-dead-9999?sig=tok-dead-q", dead)),
		Secret: config.NewSecret(testSecret), Timeout: 500 * time.Millisecond}}
	logs := &lockedBuffer{}
	o, err := Open(context.Background(), js, cfg, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	run(t, o)
	a, b := hold("rs3:hold:sku-1:web:h1", "web"), hold("rs3:hold:sku-1:gone:h1", "gone")
	for _, x := range []Action{a, b} {
		if _, err := o.Enqueue(context.Background(), x); err != nil {
			t.Fatal(err)
		}
	}
	for _, x := range []Action{a, b} {
		rec := waitState(t, o, x.DecisionID, Dead, EventStart)
		if strings.Contains(rec.LastError, "tok-") || !strings.Contains(rec.LastError, "http://") {
			t.Errorf("last error of %s: %q, want the scheme and host and no token", x.Channel, rec.LastError)
		}
	}
	if strings.Contains(logs.String(), "tok-") || !strings.Contains(logs.String(), "dead-lettered") {
		t.Errorf("a webhook URL's token in the logs:\n%s", logs.String())
	}
	printed, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(printed), "tok-") {
		t.Errorf("the effective config shows a webhook URL: %s", printed)
	}
}

// lockedBuffer is a log destination the loop's goroutines may share.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
