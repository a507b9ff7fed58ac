package act

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/config"
	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// connect opens a client connection to n, closed when the test ends.
func connect(t testing.TB, n *natstest.Node) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(n.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// testConfig has channels "web" (webhook to url when not empty) and "store" (NATS only).
func testConfig(url string) Config {
	cfg := Config{
		Lease: 2 * time.Second, Poll: 20 * time.Millisecond,
		Retry:    Retry{Initial: 20 * time.Millisecond, Max: 100 * time.Millisecond, MaxAttempts: 10, MaxAge: time.Hour},
		Channels: map[string]Channel{"store": {}},
	}
	if url != "" {
		cfg.Channels["web"] = Channel{Webhook: &Webhook{URL: config.NewSecret(url), Secret: config.NewSecret(testSecret), Timeout: 500 * time.Millisecond}}
	}
	return cfg
}

func open(t *testing.T, js jetstream.JetStream, cfg Config) *Outbox {
	t.Helper()
	o, err := Open(context.Background(), js, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// run starts o's loop; the returned stop ends it, waits for it and returns its error. A loop the
// test did not stop is stopped at its end and must end without an error.
func run(t *testing.T, o *Outbox) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.Run(ctx) }()
	var once sync.Once
	var err error
	halt := func() error {
		once.Do(func() {
			cancel()
			err = <-done
		})
		return err
	}
	explicit := false
	t.Cleanup(func() {
		if explicit {
			return // the test looked at the error itself
		}
		if err := halt(); err != nil {
			t.Errorf("loop: %v", err)
		}
	})
	return func() error { explicit = true; return halt() }
}

// receiver is a webhook endpoint that checks signatures on its own (not with Sign) and counts
// the valid receipts per webhook-id. reply decides each answer (200 when nil).
type receiver struct {
	t     *testing.T
	srv   *httptest.Server
	mu    sync.Mutex
	got   map[string]int
	calls int
	bad   []string
	last  map[string]Message
	reply func(call int, id string) (status int, header http.Header, hang time.Duration)
}

func newReceiver(t *testing.T, reply func(call int, id string) (int, http.Header, time.Duration)) *receiver {
	r := &receiver{t: t, got: map[string]int{}, last: map[string]Message{}, reply: reply}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	id, ts, sig := req.Header.Get("webhook-id"), req.Header.Get("webhook-timestamp"), req.Header.Get("webhook-signature")
	r.mu.Lock()
	r.calls++
	call := r.calls
	if err := verify(testSecret, id, ts, body, sig); err != "" {
		r.bad = append(r.bad, id+": "+err)
	}
	r.mu.Unlock()
	status, hdr, hang := http.StatusOK, http.Header(nil), time.Duration(0)
	if r.reply != nil {
		status, hdr, hang = r.reply(call, id)
	}
	if hang > 0 {
		select {
		case <-req.Context().Done():
		case <-time.After(hang):
		}
		return // the client gave up: not a receipt
	}
	for k, v := range hdr {
		w.Header()[k] = v
	}
	w.WriteHeader(status)
	if status/100 == 2 {
		var m Message
		if err := json.Unmarshal(body, &m); err != nil {
			r.mu.Lock()
			r.bad = append(r.bad, id+": body: "+err.Error())
			r.mu.Unlock()
		}
		r.mu.Lock()
		r.got[id]++
		r.last[id] = m
		r.mu.Unlock()
	}
}

// verify is an independent Standard Webhooks check: it shares no code with Sign.
func verify(secret, id, ts string, body []byte, header string) string {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return "secret: " + err.Error()
	}
	if _, err := strconv.ParseInt(ts, 10, 64); err != nil {
		return "timestamp " + ts
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "." + string(body)))
	want := mac.Sum(nil)
	for _, s := range strings.Fields(header) { // the header may carry several space-separated signatures
		v, b64, ok := strings.Cut(s, ",")
		if !ok || v != "v1" {
			continue
		}
		if got, err := base64.StdEncoding.DecodeString(b64); err == nil && hmac.Equal(got, want) {
			return ""
		}
	}
	return "no valid signature in " + header
}

func (r *receiver) count(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.got[id]
}

func (r *receiver) totalCalls() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls
}

func (r *receiver) checkSigned() {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.bad) > 0 {
		r.t.Errorf("bad webhook calls: %v", r.bad)
	}
}

// streamMsgs returns the ACTIONS stream's messages by Nats-Msg-Id.
func streamMsgs(t *testing.T, js jetstream.JetStream, stream string) map[string][]Message {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]Message{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("get seq %d: %v", seq, err)
		}
		var msg Message
		if err := json.Unmarshal(m.Data, &msg); err != nil {
			t.Fatalf("seq %d: %v", seq, err)
		}
		id := m.Header.Get(jetstream.MsgIDHeader)
		if id != msg.ID {
			t.Errorf("seq %d: Nats-Msg-Id %q, body id %q", seq, id, msg.ID)
		}
		out[id] = append(out[id], msg)
	}
	return out
}

func streamCount(t *testing.T, js jetstream.JetStream, stream string) uint64 {
	t.Helper()
	s, err := js.Stream(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func waitState(t *testing.T, o *Outbox, id string, want State, phase string) Record {
	t.Helper()
	var rec Record
	testutil.WaitFor(t, 15*time.Second, id+" "+string(want)+"/"+phase, func() bool {
		r, err := o.Get(context.Background(), id)
		if err != nil {
			return false
		}
		rec = r
		return r.State == want && (phase == "" || r.Phase == phase)
	})
	return rec
}

func hold(id, channel string) Action {
	return Action{DecisionID: id, Kind: Hold, SKU: "sku-1", Site: "plant-a", Channel: channel,
		Start: time.Now(), Reason: "line L1 stopped", RuleSetVersion: "v3", Rule: "hold-when-down"}
}

func promo(id, channel string, end time.Time) Action {
	return Action{DecisionID: id, Kind: Promote, SKU: "sku-2", Site: "plant-a", Channel: channel,
		Discount: 15, Audience: "all", Start: time.Now(), End: end, RuleSetVersion: "v3", Rule: "overstock"}
}
