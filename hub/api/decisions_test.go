package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/gemba-io/gemba/hub/act"
	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/decide"
	"github.com/gemba-io/gemba/hub/decide/guard"
)

// fakeDecisions stands in for the decision room (tested against NATS in hub/decide and cmd/gemba-hub):
// here only the HTTP layer's checks are under test.
// Decision ids of the fake: one with records, one approvable, one the guard has not, one the
// caller asked for.
var (
	idKnown   = strings.Repeat("0a", 16)
	idX       = strings.Repeat("1b", 16)
	idMissing = strings.Repeat("2c", 16)
	idSelf    = strings.Repeat("3d", 16)
)

type fakeDecisions struct {
	answers []string
	kill    guard.KillSwitch
	killErr error // what Kill answers (SetKill still sets)
}

func (f *fakeDecisions) Recent(context.Context, audit.Filter) ([]audit.Record, error) {
	return nil, nil
}
func (f *fakeDecisions) RecentPage(context.Context, audit.Filter) (audit.Page, error) {
	return audit.Page{}, nil
}
func (f *fakeDecisions) History(_ context.Context, id string) ([]audit.Record, error) {
	if id == idKnown {
		return []audit.Record{{DecisionID: id, Event: audit.EventDecided}}, nil
	}
	return nil, nil
}
func (f *fakeDecisions) Delivery(context.Context, string) (*act.Record, error) { return nil, nil }
func (f *fakeDecisions) PendingPage(context.Context, uint64, int) (guard.QueuePage, error) {
	return guard.QueuePage{}, nil
}
func (f *fakeDecisions) Answer(_ context.Context, id, by, reason string, approve bool) (guard.Verdict, error) {
	if id == idMissing {
		return guard.Verdict{}, guard.ErrNotFound
	}
	if id == idSelf {
		return guard.Verdict{}, guard.ErrSelfApproval
	}
	f.answers = append(f.answers, id+" "+by)
	return guard.Verdict{DecisionID: id, Outcome: guard.Allow}, nil
}
func (f *fakeDecisions) Kill(context.Context) (guard.KillSwitch, error) { return f.kill, f.killErr }
func (f *fakeDecisions) SetKill(_ context.Context, k guard.KillSwitch) error {
	f.kill = k
	return nil
}
func (f *fakeDecisions) Rules(context.Context) (audit.Change, []audit.Change, error) {
	return audit.Change{}, nil, errors.New("unused")
}

func send(h http.Handler, method, path, token, body string) (int, string) {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w.Code, w.Body.String()
}

func TestDecisionEndpoints(t *testing.T) {
	f := &fakeDecisions{}
	h := DecisionsHandler(func() Decisions { return f }, "rd", "wr")
	cases := []struct {
		name, method, path, token, body string
		code                            int
		says                            string
	}{
		{"read without token", "GET", "/api/v1/decisions", "", "", 401, "bearer"},
		{"read", "GET", "/api/v1/decisions?limit=5", "rd", "", 200, "decisions"},
		{"bad limit", "GET", "/api/v1/decisions?limit=0", "rd", "", 400, "limit"},
		{"approvals", "GET", "/api/v1/approvals", "rd", "", 200, `"approvals": []`},
		{"approvals, bad limit", "GET", "/api/v1/approvals?limit=10001", "rd", "", 400, "limit"},
		{"approvals, bad cursor", "GET", "/api/v1/approvals?after=x", "rd", "", 400, "after"},
		{"unknown decision", "GET", "/api/v1/decisions/nope", "rd", "", 404, "no decision nope"},
		{"why", "GET", "/api/v1/decisions/" + idKnown, "rd", "", 200, idKnown},
		{"approve with the read token", "POST", "/api/v1/approvals/" + idX + "/approve", "rd", `{"by":"bob"}`, 401, "bearer"},
		{"approve without by", "POST", "/api/v1/approvals/" + idX + "/approve", "wr", `{"reason":"r"}`, 400, "by"},
		{"approve with junk", "POST", "/api/v1/approvals/" + idX + "/approve", "wr", `{"by":`, 400, "body"},
		{"approve with an unknown field", "POST", "/api/v1/approvals/" + idX + "/approve", "wr", `{"by":"bob","amount":3}`, 400, "amount"},
		{"approve too big", "POST", "/api/v1/approvals/" + idX + "/approve", "wr", `{"by":"` + strings.Repeat("b", maxBody) + `"}`, 413, "larger than"},
		{"wrong answer", "POST", "/api/v1/approvals/" + idX + "/maybe", "wr", `{"by":"bob"}`, 404, "approve"},
		{"approve missing", "POST", "/api/v1/approvals/" + idMissing + "/approve", "wr", `{"by":"bob"}`, 404, "no such decision"},
		{"approve own", "POST", "/api/v1/approvals/" + idSelf + "/approve", "wr", `{"by":"bob"}`, 403, "own request"},
		{"approve", "POST", "/api/v1/approvals/" + idX + "/approve", "wr", `{"by":"bob","reason":"ok"}`, 200, "allow"},
		{"kill without on", "PUT", "/api/v1/kill", "wr", `{"by":"ops"}`, 400, "on"},
		{"kill", "PUT", "/api/v1/kill", "wr", `{"by":"ops","on":true,"reason":"bad data"}`, 200, "bad data"},
		{"end_live without on", "PUT", "/api/v1/kill", "wr", `{"by":"ops","on":false,"end_live":true}`, 400, "end_live"},
	}
	for _, c := range cases {
		code, body := send(h, c.method, c.path, c.token, c.body)
		if code != c.code || !strings.Contains(body, c.says) {
			t.Errorf("%s: %d %s; want %d with %q", c.name, code, body, c.code, c.says)
		}
	}
	if len(f.answers) != 1 || f.answers[0] != idX+" bob" || !f.kill.On || f.kill.EndLive {
		t.Errorf("answers %v, kill %+v", f.answers, f.kill)
	}
	// end_live asks every replica's delivery loop to end the promotions running now.
	code, body := send(h, "PUT", "/api/v1/kill", "wr", `{"by":"ops","on":true,"end_live":true,"reason":"recall"}`)
	if code != 200 || !f.kill.On || !f.kill.EndLive || f.kill.By != "ops" || !strings.Contains(body, `"end_live": true`) {
		t.Errorf("kill with end_live: %d %s; switch %+v", code, body, f.kill)
	}

	// Without a write token, changes are refused whatever the request carries; without the
	// decision room, every endpoint says it is off.
	ro := DecisionsHandler(func() Decisions { return f }, "", "")
	if code, body := send(ro, "POST", "/api/v1/approvals/"+idX+"/approve", "", `{"by":"eve"}`); code != 403 || !strings.Contains(body, "write_token") {
		t.Errorf("no write token: %d %s", code, body)
	}
	off := DecisionsHandler(func() Decisions { return nil }, "", "")
	if code, body := send(off, "GET", "/api/v1/decisions", "", ""); code != 404 || !strings.Contains(body, "guard section") {
		t.Errorf("decisions off: %d %s", code, body)
	}
}

// roomErrors answers as the hub's decision room does for ids it has no record of: the decision
// log refuses an id that is not 32 lower-case hex digits, and the approver finds no record of an
// unknown one (decide.ErrNoRecord), before the guard is asked.
type roomErrors struct{ fakeDecisions }

func (f *roomErrors) History(_ context.Context, id string) ([]audit.Record, error) {
	if !audit.ValidID(id) {
		return nil, fmt.Errorf("audit: decision id %q is not 32 lower-case hex digits", id)
	}
	return nil, nil
}
func (f *roomErrors) Answer(ctx context.Context, id, _, _ string, _ bool) (guard.Verdict, error) {
	if _, err := f.History(ctx, id); err != nil {
		return guard.Verdict{}, fmt.Errorf("decision %s: %w", id, err)
	}
	return guard.Verdict{}, fmt.Errorf("decision %s: %w", id, decide.ErrNoRecord)
}

// TestUnknownDecision: a mistyped or unknown decision id is the client's mistake (404 saying so),
// not the hub being unavailable (503, which a script retries).
func TestUnknownDecision(t *testing.T) {
	h := DecisionsHandler(func() Decisions { return &roomErrors{} }, "", "wr")
	unknown := strings.Repeat("ab", 16)
	for _, c := range []struct{ name, method, path, body string }{
		{"why, not an id", "GET", "/api/v1/decisions/nope", ""},
		{"approve, not an id", "POST", "/api/v1/approvals/nope/approve", `{"by":"bob"}`},
		{"approve, unknown id", "POST", "/api/v1/approvals/" + unknown + "/approve", `{"by":"bob"}`},
		{"reject, unknown id", "POST", "/api/v1/approvals/" + unknown + "/reject", `{"by":"bob"}`},
	} {
		if code, body := send(h, c.method, c.path, "wr", c.body); code != http.StatusNotFound || !strings.Contains(body, "decision") {
			t.Errorf("%s: %d %s, want 404 naming the decision", c.name, code, strings.TrimSpace(body))
		}
	}
}

// The kill switch thrown through the API answers 200 with the switch as set even when reading it
// back fails: a 503 would tell an operator in an incident that it did not move.
func TestKillSetThoughReadBackFails(t *testing.T) {
	f := &fakeDecisions{killErr: errors.New("guard bucket: no responders")}
	h := DecisionsHandler(func() Decisions { return f }, "", "wr")
	code, body := send(h, "PUT", "/api/v1/kill", "wr", `{"by":"ops","on":true,"reason":"bad data"}`)
	if code != http.StatusOK || !strings.Contains(body, `"on": true`) || !strings.Contains(body, "bad data") || !f.kill.On {
		t.Fatalf("%d %s (switch %+v): want 200 with the switch on", code, body, f.kill)
	}
	if code, _ := send(h, "GET", "/api/v1/kill", "", ""); code != http.StatusServiceUnavailable {
		t.Fatalf("reading the switch when the guard cannot: %d, want 503", code)
	}
}

// TestChangeBodyStrict: a change's body is one JSON object and nothing else. A second object after
// the first (a client that concatenated two requests, a proxy that glued bodies) must not be read
// as the first alone: "throw the switch" followed by "reset it" is not a throw. A body over the
// limit says so (413 naming the limit), not "unexpected EOF".
func TestChangeBodyStrict(t *testing.T) {
	f := &fakeDecisions{}
	h := DecisionsHandler(func() Decisions { return f }, "", "wr")
	for _, c := range []struct{ name, method, path, body string }{
		{"kill, then a reset", "PUT", "/api/v1/kill", `{"by":"ops","on":true,"reason":"a"}{"by":"ops","on":false}`},
		{"kill, then junk", "PUT", "/api/v1/kill", `{"by":"ops","on":true} junk`},
		{"approve, then another", "POST", "/api/v1/approvals/" + idX + "/approve", `{"by":"bob"} {"by":"eve"}`},
	} {
		code, body := send(h, c.method, c.path, "wr", c.body)
		if code != http.StatusBadRequest || !strings.Contains(body, "after") {
			t.Errorf("%s: %d %s, want 400 naming the data after the object", c.name, code, strings.TrimSpace(body))
		}
	}
	if f.kill.On || len(f.answers) != 0 {
		t.Errorf("a refused body changed something: kill %+v, answers %v", f.kill, f.answers)
	}
	big := `{"by":"ops","on":true,"reason":"` + strings.Repeat("r", maxBody) + `"}`
	if code, body := send(h, "PUT", "/api/v1/kill", "wr", big); code != http.StatusRequestEntityTooLarge || !strings.Contains(body, strconv.Itoa(maxBody)) {
		t.Errorf("body of %d bytes: %d %s, want 413 naming the limit", len(big), code, strings.TrimSpace(body))
	}
	if code, body := send(h, "PUT", "/api/v1/kill", "wr", ""); code != http.StatusBadRequest || !strings.Contains(body, "empty") {
		t.Errorf("no body: %d %s, want 400 saying the body is empty", code, strings.TrimSpace(body))
	}
	// Trailing white space (a newline from curl -d @file) is fine.
	if code, body := send(h, "PUT", "/api/v1/kill", "wr", "{\"by\":\"ops\",\"on\":true}\n\n"); code != http.StatusOK {
		t.Errorf("object and a newline: %d %s", code, body)
	}
}

// TestRecentFilterValues: an outcome or mode no record can have (a typo: "fire" for "fired") is
// the client's mistake, named with the values it may take; answered 200 with nothing, it reads as
// "no promotion fired", after a scan of the whole window.
func TestRecentFilterValues(t *testing.T) {
	h := DecisionsHandler(func() Decisions { return &fakeDecisions{} }, "", "")
	for _, c := range []struct{ query, says string }{
		{"outcome=fire", "fired"},
		{"outcome=FIRED", "held_out"},
		{"mode=live", "canary"},
	} {
		if code, body := send(h, "GET", "/api/v1/decisions?"+c.query, "", ""); code != http.StatusBadRequest || !strings.Contains(body, c.says) {
			t.Errorf("%s: %d %s, want 400 naming %q", c.query, code, strings.TrimSpace(body), c.says)
		}
	}
	for _, q := range []string{"outcome=fired", "outcome=held_out", "outcome=awaiting_approval", "mode=shadow", "mode=active&outcome=suppressed", "outcome="} {
		if code, body := send(h, "GET", "/api/v1/decisions?"+q, "", ""); code != http.StatusOK {
			t.Errorf("%s: %d %s, want 200", q, code, strings.TrimSpace(body))
		}
	}
}

// hangUp is a decision room whose kill switch write fails once the request's context is done, as
// the guard's KV put does.
type hangUp struct{ fakeDecisions }

func (f *hangUp) SetKill(ctx context.Context, k guard.KillSwitch) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return f.fakeDecisions.SetKill(ctx, k)
}

// TestKillOutlivesTheClient: a kill switch thrown through the API is thrown even when the client
// goes away before the answer (curl --max-time, a proxy's timeout, a laptop closed while the guard
// retries through a leader election), as an approval is: the operator's last word is that it is
// thrown, and nobody is told it was not.
func TestKillOutlivesTheClient(t *testing.T) {
	f := &hangUp{}
	h := DecisionsHandler(func() Decisions { return f }, "", "wr")
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the client is gone by the time the guard is asked
	req := httptest.NewRequestWithContext(ctx, "PUT", "/api/v1/kill", strings.NewReader(`{"by":"ops","on":true,"reason":"recall"}`))
	req.Header.Set("Authorization", "Bearer wr")
	h.ServeHTTP(httptest.NewRecorder(), req)
	if !f.kill.On || f.kill.By != "ops" {
		t.Fatalf("kill switch after the client went away: %+v, want thrown by ops", f.kill)
	}
}

// TestWriters: with writers, a change is made as the writer whose token it carries: by may be
// left out, another name is refused (400, nothing changes), and without the shared token only a
// writer's token is taken. The shared token's changes are marked as not verified.
func TestWriters(t *testing.T) {
	f := &fakeDecisions{}
	h := DecisionsHandler(func() Decisions { return f }, "", "", Writer{Name: "alice", Token: "ta"}, Writer{Name: "bob", Token: "tb"})
	approve := "/api/v1/approvals/" + idX + "/approve"
	if code, body := send(h, "POST", approve, "ta", `{"by":"bob"}`); code != 400 || !strings.Contains(body, "by must be the token's name, alice") {
		t.Errorf("alice as bob: %d %s", code, body)
	}
	if code, body := send(h, "PUT", "/api/v1/kill", "tb", `{"by":"ops","on":true}`); code != 400 || !strings.Contains(body, "bob") {
		t.Errorf("bob as ops: %d %s", code, body)
	}
	if code, body := send(h, "POST", approve, "wr", `{"by":"bob"}`); code != 401 {
		t.Errorf("a token no writer has: %d %s", code, body)
	}
	if len(f.answers) != 0 || f.kill.On {
		t.Fatalf("refused changes changed something: answers %v, kill %+v", f.answers, f.kill)
	}
	if code, body := send(h, "POST", approve, "tb", `{"reason":"ok"}`); code != 200 {
		t.Errorf("bob: %d %s", code, body)
	}
	if code, body := send(h, "POST", approve, "ta", `{"by":" alice "}`); code != 200 {
		t.Errorf("alice by her name: %d %s", code, body)
	}
	if code, body := send(h, "PUT", "/api/v1/kill", "tb", `{"on":true,"reason":"bad data"}`); code != 200 || f.kill.By != "bob" || f.kill.Reason != "bad data" {
		t.Errorf("bob's throw: %d %s, switch %+v", code, body, f.kill)
	}
	if want := []string{idX + " bob", idX + " alice"}; !slices.Equal(f.answers, want) {
		t.Errorf("answers %v, want %v", f.answers, want)
	}
	// Beside writers, the shared token: the body's by, its reason marked.
	both := DecisionsHandler(func() Decisions { return f }, "", "wr", Writer{Name: "alice", Token: "ta"})
	if code, body := send(both, "PUT", "/api/v1/kill", "wr", `{"by":"ops","on":false,"reason":"fixed"}`); code != 200 || f.kill.By != "ops" ||
		f.kill.Reason != Unverified+" fixed" {
		t.Errorf("shared token's reset: %d %s, switch %+v", code, body, f.kill)
	}
	none := DecisionsHandler(func() Decisions { return f }, "", "")
	if code, body := send(none, "POST", approve, "ta", `{}`); code != 403 || !strings.Contains(body, "http.writers") {
		t.Errorf("no writers: %d %s", code, body)
	}
}
