package console

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/gemba-io/gemba/config"
	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/decide/rules"
)

// TestUnknownUserCostsAsMuch: the sign-in compares an unknown name's password against a hash of
// the users' bcrypt cost (the docs' htpasswd -B -C 12; the highest when they differ, here 6 so the
// test stays quick), so a wrong name takes as long as a wrong password and the timing does not
// tell which names exist.
func TestUnknownUserCostsAsMuch(t *testing.T) {
	h, err := bcrypt.GenerateFromPassword([]byte("approver-pw"), 6)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(c *Config) {
		c.Users[1].PasswordHash = config.NewSecret(string(h)) // alice; the others have bcrypt.MinCost
	})
	cost, err := bcrypt.Cost(e.c.dummy)
	if err != nil {
		t.Fatal(err)
	}
	if cost != 6 {
		t.Fatalf("an unknown user is compared against a hash of cost %d, the users' is 6", cost)
	}
	if _, ok := e.c.check("nobody", "approver-pw"); ok {
		t.Fatal("an unknown user signed in")
	}
	if _, ok := e.c.check("alice", "approver-pw"); !ok {
		t.Fatal("alice could not sign in")
	}
}

// TestKillNeedsOn: the kill switch changes only as the form says, on=true or on=false; a request
// without it (or with another value: "on", "1", "yes") is refused, never taken as a reset that
// lets decisions act again.
func TestKillNeedsOn(t *testing.T) {
	e := newEnv(t, nil)
	ad, tok := e.login(t, "root", "admin-pw")
	for _, on := range [][]string{nil, {""}, {"on"}, {"1"}, {"yes"}, {"TRUE"}} {
		form := url.Values{"csrf": {tok}, "reason": {"webhook storm"}}
		if on != nil {
			form["on"] = on
		}
		if w := e.do("POST", "/console/kill", form, []*http.Cookie{ad}, nil); w.Code != http.StatusBadRequest {
			t.Errorf("kill switch with on=%q: %d, want 400", on, w.Code)
		}
	}
	if len(e.dec.answered) != 0 {
		t.Fatalf("kill switch calls: %q, want none", e.dec.answered)
	}
	for _, on := range []string{"true", "false"} {
		if w := e.do("POST", "/console/kill", url.Values{"csrf": {tok}, "on": {on}, "reason": {"r"}}, []*http.Cookie{ad}, nil); w.Code != http.StatusSeeOther {
			t.Errorf("kill switch with on=%s: %d, want 303", on, w.Code)
		}
	}
	if got := strings.Join(e.dec.answered, "|"); got != "kill true by root: r|kill false by root: r" {
		t.Fatalf("kill switch calls: %q", got)
	}
}

// TestPastedRuleFileSize: a pasted rule file within the rules' own limit is taken whatever its
// form encoding costs (a newline or a colon is three bytes in a form); a bigger request is
// refused as too large (413), not as a CSRF failure that tells the admin to reload the page.
func TestPastedRuleFileSize(t *testing.T) {
	e := newEnv(t, nil)
	fr := &fakeRules{}
	e.c.src.Rules = func() Rules { return fr }
	sc, tok := e.login(t, "root", "admin-pw")
	file := "name: big\nrules:\n" + strings.Repeat("# a: b\n", (rules.MaxFileSize-100)/7)
	if len(file) > rules.MaxFileSize {
		t.Fatalf("the test's file is %d bytes, over the limit", len(file))
	}
	w := e.do("POST", "/console/rules/activate", url.Values{"csrf": {tok}, "why": {"big"}, "yaml": {file}}, []*http.Cookie{sc}, nil)
	if w.Code != http.StatusSeeOther {
		t.Fatalf("a rule file of %d KiB: %d %s, want 303", len(file)>>10, w.Code, strings.TrimSpace(w.Body.String()))
	}
	huge := strings.Repeat("# a: b\n", 4*rules.MaxFileSize/7)
	w = e.do("POST", "/console/rules/activate", url.Values{"csrf": {tok}, "why": {"huge"}, "yaml": {huge}}, []*http.Cookie{sc}, map[string]string{"Accept": "*/*"})
	if w.Code != http.StatusRequestEntityTooLarge || !strings.Contains(w.Body.String(), "too large") {
		t.Fatalf("a request of %d KiB: %d %s, want 413 saying it is too large", len(huge)>>10, w.Code, strings.TrimSpace(w.Body.String()))
	}
	if len(fr.changes) != 1 {
		t.Fatalf("changes: %q, want the first only", fr.changes)
	}
}

// TestLiveEndsWithSession: the live decision feed stops sending once its session is over (signed
// out here; expiry is the same): an open tab does not go on showing decisions to nobody.
func TestLiveEndsWithSession(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.LivePoll = 100 * time.Millisecond })
	e.dec.recs = []audit.Record{rec(3, "A")}
	srv := httptest.NewServer(e.c)
	defer srv.Close()
	sc, tok := e.login(t, "vera", "viewer-pw")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/console/decisions/live?after=2", nil)
	req.AddCookie(sc)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	events := make(chan string, 16)
	go func() {
		defer close(events)
		s := bufio.NewScanner(resp.Body)
		for s.Scan() {
			if d, ok := strings.CutPrefix(s.Text(), "data: "); ok {
				events <- d
			}
		}
	}()
	select {
	case d := <-events:
		if !strings.Contains(d, fmt.Sprintf("%032x", 3)) {
			t.Fatalf("first event %q: want record 3", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no live event")
	}
	if w := e.do("POST", "/console/logout", url.Values{"csrf": {tok}}, []*http.Cookie{sc}, nil); w.Code != http.StatusSeeOther {
		t.Fatalf("logout: %d", w.Code)
	}
	e.dec.mu.Lock()
	e.dec.recs = append([]audit.Record{rec(4, "A")}, e.dec.recs...)
	e.dec.mu.Unlock()
	select {
	case d, open := <-events:
		if open {
			t.Fatalf("after sign-out the feed sent %q", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the feed was still open 10 s after sign-out")
	}
}

// TestOriginBehindProxy: behind a reverse proxy that sends its upstream's address as Host (nginx's
// default), the browser's Origin is the public name: a state change is accepted when a trusted
// proxy forwards that name (X-Forwarded-Host), refused when the header comes from anyone else or
// names another host.
func TestOriginBehindProxy(t *testing.T) {
	post := func(e *env, forwarded string) int {
		ad, tok := e.login(t, "root", "admin-pw")
		hdr := map[string]string{"Origin": "https://console.example.org"}
		if forwarded != "" {
			hdr["X-Forwarded-Host"] = forwarded
		}
		return e.do("POST", "/console/kill", url.Values{"csrf": {tok}, "on": {"true"}, "reason": {"r"}}, []*http.Cookie{ad}, hdr).Code
	}
	// httptest's requests come from 192.0.2.1 and ask for example.com.
	trusted := newEnv(t, func(c *Config) { c.Proxy.Trusted = []string{"192.0.2.1"} })
	if code := post(trusted, "console.example.org"); code != http.StatusSeeOther {
		t.Errorf("trusted proxy forwarding the Origin's host: %d, want 303", code)
	}
	if code := post(trusted, "console.example.org, 10.0.0.1"); code != http.StatusSeeOther {
		t.Errorf("trusted proxies' list of hosts: %d, want 303", code)
	}
	if code := post(trusted, "evil.example.net"); code != http.StatusForbidden {
		t.Errorf("trusted proxy forwarding another host: %d, want 403", code)
	}
	if code := post(trusted, ""); code != http.StatusForbidden {
		t.Errorf("Origin unlike Host, nothing forwarded: %d, want 403", code)
	}
	untrusted := newEnv(t, nil)
	if code := post(untrusted, "console.example.org"); code != http.StatusForbidden {
		t.Errorf("X-Forwarded-Host from a peer not trusted: %d, want 403", code)
	}
}
