package console

import (
	"bytes"
	"context"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gemba-io/gemba/hub/api"
	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/decide"
	"github.com/gemba-io/gemba/hub/decide/rules"
	"github.com/gemba-io/gemba/hub/decide/versions"
	"github.com/gemba-io/gemba/hub/learn/registry"
	"github.com/gemba-io/gemba/hub/monitor/fleet"
	"github.com/gemba-io/gemba/hub/monitor/kpi"
	"github.com/gemba-io/gemba/hub/monitor/quality"
	"github.com/gemba-io/gemba/hub/state/features"
	"github.com/gemba-io/gemba/hub/state/graph"
	"github.com/gemba-io/gemba/hub/state/inventory"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Prefix is where the console is served on the hub's listener.
const Prefix = "/console"

// Rules is what the rules page reads and changes: the hub's rule versions registry
// (hub/decide/versions), the same calls as `gemba-hub rules`.
type Rules interface {
	Store(ctx context.Context, data []byte, by string) (string, error)
	Load(ctx context.Context, version string) ([]byte, error)
	Meta(ctx context.Context, version string) (versions.Meta, error)
	Resolve(ctx context.Context, prefix string) (string, error)
	Activate(ctx context.Context, version, by, why string) (audit.Change, error)
	Rollback(ctx context.Context, by, why string) (audit.Change, error)
	Shadow(ctx context.Context, version, by, why string) (audit.Change, error)
	Canary(ctx context.Context, version string, share float64, unit, by, why string) (audit.Change, error)
}

// Sources are the hub state the console reads; any may return nil while the hub is starting (or,
// for Decisions and Rules, when the decision room is off).
type Sources struct {
	Fleet     func() *fleet.Fleet
	Features  func() *features.Store
	Inventory func() *inventory.Store
	Graph     func() *graph.Graph
	Decisions func() api.Decisions
	Rules     func() Rules
	// Learning is the model registry and the experiments' measured lifts (nil while off or starting).
	Learning func() Learning
	// Cover is the active model set's days of cover of a position (false: no set covers it).
	Cover func(sku, site string, position float64, now time.Time) (registry.Cover, bool)
	// Lines says which features describe a line (the hub's decide.lines); Timeline is a feature's
	// recent history for one key from the quality monitor (nil or false: none kept).
	Lines    decide.Lines
	Timeline func(feature, key string) ([]quality.Span, bool)
}

// Learning is what the learning page reads: the stored model sets, the one in force and the
// shadow, and the lift measured per experiment and arm.
type Learning interface {
	ModelSets(ctx context.Context) (active, shadow string, sets []registry.Meta, err error)
	Lifts(ctx context.Context) ([]kpi.Lift, error)
}

// Options are the console's collaborators.
type Options struct {
	Logger *slog.Logger
	Now    func() time.Time // tests
}

// Console is the console's HTTP handler.
type Console struct {
	cfg      Config
	src      Sources
	log      *slog.Logger
	now      func() time.Time
	prefix   string
	trusted  []netip.Prefix
	sessions *sessions
	signIns  *signIns
	dummy    []byte // the hash an unknown user's password is compared against
	pages    map[string]*template.Template
	mux      *http.ServeMux

	proxyMu   sync.Mutex
	proxySess map[string]*session
}

// New builds the console; cfg must have passed Validate.
func New(cfg Config, src Sources, opts Options) (*Console, error) {
	cfg.Defaults()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	c := &Console{cfg: cfg, src: src, log: opts.Logger.With("component", "console"), now: opts.Now, prefix: Prefix,
		sessions: newSessions(cfg.SessionTTL, opts.Now), signIns: newSignIns(opts.Now), proxySess: map[string]*session{}, dummy: dummyHash(cfg.Users)}
	for _, t := range cfg.Proxy.Trusted {
		p, err := parsePrefix(t)
		if err != nil {
			return nil, fmt.Errorf("console.proxy.trusted: %w", err)
		}
		c.trusted = append(c.trusted, p)
	}
	if err := c.parse(); err != nil {
		return nil, err
	}
	c.routes()
	return c, nil
}

func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	// Scripts and styles come from the console itself only: no inline script can run, so markup
	// from a record (a rule's text, a note) cannot become code even if escaping were missed.
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
		"frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
	c.mux.ServeHTTP(w, r)
}

func (c *Console) routes() {
	m := http.NewServeMux()
	p := c.prefix
	static, _ := fs.Sub(staticFS, "static")
	m.Handle("GET "+p+"/static/", http.StripPrefix(p+"/static/", staticHandler(static)))
	m.HandleFunc("GET "+p+"/login", c.loginPage)
	m.HandleFunc("POST "+p+"/login", c.login)
	m.HandleFunc("POST "+p+"/logout", c.authed(RoleViewer, c.logout))
	m.HandleFunc("GET "+p+"/{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, p+"/fleet", http.StatusSeeOther)
	})
	m.HandleFunc("GET "+p+"/fleet", c.authed(RoleViewer, c.fleetPage))
	m.HandleFunc("GET "+p+"/features", c.authed(RoleViewer, c.featuresPage))
	m.HandleFunc("GET "+p+"/inventory", c.authed(RoleViewer, c.inventoryPage))
	m.HandleFunc("GET "+p+"/decisions", c.authed(RoleViewer, c.decisionsPage))
	m.HandleFunc("GET "+p+"/decisions/live", c.authed(RoleViewer, c.live))
	m.HandleFunc("GET "+p+"/decisions/{id}", c.authed(RoleViewer, c.whyPage))
	m.HandleFunc("GET "+p+"/approvals", c.authed(RoleViewer, c.approvalsPage))
	m.HandleFunc("POST "+p+"/approvals/{id}/{answer}", c.authed(RoleApprover, c.answer))
	m.HandleFunc("POST "+p+"/kill", c.authed(RoleAdmin, c.kill))
	m.HandleFunc("GET "+p+"/rules", c.authed(RoleViewer, c.rulesPage))
	m.HandleFunc("GET "+p+"/learning", c.authed(RoleViewer, c.learningPage))
	m.HandleFunc("GET "+p+"/rules/diff", c.authed(RoleViewer, c.diffPage))
	m.HandleFunc("POST "+p+"/rules/{op}", c.authed(RoleAdmin, c.rulesChange))
	c.mux = m
}

func staticHandler(fsys fs.FS) http.Handler {
	fsrv := http.FileServerFS(fsys)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/") || r.URL.Path == "" {
			http.NotFound(w, r) // no directory listings
			return
		}
		w.Header().Set("Cache-Control", "public, max-age=3600")
		fsrv.ServeHTTP(w, r)
	})
}

// page is what every template gets.
type page struct {
	Title  string
	Nav    string
	Prefix string
	User   string
	Role   string
	CSRF   string
	Msg    string
	Data   any
	// Can are the role checks the templates use to show buttons (the server checks again).
	CanApprove, CanAdmin bool
}

var funcs = template.FuncMap{
	"short": func(v string) string { return v[:min(len(v), 12)] },
	"ago": func(s float64) string {
		if math.IsNaN(s) || math.IsInf(s, 0) {
			return "?"
		}
		return (time.Duration(s * float64(time.Second))).Round(time.Second).String()
	},
	"since": func(now, t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return now.Sub(t).Round(time.Second).String()
	},
	"stamp": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
	"num": func(f float64) string {
		switch {
		case math.IsInf(f, 1):
			return "∞"
		case math.IsInf(f, -1):
			return "−∞"
		case math.IsNaN(f):
			return "NaN"
		}
		return fmt.Sprintf("%.4g", f)
	},
	// rate is a count per hour: whole units from 100 up (never 1.8e+05), three digits below.
	"rate": func(f float64) string {
		if math.Abs(f) >= 100 && !math.IsInf(f, 0) {
			return strconv.FormatFloat(f, 'f', 0, 64)
		}
		return fmt.Sprintf("%.3g", f)
	},
	// fixed3 is a figure with three decimals; "—" for one that is not a finite number (a lift over a
	// baseline near 0: kpi.Lift).
	"fixed3": func(f float64) string {
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return "—"
		}
		return strconv.FormatFloat(f, 'f', 3, 64)
	},
	"pct": func(f float64) string { return fmt.Sprintf("%.1f%%", f*100) },
	"days": func(d float64) string {
		if math.IsInf(d, 1) {
			return "no demand"
		}
		return strconv.FormatFloat(d, 'f', 1, 64)
	},
	"action": func(a any) string {
		switch a := a.(type) {
		case rules.Action:
			return audit.FormatAction(a)
		case *rules.Action:
			if a != nil {
				return audit.FormatAction(*a)
			}
		}
		return "none"
	},
	"rowOf": func(r audit.Record, prefix string) map[string]any { return map[string]any{"R": r, "Prefix": prefix} },
	"join":  strings.Join,
}

func (c *Console) parse() error {
	c.pages = map[string]*template.Template{}
	base, err := template.New("base").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/parts.html")
	if err != nil {
		return fmt.Errorf("console templates: %w", err)
	}
	for _, name := range []string{"login", "error", "fleet", "features", "inventory", "decisions", "why", "approvals", "rules", "diff", "learning"} {
		t, err := base.Clone()
		if err == nil {
			t, err = t.ParseFS(templateFS, "templates/"+name+".html")
		}
		if err != nil {
			return fmt.Errorf("console template %s: %w", name, err)
		}
		c.pages[name] = t
	}
	return nil
}

// render writes a whole page; it renders into a buffer first so that a template error is a 500
// rather than half a page.
func (c *Console) render(w http.ResponseWriter, r *http.Request, code int, name string, p page) {
	p.Prefix, p.Nav = c.prefix, name
	if ss := sessionOf(r); ss != nil {
		p.User, p.Role, p.CSRF = ss.user, ss.role.String(), ss.csrf
		p.CanApprove, p.CanAdmin = ss.role >= RoleApprover, ss.role >= RoleAdmin
	}
	if ss := sessionOf(r); p.Msg == "" && ss != nil {
		if m := ss.flash.Swap(nil); m != nil {
			p.Msg = *m
		}
	}
	var buf bytes.Buffer
	if err := c.pages[name].ExecuteTemplate(&buf, "layout", p); err != nil {
		c.log.Error("console: render", "page", name, "err", err)
		http.Error(w, "console: page "+name+" could not be rendered", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}

// done redirects after a change to path, where the change's result msg is shown once, to this
// session only (a link cannot put words on the console's pages).
func (c *Console) done(w http.ResponseWriter, r *http.Request, path, msg string) {
	if ss := sessionOf(r); ss != nil {
		ss.flash.Store(&msg)
	}
	http.Redirect(w, r, c.prefix+path, http.StatusSeeOther)
}

// fail answers an error: a page for a browser, text for htmx and scripts.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, code int, msg string) {
	if r.Header.Get("HX-Request") != "" || !strings.Contains(r.Header.Get("Accept"), "text/html") {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(code)
		_, _ = w.Write([]byte(msg + "\n"))
		return
	}
	c.render(w, r, code, "error", page{Title: http.StatusText(code), Data: map[string]any{"Code": code, "Message": msg}})
}
