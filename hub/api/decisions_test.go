package api

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gemba-io/gemba/hub/act"
	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/decide/guard"
)

// fakeDecisions stands in for the decision room (tested against NATS in hub/decide and cmd/gemba-hub):
// here only the HTTP layer's checks are under test.
type fakeDecisions struct {
	answers []string
	kill    guard.KillSwitch
}

func (f *fakeDecisions) Recent(context.Context, audit.Filter) ([]audit.Record, error) {
	return nil, nil
}
func (f *fakeDecisions) History(_ context.Context, id string) ([]audit.Record, error) {
	if id == "known" {
		return []audit.Record{{DecisionID: id, Event: audit.EventDecided}}, nil
	}
	return nil, nil
}
func (f *fakeDecisions) Delivery(context.Context, string) (*act.Record, error) { return nil, nil }
func (f *fakeDecisions) Pending(context.Context) ([]guard.Request, error)      { return nil, nil }
func (f *fakeDecisions) Answer(_ context.Context, id, by, reason string, approve bool) (guard.Verdict, error) {
	if id == "missing" {
		return guard.Verdict{}, guard.ErrNotFound
	}
	if id == "self" {
		return guard.Verdict{}, guard.ErrSelfApproval
	}
	f.answers = append(f.answers, id+" "+by)
	return guard.Verdict{DecisionID: id, Outcome: guard.Allow}, nil
}
func (f *fakeDecisions) Kill(context.Context) (guard.KillSwitch, error) { return f.kill, nil }
func (f *fakeDecisions) SetKill(_ context.Context, on bool, by, reason string) error {
	f.kill = guard.KillSwitch{On: on, By: by, Reason: reason}
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
		{"unknown decision", "GET", "/api/v1/decisions/nope", "rd", "", 404, "no decision nope"},
		{"why", "GET", "/api/v1/decisions/known", "rd", "", 200, "known"},
		{"approve with the read token", "POST", "/api/v1/approvals/x/approve", "rd", `{"by":"bob"}`, 401, "bearer"},
		{"approve without by", "POST", "/api/v1/approvals/x/approve", "wr", `{"reason":"r"}`, 400, "by"},
		{"approve with junk", "POST", "/api/v1/approvals/x/approve", "wr", `{"by":`, 400, "body"},
		{"approve with an unknown field", "POST", "/api/v1/approvals/x/approve", "wr", `{"by":"bob","amount":3}`, 400, "amount"},
		{"approve too big", "POST", "/api/v1/approvals/x/approve", "wr", `{"by":"` + strings.Repeat("b", maxBody) + `"}`, 400, "body"},
		{"wrong answer", "POST", "/api/v1/approvals/x/maybe", "wr", `{"by":"bob"}`, 404, "approve"},
		{"approve missing", "POST", "/api/v1/approvals/missing/approve", "wr", `{"by":"bob"}`, 404, "no such decision"},
		{"approve own", "POST", "/api/v1/approvals/self/approve", "wr", `{"by":"bob"}`, 403, "own request"},
		{"approve", "POST", "/api/v1/approvals/x/approve", "wr", `{"by":"bob","reason":"ok"}`, 200, "allow"},
		{"kill without on", "PUT", "/api/v1/kill", "wr", `{"by":"ops"}`, 400, "on"},
		{"kill", "PUT", "/api/v1/kill", "wr", `{"by":"ops","on":true,"reason":"bad data"}`, 200, "bad data"},
	}
	for _, c := range cases {
		code, body := send(h, c.method, c.path, c.token, c.body)
		if code != c.code || !strings.Contains(body, c.says) {
			t.Errorf("%s: %d %s; want %d with %q", c.name, code, body, c.code, c.says)
		}
	}
	if len(f.answers) != 1 || f.answers[0] != "x bob" || !f.kill.On {
		t.Errorf("answers %v, kill %+v", f.answers, f.kill)
	}

	// Without a write token, changes are refused whatever the request carries; without the
	// decision room, every endpoint says it is off.
	ro := DecisionsHandler(func() Decisions { return f }, "", "")
	if code, body := send(ro, "POST", "/api/v1/approvals/x/approve", "", `{"by":"eve"}`); code != 403 || !strings.Contains(body, "write_token") {
		t.Errorf("no write token: %d %s", code, body)
	}
	off := DecisionsHandler(func() Decisions { return nil }, "", "")
	if code, body := send(off, "GET", "/api/v1/decisions", "", ""); code != 404 || !strings.Contains(body, "guard section") {
		t.Errorf("decisions off: %d %s", code, body)
	}
}
