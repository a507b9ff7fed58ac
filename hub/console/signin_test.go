package console

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gemba-io/gemba/internal/testutil"
)

// signInFrom posts a sign-in from addr (host:port) with a fresh login cookie.
func (e *env) signInFrom(addr, user, pw string) *httptest.ResponseRecorder {
	lc := cookie(e.do("GET", "/console/login", nil, nil, nil), loginCookie)
	form := url.Values{"user": {user}, "password": {pw}, "csrf": {lc.Value}}
	req := httptest.NewRequest("POST", "/console/login", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "text/html")
	req.RemoteAddr = addr
	req.AddCookie(lc)
	w := httptest.NewRecorder()
	e.c.ServeHTTP(w, req)
	return w
}

// TestSignInThrottled: after signInFailures wrong sign-ins from one address within the window, its
// next sign-in is refused with 429 and Retry-After, even with the right password; another address
// signs in; once the window has passed, so does the first again.
func TestSignInThrottled(t *testing.T) {
	e := newEnv(t, nil)
	const attacker, other = "198.51.100.7:4000", "198.51.100.8:4000"
	for i := range signInFailures {
		if w := e.signInFrom(attacker, "alice", "guess"); w.Code != http.StatusSeeOther || cookie(w, sessionCookie) != nil {
			t.Fatalf("wrong sign-in %d: %d, want refused with the form again", i+1, w.Code)
		}
		e.now = e.now.Add(time.Second)
	}
	w := e.signInFrom(attacker, "alice", "approver-pw")
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") == "" || cookie(w, sessionCookie) != nil {
		t.Fatalf("sign-in after %d wrong ones: %d (Retry-After %q), want 429 without a session", signInFailures, w.Code, w.Header().Get("Retry-After"))
	}
	if w := e.signInFrom(other, "alice", "approver-pw"); w.Code != http.StatusSeeOther || cookie(w, sessionCookie) == nil {
		t.Fatalf("sign-in from another address: %d, want a session", w.Code)
	}
	e.now = e.now.Add(signInWindow)
	if w := e.signInFrom(attacker, "alice", "approver-pw"); w.Code != http.StatusSeeOther || cookie(w, sessionCookie) == nil {
		t.Fatalf("sign-in once the window passed: %d, want a session", w.Code)
	}
}

// TestSignInOneCheckAtATime: password checks run one at a time; signInQueue sign-ins wait for
// it, and one more is refused at once with 429.
func TestSignInOneCheckAtATime(t *testing.T) {
	e := newEnv(t, nil)
	e.c.signIns.run <- struct{}{} // a check is running
	var wg sync.WaitGroup
	codes := make(chan int, signInQueue)
	for i := range signInQueue {
		wg.Go(func() { codes <- e.signInFrom("198.51.100.9:"+strconv.Itoa(4000+i), "alice", "approver-pw").Code })
	}
	testutil.WaitFor(t, 10*time.Second, "the queue full", func() bool { return len(e.c.signIns.waiting) == signInQueue })
	if w := e.signInFrom("198.51.100.10:1", "alice", "approver-pw"); w.Code != http.StatusTooManyRequests {
		t.Fatalf("a sign-in past the queue: %d, want 429", w.Code)
	}
	<-e.c.signIns.run
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != http.StatusSeeOther {
			t.Fatalf("a queued sign-in: %d, want it signed in once the check before it ended", c)
		}
	}
}
