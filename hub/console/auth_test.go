package console

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/crypto/bcrypt"

	"github.com/gemba-io/gemba/config"
	"github.com/gemba-io/gemba/hub/act"
	"github.com/gemba-io/gemba/hub/api"
	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/decide/guard"
	"github.com/gemba-io/gemba/hub/decide/rules"
	"github.com/gemba-io/gemba/hub/monitor/fleet"
	"github.com/gemba-io/gemba/hub/state/features"
	"github.com/gemba-io/gemba/hub/state/graph"
	"github.com/gemba-io/gemba/hub/state/inventory"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func hash(t testing.TB, pw string) config.Secret {
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return config.NewSecret(string(h))
}

// fakeDecisions answers the approval calls the way the hub's guard does (pure logic behind the
// api.Decisions interface; the browser tests drive the real one).
type fakeDecisions struct {
	mu       sync.Mutex
	answered []string
	recs     []audit.Record // newest first, as the decision log answers
	kill     guard.KillSwitch
}

func (f *fakeDecisions) Recent(_ context.Context, flt audit.Filter) ([]audit.Record, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []audit.Record
	for _, r := range f.recs {
		if len(out) < flt.Limit && (flt.SKU == "" || r.SKU == flt.SKU) {
			out = append(out, r)
		}
	}
	return out, nil
}
func (f *fakeDecisions) RecentPage(ctx context.Context, flt audit.Filter) (audit.Page, error) {
	recs, err := f.Recent(ctx, flt)
	return audit.Page{Records: recs}, err
}
func (f *fakeDecisions) History(_ context.Context, id string) ([]audit.Record, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []audit.Record
	for i := len(f.recs) - 1; i >= 0; i-- { // oldest first
		if f.recs[i].DecisionID == id {
			out = append(out, f.recs[i])
		}
	}
	return out, nil
}
func (f *fakeDecisions) Delivery(context.Context, string) (*act.Record, error) { return nil, nil }
func (f *fakeDecisions) PendingPage(context.Context, uint64, int) (guard.QueuePage, error) {
	return guard.QueuePage{}, nil
}
func (f *fakeDecisions) Kill(context.Context) (guard.KillSwitch, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.kill, nil
}
func (f *fakeDecisions) SetKill(_ context.Context, k guard.KillSwitch) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	end := ""
	if k.EndLive {
		end = " (end live)"
	}
	f.answered = append(f.answered, fmt.Sprintf("kill %v%s by %s: %s", k.On, end, k.By, k.Reason))
	return nil
}
func (f *fakeDecisions) Rules(context.Context) (audit.Change, []audit.Change, error) {
	return audit.Change{}, nil, nil
}
func (f *fakeDecisions) Answer(_ context.Context, id, by, reason string, approve bool) (guard.Verdict, error) {
	if by == "requester" {
		return guard.Verdict{}, guard.ErrSelfApproval
	}
	f.answered = append(f.answered, by+":"+id)
	return guard.Verdict{DecisionID: id, Outcome: guard.Allow}, nil
}

type env struct {
	c        *Console
	dec      *fakeDecisions
	learning Learning // nil: learning off
	logs     *bytes.Buffer
	now      time.Time
}

func newEnv(t *testing.T, mod func(*Config)) *env {
	t.Helper()
	cfg := Config{Enabled: true, Users: []User{
		{Name: "vera", Role: "viewer", PasswordHash: hash(t, "viewer-pw")},
		{Name: "alice", Role: "approver", PasswordHash: hash(t, "approver-pw")},
		{Name: "requester", Role: "approver", PasswordHash: hash(t, "requester-pw")},
		{Name: "root", Role: "admin", PasswordHash: hash(t, "admin-pw")},
	}}
	if mod != nil {
		mod(&cfg)
	}
	e := &env{dec: &fakeDecisions{}, logs: &bytes.Buffer{}, now: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)}
	c, err := New(cfg, Sources{
		Fleet:     func() *fleet.Fleet { return nil },
		Features:  func() *features.Store { return nil },
		Inventory: func() *inventory.Store { return nil },
		Graph:     func() *graph.Graph { return nil },
		Decisions: func() api.Decisions { return e.dec },
		Rules:     func() Rules { return nil },
		Learning:  func() Learning { return e.learning },
	}, Options{Logger: slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})), Now: func() time.Time { return e.now }})
	if err != nil {
		t.Fatal(err)
	}
	e.c = c
	return e
}

func (e *env) do(method, path string, form url.Values, cookies []*http.Cookie, hdr map[string]string) *httptest.ResponseRecorder {
	var body *strings.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	} else {
		body = strings.NewReader("")
	}
	req := httptest.NewRequest(method, path, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	req.Header.Set("Accept", "text/html")
	for _, c := range cookies {
		req.AddCookie(c)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	e.c.ServeHTTP(w, req)
	return w
}

func cookie(w *httptest.ResponseRecorder, name string) *http.Cookie {
	for _, c := range w.Result().Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// login signs in and returns the session cookie and the page's CSRF token.
func (e *env) login(t *testing.T, user, pw string, extra ...*http.Cookie) (*http.Cookie, string) {
	t.Helper()
	lp := e.do("GET", "/console/login", nil, nil, nil)
	lc := cookie(lp, loginCookie)
	if lc == nil {
		t.Fatal("the login page set no login cookie")
	}
	w := e.do("POST", "/console/login", url.Values{"user": {user}, "password": {pw}, "csrf": {lc.Value}}, append([]*http.Cookie{lc}, extra...), nil)
	sc := cookie(w, sessionCookie)
	if w.Code != http.StatusSeeOther || sc == nil || sc.Value == "" {
		t.Fatalf("login %s: %d, session cookie %v", user, w.Code, sc)
	}
	page := e.do("GET", "/console/approvals", nil, []*http.Cookie{sc}, nil)
	_, after, ok := strings.Cut(page.Body.String(), `data-csrf="`)
	if !ok {
		t.Fatalf("no CSRF token on the page of %s: %d %s", user, page.Code, page.Body.String())
	}
	tok, _, _ := strings.Cut(after, `"`)
	return sc, tok
}

// TestLogin: the sign-in form needs its CSRF token; a wrong password or an unknown user is refused
// alike; a good one gets a new session whose cookie is HttpOnly, SameSite=Strict, Secure when
// configured; pages without a session redirect to the sign-in page.
func TestLogin(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.SecureCookie = true })
	w := e.do("GET", "/console/fleet", nil, nil, nil)
	if w.Code != http.StatusSeeOther || !strings.HasPrefix(w.Header().Get("Location"), "/console/login?next=") {
		t.Fatalf("no session: %d %s, want a redirect to the login page", w.Code, w.Header().Get("Location"))
	}
	if w := e.do("POST", "/console/login", url.Values{"user": {"alice"}, "password": {"approver-pw"}}, nil, nil); w.Code != http.StatusForbidden {
		t.Fatalf("login without CSRF token: %d, want 403", w.Code)
	}
	lc := cookie(e.do("GET", "/console/login", nil, nil, nil), loginCookie)
	for _, bad := range [][2]string{{"alice", "wrong"}, {"nobody", "approver-pw"}, {"", ""}} {
		w := e.do("POST", "/console/login", url.Values{"user": {bad[0]}, "password": {bad[1]}, "csrf": {lc.Value}}, []*http.Cookie{lc}, nil)
		if w.Code != http.StatusSeeOther || !strings.Contains(w.Header().Get("Location"), "error=1") || cookie(w, sessionCookie) != nil {
			t.Fatalf("login %q/%q: %d %s, want refused without a session", bad[0], bad[1], w.Code, w.Header().Get("Location"))
		}
	}
	sc, _ := e.login(t, "alice", "approver-pw")
	if !sc.HttpOnly || sc.SameSite != http.SameSiteStrictMode || !sc.Secure || sc.Path != "/console/" {
		t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Strict, Secure, Path /console/", sc)
	}
	if w := e.do("GET", "/console/approvals", nil, []*http.Cookie{sc}, nil); w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `id="user">alice<`) {
		t.Fatalf("approvals with a session: %d", w.Code)
	}
	// Expiry.
	e.now = e.now.Add(DefaultConfig().SessionTTL + time.Minute)
	if w := e.do("GET", "/console/approvals", nil, []*http.Cookie{sc}, nil); w.Code != http.StatusSeeOther {
		t.Fatalf("expired session: %d, want a redirect to sign in", w.Code)
	}
}

// TestSessionFixation: an id the browser brought to the sign-in is never the session's id, and
// signing in again drops the old session.
func TestSessionFixation(t *testing.T) {
	e := newEnv(t, nil)
	planted := &http.Cookie{Name: sessionCookie, Value: "attacker-chosen-id"}
	sc, _ := e.login(t, "alice", "approver-pw", planted)
	if sc.Value == planted.Value {
		t.Fatal("the session kept the id the browser brought")
	}
	if w := e.do("GET", "/console/approvals", nil, []*http.Cookie{planted}, nil); w.Code != http.StatusSeeOther {
		t.Fatalf("the planted id: %d, want no session", w.Code)
	}
	sc2, _ := e.login(t, "alice", "approver-pw", sc)
	if sc2.Value == sc.Value {
		t.Fatal("signing in again kept the session id")
	}
	if w := e.do("GET", "/console/approvals", nil, []*http.Cookie{sc}, nil); w.Code != http.StatusSeeOther {
		t.Fatalf("the session before the new sign-in: %d, want dropped", w.Code)
	}
	// Sign out ends the session.
	_, tok := e.login(t, "vera", "viewer-pw")
	sc3, tok3 := e.login(t, "vera", "viewer-pw")
	_ = tok
	if w := e.do("POST", "/console/logout", url.Values{"csrf": {tok3}}, []*http.Cookie{sc3}, nil); w.Code != http.StatusSeeOther {
		t.Fatalf("logout: %d", w.Code)
	}
	if w := e.do("GET", "/console/fleet", nil, []*http.Cookie{sc3}, nil); w.Code != http.StatusSeeOther {
		t.Fatalf("after logout: %d, want no session", w.Code)
	}
}

// TestCSRFAndRoles: every state-changing request without the session's CSRF token (or from
// another origin) is 403, whatever the role; with it, a viewer still gets 403 and an approver's
// answer goes through as that user; the guard's self-approval refusal is 403.
func TestCSRFAndRoles(t *testing.T) {
	e := newEnv(t, nil)
	id := strings.Repeat("ab", 16)
	path := "/console/approvals/" + id + "/approve"
	vs, vtok := e.login(t, "vera", "viewer-pw")
	as, atok := e.login(t, "alice", "approver-pw")
	rs, rtok := e.login(t, "requester", "requester-pw")
	ad, adtok := e.login(t, "root", "admin-pw")
	for _, tc := range []struct {
		name string
		ck   *http.Cookie
		form url.Values
		hdr  map[string]string
		want int
	}{
		{"approver, no token", as, url.Values{"reason": {"x"}}, nil, http.StatusForbidden},
		{"approver, another session's token", as, url.Values{"csrf": {vtok}}, nil, http.StatusForbidden},
		{"approver, token but cross-origin", as, url.Values{"csrf": {atok}}, map[string]string{"Origin": "http://evil.example"}, http.StatusForbidden},
		{"viewer with token", vs, url.Values{"csrf": {vtok}}, nil, http.StatusForbidden},
		{"no session", nil, url.Values{"csrf": {atok}}, nil, http.StatusUnauthorized},
		{"requester approving own", rs, url.Values{"csrf": {rtok}}, nil, http.StatusForbidden},
		{"approver with header token", as, url.Values{"reason": {"ok"}}, map[string]string{csrfHeader: atok, "Origin": "http://example.com"}, http.StatusSeeOther},
	} {
		var cks []*http.Cookie
		if tc.ck != nil {
			cks = []*http.Cookie{tc.ck}
		}
		if w := e.do("POST", path, tc.form, cks, tc.hdr); w.Code != tc.want {
			t.Errorf("%s: %d, want %d (%s)", tc.name, w.Code, tc.want, strings.TrimSpace(w.Body.String()))
		}
	}
	if len(e.dec.answered) != 1 || e.dec.answered[0] != "alice:"+id {
		t.Fatalf("answers that reached the guard: %v, want alice's only", e.dec.answered)
	}
	// Rules changes are the admin's: an approver with a good token is refused; the admin passes the
	// role check (and is told the decision room is off here).
	if w := e.do("POST", "/console/rules/rollback", url.Values{"csrf": {atok}, "why": {"x"}}, []*http.Cookie{as}, nil); w.Code != http.StatusForbidden {
		t.Fatalf("approver rollback: %d, want 403", w.Code)
	}
	if w := e.do("POST", "/console/rules/rollback", url.Values{"csrf": {adtok}, "why": {"x"}}, []*http.Cookie{ad}, nil); w.Code != http.StatusNotFound {
		t.Fatalf("admin rollback without a registry: %d, want 404", w.Code)
	}
	// The kill switch is the admin's too, and records who and why.
	e.dec.answered = nil
	if w := e.do("POST", "/console/kill", url.Values{"csrf": {atok}, "on": {"true"}, "reason": {"x"}}, []*http.Cookie{as}, nil); w.Code != http.StatusForbidden {
		t.Fatalf("approver kill switch: %d, want 403", w.Code)
	}
	if w := e.do("POST", "/console/kill", url.Values{"csrf": {adtok}, "on": {"true"}}, []*http.Cookie{ad}, nil); w.Code != http.StatusBadRequest {
		t.Fatalf("kill switch without a reason: %d, want 400", w.Code)
	}
	if w := e.do("POST", "/console/kill", url.Values{"csrf": {adtok}, "on": {"true"}, "reason": {"webhook storm"}}, []*http.Cookie{ad}, nil); w.Code != http.StatusSeeOther {
		t.Fatalf("admin kill switch: %d, want 303", w.Code)
	}
	if len(e.dec.answered) != 1 || e.dec.answered[0] != "kill true by root: webhook storm" {
		t.Fatalf("kill switch calls: %q", e.dec.answered)
	}
	// end_live: with the switch thrown only, and said so.
	if w := e.do("POST", "/console/kill", url.Values{"csrf": {adtok}, "on": {"false"}, "end_live": {"true"}, "reason": {"x"}}, []*http.Cookie{ad}, nil); w.Code != http.StatusBadRequest {
		t.Fatalf("end_live with a reset: %d, want 400", w.Code)
	}
	if w := e.do("POST", "/console/kill", url.Values{"csrf": {adtok}, "on": {"true"}, "end_live": {"yes"}, "reason": {"x"}}, []*http.Cookie{ad}, nil); w.Code != http.StatusBadRequest {
		t.Fatalf("end_live neither true nor false: %d, want 400", w.Code)
	}
	if w := e.do("POST", "/console/kill", url.Values{"csrf": {adtok}, "on": {"true"}, "end_live": {"true"}, "reason": {"bad prices"}}, []*http.Cookie{ad}, nil); w.Code != http.StatusSeeOther {
		t.Fatalf("admin kill switch with end_live: %d, want 303", w.Code)
	}
	if len(e.dec.answered) != 2 || e.dec.answered[1] != "kill true (end live) by root: bad prices" {
		t.Fatalf("kill switch calls: %q", e.dec.answered)
	}
	page := e.do("GET", "/console/approvals", nil, []*http.Cookie{ad}, nil)
	if !strings.Contains(page.Body.String(), `name="end_live"`) {
		t.Fatalf("the approvals page offers no end_live to an admin while the switch is off:\n%s", page.Body.String())
	}
	// Reset after a throw with end_live: the page says the mark still ends what ran then.
	e.dec.mu.Lock()
	e.dec.kill = guard.KillSwitch{By: "root", Reason: "prices fixed", At: time.Date(2026, 12, 4, 10, 1, 0, 0, time.UTC),
		Mark: &guard.EndLiveMark{Gen: 1, By: "root", Reason: "bad prices", At: time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)}}
	e.dec.mu.Unlock()
	page = e.do("GET", "/console/approvals", nil, []*http.Cookie{ad}, nil)
	if b := page.Body.String(); !strings.Contains(b, "Last thrown with end_live by root at 2026-12-04 10:00:00Z (bad prices)") {
		t.Fatalf("the approvals page does not show the end-live mark after a reset:\n%s", b)
	}
}

// TestNoSecretRendered: neither a password nor a hash appears on a page or in the log.
func TestNoSecretRendered(t *testing.T) {
	e := newEnv(t, nil)
	sc, tok := e.login(t, "root", "admin-pw")
	lc := cookie(e.do("GET", "/console/login", nil, nil, nil), loginCookie)
	e.do("POST", "/console/login", url.Values{"user": {"root"}, "password": {"wrong-secret-pw"}, "csrf": {lc.Value}}, []*http.Cookie{lc}, nil)
	var pages bytes.Buffer
	for _, p := range []string{"/console/login", "/console/approvals", "/console/decisions", "/console/rules", "/console/fleet"} {
		pages.WriteString(e.do("GET", p, nil, []*http.Cookie{sc}, nil).Body.String())
	}
	all := pages.String() + e.logs.String()
	for _, u := range e.c.cfg.Users {
		if h := u.PasswordHash.Value(); strings.Contains(all, h) || strings.Contains(all, h[7:]) {
			t.Errorf("the hash of %s was rendered or logged", u.Name)
		}
	}
	for _, pw := range []string{"admin-pw", "wrong-secret-pw", "viewer-pw"} {
		if strings.Contains(all, pw) {
			t.Errorf("password %q was rendered or logged", pw)
		}
	}
	if strings.Contains(e.logs.String(), tok) || strings.Contains(e.logs.String(), sc.Value) {
		t.Error("a session id or CSRF token was logged")
	}
}

// TestProxyHeader: the user header counts only from a trusted proxy address; a listed user gets
// their role, an unlisted one the default role (or nothing).
func TestProxyHeader(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.Proxy = ProxyConfig{UserHeader: "X-Remote-User", Trusted: []string{"10.1.2.3", "192.0.2.0/24"}}
	})
	req := func(remote, user string) *httptest.ResponseRecorder {
		r := httptest.NewRequest("GET", "/console/approvals", nil)
		r.RemoteAddr = remote + ":4444"
		r.Header.Set("X-Remote-User", user)
		r.Header.Set("Accept", "text/html")
		w := httptest.NewRecorder()
		e.c.ServeHTTP(w, r)
		return w
	}
	if w := req("10.1.2.3", "alice"); w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `id="user">alice<`) {
		t.Fatalf("trusted proxy: %d", w.Code)
	}
	if w := req("192.0.2.77", "root"); w.Code != http.StatusOK || !strings.Contains(w.Body.String(), ">admin<") {
		t.Fatalf("trusted range: %d", w.Code)
	}
	if w := req("203.0.113.9", "root"); w.Code != http.StatusSeeOther {
		t.Fatalf("untrusted peer with the header: %d, want the login redirect", w.Code)
	}
	if w := req("10.1.2.3", "stranger"); w.Code != http.StatusForbidden {
		t.Fatalf("unlisted proxy user without default_role: %d, want 403", w.Code)
	}
}

// TestConfigValidate: each mistake names its field.
func TestConfigValidate(t *testing.T) {
	doc := `console:
  enabled: true
  users:
    - {name: a, role: boss, password_hash: "not-a-hash"}
    - {name: a, role: viewer}
  proxy: {trusted: ["nonsense"]}
  session_ttl: 1s
`
	var out struct {
		Console Config `yaml:"console"`
	}
	out.Console = DefaultConfig()
	err := config.NewDecoder().Unmarshal([]byte(doc), &out)
	var ps config.Problems
	if !errors.As(err, &ps) {
		t.Fatalf("want problems, got %v", err)
	}
	got := err.Error()
	for _, want := range []string{"console.users[0].role", "console.users[0].password_hash", "console.users[1].name", "console.users[1].password_hash",
		"console.proxy.trusted[0]", "console.session_ttl"} {
		if !strings.Contains(got, want) {
			t.Errorf("no problem at %s in:\n%s", want, got)
		}
	}
	if strings.Contains(got, "not-a-hash") {
		t.Error("the problem printed the hash")
	}
}

func TestSafeNext(t *testing.T) {
	for in, want := range map[string]string{
		"/console/rules?a=1":  "/console/rules?a=1",
		"https://evil.com/":   "/console/fleet",
		"//evil.com/console/": "/console/fleet",
		"/consolex":           "/console/fleet",
		"/metrics":            "/console/fleet",
		"":                    "/console/fleet",
	} {
		if got := safeNext("/console", in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLineDiffAndDisagreement(t *testing.T) {
	d := lineDiff("a\nb\nc\n", "a\nx\nc\nd\n")
	var got []string
	for _, l := range d {
		got = append(got, l.Op+l.Text)
	}
	if strings.Join(got, "|") != " a|-b|+x| c|+d" {
		t.Fatalf("diff: %v", got)
	}
	promo := rules.Action{Kind: rules.Promote, Channels: []string{"web"}, Discount: 10}
	other := promo
	other.Discount = 20
	recs := []audit.Record{
		{Mode: audit.ModeShadow, RuleSet: audit.RuleSetRef{Version: "v2"}, Action: promo, Disagreement: &audit.Disagreement{ActiveAction: &promo}},
		{Mode: audit.ModeShadow, RuleSet: audit.RuleSetRef{Version: "v2"}, Action: promo, Disagreement: &audit.Disagreement{ActiveAction: &other}},
		{Mode: audit.ModeShadow, RuleSet: audit.RuleSetRef{Version: "v2"}, Disagreement: &audit.Disagreement{}},                // both nothing
		{Mode: audit.ModeShadow, RuleSet: audit.RuleSetRef{Version: "v2"}, Action: promo, Disagreement: &audit.Disagreement{}}, // active nothing
		{Mode: audit.ModeShadow, RuleSet: audit.RuleSetRef{Version: "v1"}, Action: promo, Disagreement: &audit.Disagreement{}}, // another version
	}
	st := disagreement(recs, "v2")
	if st.Records != 4 || st.Disagree != 2 || st.Rate != 0.5 {
		t.Fatalf("disagreement: %+v, want 2 of 4", st)
	}
}
