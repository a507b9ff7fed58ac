package console

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// A link's ?msg= is not rendered: only the console's own result of a change is shown, once.
func TestMessageOnlyFromTheConsole(t *testing.T) {
	e := newEnv(t, nil)
	fr := &fakeRules{}
	e.c.src.Rules = func() Rules { return fr }
	sc, tok := e.login(t, "root", "admin-pw")
	lure := "Session expired: call 555-0100 and read out your password"
	w := e.do("GET", "/console/approvals?msg="+url.QueryEscape(lure), nil, []*http.Cookie{sc}, nil)
	if w.Code != http.StatusOK || strings.Contains(w.Body.String(), "555-0100") {
		t.Fatalf("a link's text rendered on the page: %d", w.Code)
	}
	w = e.do("POST", "/console/rules/activate", url.Values{"version": {"abcdef12"}, "why": {"go"}, "csrf": {tok}}, []*http.Cookie{sc}, nil)
	loc := w.Header().Get("Location")
	if w.Code != http.StatusSeeOther || loc != "/console/rules" {
		t.Fatalf("activate: %d to %q, want 303 to /console/rules", w.Code, loc)
	}
	w = e.do("GET", loc, nil, []*http.Cookie{sc}, nil)
	if !strings.Contains(w.Body.String(), `id="msg">change #`) {
		t.Fatalf("the change's result is not shown after the redirect: %s", w.Body.String())
	}
	w = e.do("GET", loc, nil, []*http.Cookie{sc}, nil)
	if strings.Contains(w.Body.String(), `id="msg"`) {
		t.Errorf("the change's result shown again on the next page")
	}
	// Another user's session does not see it.
	sv, _ := e.login(t, "vera", "viewer-pw")
	e.do("POST", "/console/rules/activate", url.Values{"version": {"abcdef12"}, "why": {"again"}, "csrf": {tok}}, []*http.Cookie{sc}, nil)
	if w = e.do("GET", "/console/rules", nil, []*http.Cookie{sv}, nil); strings.Contains(w.Body.String(), `id="msg"`) {
		t.Errorf("root's result shown to vera")
	}
}

// A rules change given both a stored version and a pasted file is refused: which one was meant?
func TestRulesChangeVersionAndFileRefused(t *testing.T) {
	e := newEnv(t, nil)
	fr := &fakeRules{}
	e.c.src.Rules = func() Rules { return fr }
	sc, tok := e.login(t, "root", "admin-pw")
	w := e.do("POST", "/console/rules/activate", url.Values{"version": {"abcdef12"}, "yaml": {"name: y\nrules: []\n"}, "why": {"go"}, "csrf": {tok}}, []*http.Cookie{sc}, nil)
	if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "not both") {
		t.Fatalf("version and file: %d %q, want 400 naming both", w.Code, w.Body.String())
	}
	if len(fr.changes) != 0 {
		t.Fatalf("changes made: %q", fr.changes)
	}
}

// A wrong sign-in logs the name only when it is a user's: a password typed into the name field
// stays out of the log.
func TestSignInLogsOnlyKnownNames(t *testing.T) {
	e := newEnv(t, nil)
	e.signInFrom("192.0.2.7:1234", "S3cret-Passw0rd", "")
	e.signInFrom("192.0.2.7:1234", "alice", "wrong")
	logs := e.logs.String()
	if strings.Contains(logs, "S3cret-Passw0rd") {
		t.Errorf("the name typed was logged: %s", logs)
	}
	if !strings.Contains(logs, "user=alice") {
		t.Errorf("a wrong password for alice not logged with her name: %s", logs)
	}
}

// Every page carries the headers that keep it out of frames and scripts from elsewhere.
func TestSecurityHeaders(t *testing.T) {
	e := newEnv(t, nil)
	sc, _ := e.login(t, "vera", "viewer-pw")
	for _, path := range []string{"/console/login", "/console/approvals", "/console/nothing-here"} {
		w := e.do("GET", path, nil, []*http.Cookie{sc}, nil)
		h := w.Header()
		csp := h.Get("Content-Security-Policy")
		if !strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") {
			t.Errorf("%s: CSP %q", path, csp)
		}
		if h.Get("X-Frame-Options") != "DENY" || h.Get("X-Content-Type-Options") != "nosniff" || h.Get("Referrer-Policy") != "same-origin" {
			t.Errorf("%s: headers %v", path, h)
		}
	}
}
