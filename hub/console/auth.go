package console

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/gemba-io/gemba/hub/decide/rules"
)

// Cookie names. The login cookie carries the sign-in form's CSRF token before there is a session.
const (
	sessionCookie = "gemba_session"
	loginCookie   = "gemba_login"
	csrfHeader    = "X-CSRF-Token"
	csrfField     = "csrf"
)

// session is one signed-in user. Sessions live in this replica's memory: a restart signs everyone
// out, and behind a load balancer the console needs sticky sessions (or the proxy header).
type session struct {
	id      string
	user    string
	role    Role
	csrf    string
	expires time.Time
	proxied bool
	flash   atomic.Pointer[string] // the result of this session's last change, shown once
}

type sessions struct {
	mu  sync.Mutex
	m   map[string]*session
	ttl time.Duration
	now func() time.Time
}

func newSessions(ttl time.Duration, now func() time.Time) *sessions {
	return &sessions{m: map[string]*session{}, ttl: ttl, now: now}
}

// token is 32 random bytes, URL-safe.
func token() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}

// create starts a new session with a fresh id: a login never keeps an id the browser brought (no
// session fixation). The old id, if any, is dropped.
func (s *sessions) create(old, user string, role Role) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, old)
	now := s.now()
	for id, x := range s.m { // drop expired sessions here: logins are rare, the map stays small
		if now.After(x.expires) {
			delete(s.m, id)
		}
	}
	ss := &session{id: token(), user: user, role: role, csrf: token(), expires: now.Add(s.ttl)}
	s.m[ss.id] = ss
	return ss
}

func (s *sessions) get(id string) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := s.m[id]
	if ss == nil {
		return nil
	}
	if s.now().After(ss.expires) {
		delete(s.m, id)
		return nil
	}
	return ss
}

func (s *sessions) drop(id string) {
	s.mu.Lock()
	delete(s.m, id)
	s.mu.Unlock()
}

type ctxKey struct{}

func sessionOf(r *http.Request) *session {
	ss, _ := r.Context().Value(ctxKey{}).(*session)
	return ss
}

// dummyHash is what an unknown user's password is compared against, so that a wrong name costs
// as long as a wrong password (no user enumeration by timing): a hash of the users' bcrypt cost
// (the highest, when they differ), since each step of the cost doubles the time.
func dummyHash(users []User) []byte {
	cost := bcrypt.MinCost
	for _, u := range users {
		if n, err := bcrypt.Cost([]byte(u.PasswordHash.Value())); err == nil {
			cost = max(cost, n)
		}
	}
	h, _ := bcrypt.GenerateFromPassword([]byte("gemba-console-no-such-user"), cost)
	return h
}

// check verifies a user's password.
func (c *Console) check(name, password string) (User, bool) {
	u, ok := c.cfg.user(name)
	h := []byte(u.PasswordHash.Value())
	if !ok || len(h) == 0 {
		_ = bcrypt.CompareHashAndPassword(c.dummy, []byte(password))
		return User{}, false
	}
	if bcrypt.CompareHashAndPassword(h, []byte(password)) != nil {
		return User{}, false
	}
	return u, true
}

func (c *Console) setCookie(w http.ResponseWriter, r *http.Request, name, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: value, Path: c.prefix + "/", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: c.cfg.SecureCookie || r.TLS != nil, MaxAge: maxAge})
}

// fromTrustedProxy reports whether the peer is one of the configured proxies.
func (c *Console) fromTrustedProxy(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	a = a.Unmap()
	for _, p := range c.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// proxied returns the session of a proxy-vouched user (nil when the request has none). Its CSRF
// token is derived per user from a key of this process, so forms keep working across requests.
func (c *Console) proxied(r *http.Request) (*session, bool) {
	if c.cfg.Proxy.UserHeader == "" {
		return nil, false
	}
	name := r.Header.Get(c.cfg.Proxy.UserHeader)
	if name == "" || !c.fromTrustedProxy(r) {
		return nil, false
	}
	role := roleNames[c.cfg.Proxy.DefaultRole]
	if u, ok := c.cfg.user(name); ok {
		role = roleNames[u.Role]
	}
	if role == RoleNone {
		return nil, true // vouched for, but not allowed in
	}
	c.proxyMu.Lock()
	defer c.proxyMu.Unlock()
	ss := c.proxySess[name]
	if ss == nil || ss.role != role {
		ss = &session{user: name, role: role, csrf: token(), proxied: true}
		c.proxySess[name] = ss
	}
	return ss, false
}

// authed wraps a page: it needs a session (else the login page, or 401 for htmx and SSE), a role
// of at least min (else 403), and on a state-changing method a CSRF token matching the session's
// (else 403).
func (c *Console) authed(min Role, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ss, refused := c.proxied(r)
		if refused {
			c.fail(w, r, http.StatusForbidden, "your proxy user has no console role")
			return
		}
		if ss == nil {
			if ck, err := r.Cookie(sessionCookie); err == nil {
				ss = c.sessions.get(ck.Value)
			}
		}
		if ss == nil {
			if r.Method != http.MethodGet || r.Header.Get("HX-Request") != "" || r.Header.Get("Accept") == "text/event-stream" {
				c.fail(w, r, http.StatusUnauthorized, "sign in first")
				return
			}
			http.Redirect(w, r, c.prefix+"/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		if !safeMethod(r.Method) {
			r.Body = http.MaxBytesReader(w, r.Body, maxForm)
			// Read the form here, so that a body over the bound is refused as such rather than as
			// a form without its CSRF token.
			err := r.ParseForm() // an encoded form; ParseMultipartForm alone would hide its error
			if err == nil {
				if err = r.ParseMultipartForm(maxForm); errors.Is(err, http.ErrNotMultipart) {
					err = nil
				}
			}
			if err != nil {
				if tooBig := (*http.MaxBytesError)(nil); errors.As(err, &tooBig) {
					c.fail(w, r, http.StatusRequestEntityTooLarge, fmt.Sprintf("request too large: over %d KiB (a rule file may have %d KiB)",
						maxForm>>10, rules.MaxFileSize>>10))
					return
				}
				c.fail(w, r, http.StatusBadRequest, "the form could not be read: "+err.Error())
				return
			}
		}
		if !safeMethod(r.Method) && !c.csrfOK(r, ss.csrf) {
			c.log.Warn("console: request refused, CSRF token missing or wrong", "user", ss.user, "path", r.URL.Path)
			c.fail(w, r, http.StatusForbidden, "CSRF token missing or wrong: reload the page")
			return
		}
		if ss.role < min {
			c.fail(w, r, http.StatusForbidden, "your role ("+ss.role.String()+") may not do this: it needs "+min.String())
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, ss)))
	}
}

func safeMethod(m string) bool { return m == http.MethodGet || m == http.MethodHead }

// csrfOK compares the request's token (header for htmx, form field for plain forms) with want,
// and refuses a cross-origin Origin header outright.
func (c *Console) csrfOK(r *http.Request, want string) bool {
	if o := r.Header.Get("Origin"); o != "" {
		if u, err := url.Parse(o); err != nil || u.Host != c.host(r) {
			return false
		}
	}
	got := r.Header.Get(csrfHeader)
	if got == "" {
		got = r.PostFormValue(csrfField)
	}
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// host is the host the browser asked for: the request's, or the one a trusted proxy forwarded
// (X-Forwarded-Host, its first value), when the proxy replaced Host with its upstream's address.
func (c *Console) host(r *http.Request) string {
	if fh := r.Header.Get("X-Forwarded-Host"); fh != "" && c.fromTrustedProxy(r) {
		first, _, _ := strings.Cut(fh, ",")
		return strings.TrimSpace(first)
	}
	return r.Host
}

// maxForm bounds a form body: a pasted rule file and the form around it, the file form-encoded
// (a byte may take three: "%0A").
const maxForm = 3*rules.MaxFileSize + 64<<10

func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	tok := token()
	c.setCookie(w, r, loginCookie, tok, 600)
	c.render(w, r, http.StatusOK, "login", page{Title: "Sign in", CSRF: tok, Data: map[string]any{
		"Next": safeNext(c.prefix, r.URL.Query().Get("next")), "Error": r.URL.Query().Get("error") != ""}})
}

// login checks the form (its CSRF token against the login cookie: double submit), then starts a
// new session.
func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	ck, err := r.Cookie(loginCookie)
	if err != nil || !c.csrfOK(r, ck.Value) {
		c.fail(w, r, http.StatusForbidden, "CSRF token missing or wrong: reload the sign-in page")
		return
	}
	name, pw := r.PostFormValue("user"), r.PostFormValue("password")
	next := safeNext(c.prefix, r.PostFormValue("next"))
	addr := address(r)
	if wait := c.signIns.refused(addr); wait > 0 {
		c.log.Warn("console: sign-in refused: too many wrong ones from this address", "remote", r.RemoteAddr, "retry_in", wait.Round(time.Second))
		c.tooMany(w, r, wait, "too many wrong sign-ins from this address: try again later")
		return
	}
	var u User
	var ok bool
	if !c.signIns.check(r.Context(), func() { u, ok = c.check(name, pw) }) {
		c.tooMany(w, r, time.Second, "too many sign-ins at once: try again in a moment")
		return
	}
	if !ok {
		c.signIns.failed(addr)
		if _, known := c.cfg.user(name); !known {
			name = "(not a user)" // what was typed may be a password put in the wrong field
		}
		c.log.Info("console: sign-in refused", "user", name, "remote", r.RemoteAddr)
		http.Redirect(w, r, c.prefix+"/login?error=1&next="+url.QueryEscape(next), http.StatusSeeOther)
		return
	}
	old := ""
	if ck, err := r.Cookie(sessionCookie); err == nil {
		old = ck.Value
	}
	ss := c.sessions.create(old, u.Name, roleNames[u.Role])
	c.setCookie(w, r, sessionCookie, ss.id, int(c.cfg.SessionTTL.Seconds()))
	c.setCookie(w, r, loginCookie, "", -1)
	c.log.Info("console: signed in", "user", u.Name, "role", u.Role, "remote", r.RemoteAddr)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request) {
	if ss := sessionOf(r); ss != nil && !ss.proxied {
		c.sessions.drop(ss.id)
	}
	c.setCookie(w, r, sessionCookie, "", -1)
	http.Redirect(w, r, c.prefix+"/login", http.StatusSeeOther)
}

// safeNext keeps a redirect after sign-in inside the console (no open redirect).
func safeNext(prefix, next string) string {
	u, err := url.Parse(next)
	if next == "" || err != nil || u.IsAbs() || u.Host != "" || len(u.Path) < len(prefix)+1 || u.Path[:len(prefix)+1] != prefix+"/" {
		return prefix + "/fleet"
	}
	return u.RequestURI()
}
