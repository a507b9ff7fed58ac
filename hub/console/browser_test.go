package console_test

import (
	"context"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/gemba-io/gemba/internal/testutil"
)

// browser is a headless Debian chromium driven over the DevTools protocol; every console error or
// uncaught exception a page logs is kept, and fails the test.
type browser struct {
	t      *testing.T
	ctx    context.Context
	mu     sync.Mutex
	errs   []string
	shots  string // where screenshots go ("" = none)
	cancel func()
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	bin := ""
	for _, name := range []string{"chromium", "chromium-browser", "/usr/lib/chromium/chromium"} {
		if p, err := exec.LookPath(name); err == nil {
			bin = p
			break
		}
	}
	if bin == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("chromium is required under CI (apt-get install -y chromium; make peers)")
		}
		t.Skip("chromium not installed (apt-get install -y chromium); skipping the browser test")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(bin), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.WindowSize(1400, 1000), chromedp.UserDataDir(t.TempDir()))
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	b := &browser{t: t, ctx: ctx}
	if dir := os.Getenv("GEMBA_SCREENSHOTS"); dir != "" {
		if !filepath.IsAbs(dir) {
			dir = filepath.Join("..", "..", dir) // relative to the repository root, where make runs
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		b.shots = dir
	}
	// The first Run starts the browser (no timeout on it: it would stop the browser).
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		acancel()
		t.Fatalf("start chromium: %v", err)
	}
	lctx, lcancel := context.WithCancel(ctx)
	msgs := chromedp.Console(lctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			if m.IsException() || m.Type == chromedp.ConsoleError {
				b.mu.Lock()
				b.errs = append(b.errs, m.String()+" at "+m.URL)
				b.mu.Unlock()
			}
		}
	})
	b.cancel = func() {
		lcancel()
		wg.Wait()
		cancel()
		acancel()
	}
	t.Cleanup(b.close)
	return b
}

func (b *browser) close() {
	if b.cancel != nil {
		b.cancel()
		b.cancel = nil
	}
}

// checkErrors fails the test for any JavaScript error logged so far.
func (b *browser) checkErrors() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, e := range b.errs {
		b.t.Errorf("page logged a JavaScript error: %s", e)
	}
	b.errs = nil
}

// do runs steps with a deadline.
func (b *browser) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 15*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

func (b *browser) text(sel string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 15*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

func (b *browser) eval(js string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 15*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
	if err != nil {
		b.t.Fatalf("eval %s: %v", js, err)
	}
	return s
}

func (b *browser) shot(name string) {
	b.t.Helper()
	if b.shots == "" {
		return
	}
	ctx, cancel := context.WithTimeout(b.ctx, 15*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(b.shots, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

func (b *browser) signIn(base, user string) {
	b.t.Helper()
	b.do("sign in as "+user,
		chromedp.Navigate(base+"/fleet"),
		chromedp.WaitVisible(chromedp.CSS("#login")),
		chromedp.SendKeys(chromedp.CSS("#user-name"), user),
		chromedp.SendKeys(chromedp.CSS("#password"), passwords[user]),
		chromedp.Click(chromedp.CSS(`#login button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS("#fleet")),
	)
	if got := b.text("#user"); got != user {
		b.t.Fatalf("signed in as %q, want %s", got, user)
	}
}

func (b *browser) signOut() {
	b.t.Helper()
	b.do("sign out", chromedp.Click(chromedp.CSS(`header .who button`)), chromedp.WaitVisible(chromedp.CSS("#login")))
}

// waitText reloads url until sel's text contains want, and returns it.
func (b *browser) waitText(url, sel, want string, within time.Duration) string {
	b.t.Helper()
	var got string
	defer func() {
		if b.t.Failed() {
			b.t.Logf("last text of %s: %q", sel, got)
		}
	}()
	testutil.WaitFor(b.t, within, url+" "+sel+" containing "+want, func() bool {
		b.do("open "+url, chromedp.Navigate(url), chromedp.WaitReady(chromedp.CSS("main")))
		got = b.eval(`(function(){var e=document.querySelector(` + jsString(sel) + `);return e?e.textContent:""})()`)
		return strings.Contains(got, want)
	})
	return got
}

func jsString(s string) string { return "'" + strings.ReplaceAll(s, "'", `\'`) + "'" }

// TestBrowser drives the console in Debian's chromium against a real hub on embedded NATS: an
// approver signs in, sees a decision arrive live, opens its why page, approves a pending
// promotion and sees it delivered (NATS and webhook); an admin compares and changes rule versions
// and rolls one back; a viewer sees no buttons, and the server answers 403 to each of those
// changes made with the viewer's own session and CSRF token. No page may log a JavaScript error.
func TestBrowser(t *testing.T) {
	th := startHub(t, hubOptions{})
	b := newBrowser(t)
	base := th.base
	th.heartbeat(t, "gw1", time.Now().UTC(), 42)
	th.heartbeat(t, "gw2", time.Now().UTC().Add(-5*time.Minute), 1800)
	th.silentFor(t, "gw2", 5*time.Minute) // stale: the hub last heard of it 5 minutes ago
	th.stock(t)
	th.unitsAt(t, time.Now().UTC().Add(-2*time.Hour), map[string]float64{"SKU-3": 3}) // past max_age: stale, decides nothing

	// An approver watches the decision feed; a decision arrives while the page is open.
	b.signIn(base, "alice")
	// The error listener hears the page: a probe error logged now must reach it (then it is cleared).
	b.eval(`console.error('gemba-probe'); 'logged'`)
	testutil.WaitFor(t, 10*time.Second, "the probe console error", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		n := len(b.errs)
		b.errs = slices.DeleteFunc(b.errs, func(e string) bool { return strings.Contains(e, "gemba-probe") })
		return len(b.errs) < n
	})
	b.shot("fleet")
	b.do("decisions page", chromedp.Navigate(base+"/decisions"), chromedp.WaitVisible(chromedp.CSS("#feed")))
	testutil.WaitFor(t, 10*time.Second, "the live feed connected", func() bool { return b.eval(`document.getElementById('live-state').className`) == "live-dot on" })
	th.units(t, map[string]float64{"SKU-1": 7})
	b.do("a decision arrives live", chromedp.WaitVisible(chromedp.CSS(`#feed tr.decision`)))
	row := b.text(`#feed tr.decision`)
	if !strings.Contains(row, "SKU-1") || !strings.Contains(row, "promote-made") || !strings.Contains(row, "fired") {
		t.Fatalf("live row %q: want SKU-1, rule promote-made, fired", row)
	}
	b.shot("decisions")

	// Its why page: rule and version, inputs with lineage, guardrails, delivery.
	b.do("open the why page", chromedp.Click(chromedp.CSS(`#feed tr.decision a`)), chromedp.WaitVisible(chromedp.CSS("#why")))
	if s := b.text("#rule"); !strings.Contains(s, "promote-made") {
		t.Errorf("why rule: %q", s)
	}
	if s := b.text("#rule-set"); !strings.Contains(s, "console-test version") {
		t.Errorf("why rule set: %q", s)
	}
	if s := b.text("#inputs"); !strings.Contains(s, "units") || !strings.Contains(s, "gw1") || !strings.Contains(s, "l1.pack.parts") {
		t.Errorf("why inputs: %q, want units with lineage gw1 / l1.pack.parts", s)
	}
	if s := b.text("#verdict"); !strings.Contains(s, "allow") {
		t.Errorf("why verdict: %q", s)
	}
	if s := b.text("#experiment"); !strings.Contains(s, "console-holdout") || !strings.Contains(s, "treated") {
		t.Errorf("why experiment: %q, want the holdout console-holdout with the arm treated", s)
	}
	whyURL := b.eval(`location.href`)
	b.waitText(whyURL, "main", "Start delivered", 15*time.Second)
	b.shot("why")

	// A big count asks for a 30% promotion: it waits for approval; alice approves it with a reason.
	th.units(t, map[string]float64{"SKU-2": 500})
	b.waitText(base+"/approvals", "#pending", "SKU-2", 15*time.Second)
	b.shot("approvals")
	pendingID := b.eval(`document.querySelector('#pending tr[data-id]').dataset.id`)
	b.do("approve",
		chromedp.SendKeys(chromedp.CSS(`#pending tr[data-id] input[name="reason"]`), "stock is high, margin allows"),
		chromedp.Click(chromedp.CSS(`#pending tr[data-id] button.approve`)),
		chromedp.WaitVisible(chromedp.CSS("#why")),
	)
	if s := b.text("#msg"); !strings.Contains(s, "allow") {
		t.Errorf("after approving: %q", s)
	}
	if s := b.text("#approver"); s != "alice" {
		t.Errorf("approver recorded: %q, want alice", s)
	}
	b.waitText(base+"/decisions/"+pendingID, "main", "Start delivered", 15*time.Second)
	th.hooks.mu.Lock()
	hooks := th.hooks.n
	th.hooks.mu.Unlock()
	if hooks < 2 {
		t.Errorf("webhook received %d deliveries, want both promotions", hooks)
	}
	b.do("features page", chromedp.Navigate(base+"/features"), chromedp.WaitVisible(chromedp.CSS("#features")))
	if s := b.text("#features"); !strings.Contains(s, "SKU-2") {
		t.Errorf("features: %q", s)
	}
	if s := b.eval(`Array.from(document.querySelectorAll('#features tr.stale')).map(r => r.textContent).join('|')`); !strings.Contains(s, "SKU-3") || !strings.Contains(s, "STALE") {
		t.Errorf("the stale value of SKU-3 is not marked: %q", s)
	}
	if s := b.text("#lines"); !strings.Contains(s, "l1") || !strings.Contains(s, "Units/h per SKU") {
		t.Errorf("the lines table does not list l1 with units/h per SKU: %q", s)
	}
	// l1 makes SKU-1..3 (graph): SKU-1's 7 units in a 10 s window are 2520/h; SKU-3's reading is stale.
	if s := b.eval(`document.querySelector('#lines li[data-sku="SKU-1"]').textContent`); !strings.Contains(s, "2520/h") {
		t.Errorf("SKU-1 on l1: %q, want 2520/h", s)
	}
	if s := b.eval(`(document.querySelector('#lines li.stale[data-sku="SKU-3"]') || {textContent: ''}).textContent`); !strings.Contains(s, "STALE") {
		t.Errorf("SKU-3 on l1 is not marked stale: %q", s)
	}
	b.shot("features")
	b.do("inventory page", chromedp.Navigate(base+"/inventory"), chromedp.WaitVisible(chromedp.CSS("#inventory")))
	if s := b.text("#inventory"); !strings.Contains(s, "SKU-3") {
		t.Errorf("inventory: %q", s)
	}
	b.shot("inventory")
	b.do("learning page", chromedp.Navigate(base+"/learning"), chromedp.WaitVisible(chromedp.CSS("#models")))
	if s := b.text("main"); !strings.Contains(s, "Demand models") || !strings.Contains(s, "Experiments") {
		t.Errorf("learning: %q", s)
	}
	b.shot("learning")
	b.do("fleet page", chromedp.Navigate(base+"/fleet"), chromedp.WaitVisible(chromedp.CSS("#fleet")))
	if s := b.eval(`document.querySelector('#fleet tr.stale') ? document.querySelector('#fleet tr.stale').textContent : ''`); !strings.Contains(s, "gw2") {
		t.Errorf("the stale agent gw2 does not stand out: %q", s)
	}
	b.shot("fleet")
	b.signOut()
	b.shot("login")

	// An admin stores and activates a second version, compares the two, and rolls back.
	b.signIn(base, "root")
	b.do("rules page", chromedp.Navigate(base+"/rules"), chromedp.WaitVisible(chromedp.CSS("#versions")))
	v1 := strings.TrimSpace(b.text("#active"))
	v2rules := strings.Replace(strings.Replace(rulesV1, "discount: 10", "discount: 12", 1), "name: console-test", "name: console-test-v2", 1)
	b.do("activate v2",
		chromedp.SetValue(chromedp.CSS(`#change textarea[name="yaml"]`), v2rules),
		chromedp.SendKeys(chromedp.CSS(`#change input[name="why"]`), "try 12%"),
		chromedp.Click(chromedp.CSS(`#change button[formaction$="/activate"]`)),
		chromedp.WaitVisible(chromedp.CSS("#msg")),
	)
	v2 := strings.TrimSpace(b.text("#active"))
	if v2 == v1 || !strings.Contains(b.text("#msg"), "activate") {
		t.Fatalf("after activating v2: active %s (was %s), %q", v2, v1, b.text("#msg"))
	}
	b.do("diff", chromedp.Click(chromedp.CSS("#diff-button")), chromedp.WaitVisible(chromedp.CSS("pre.diff")))
	if d := b.text("pre.diff"); !strings.Contains(d, "- ") || !strings.Contains(d, "discount: 12") {
		t.Errorf("diff v1 → v2: %q", d)
	}
	b.shot("rules")
	b.do("roll back",
		chromedp.Navigate(base+"/rules"), // a page without the last change's message, so that #msg is the rollback's
		chromedp.WaitVisible(chromedp.CSS("#rollback")),
		chromedp.SendKeys(chromedp.CSS(`#rollback input[name="why"]`), "12% was a mistake"),
		chromedp.Click(chromedp.CSS(`#rollback button`)),
		chromedp.WaitVisible(chromedp.CSS("#msg")),
	)
	if got := strings.TrimSpace(b.text("#active")); got != v1 || !strings.Contains(b.text("#msg"), "rollback") {
		t.Errorf("after rollback: active %s, want %s (%q)", got, v1, b.text("#msg"))
	}
	if h := b.text("#history"); !strings.Contains(h, "12% was a mistake") || !strings.Contains(h, "root") {
		t.Errorf("history does not record the rollback by root: %q", h)
	}
	b.signOut()

	// A viewer sees no buttons; the server refuses each change made with the viewer's own session
	// and CSRF token.
	th.units(t, map[string]float64{"SKU-3": 900})
	b.signIn(base, "vera")
	b.waitText(base+"/approvals", "#pending", "SKU-3", 15*time.Second)
	if n := b.eval(`String(document.querySelectorAll('#pending button').length)`); n != "0" {
		t.Errorf("a viewer sees %s answer buttons", n)
	}
	b.do("rules as viewer", chromedp.Navigate(base+"/rules"), chromedp.WaitVisible(chromedp.CSS("#versions")))
	if n := b.eval(`String(document.querySelectorAll('#rollback, #change, #clear').length)`); n != "0" {
		t.Errorf("a viewer sees %s rules change forms", n)
	}
	viewer := signIn(t, base, "vera")
	pending := between(viewer.get("/approvals"), `tr data-id="`, `"`)
	if pending == "" {
		t.Fatal("the viewer's client sees no pending approval")
	}
	for _, c := range []struct {
		path string
		form url.Values
	}{
		{"/approvals/" + pending + "/approve", url.Values{"reason": {"me"}}},
		{"/approvals/" + pending + "/reject", url.Values{"reason": {"me"}}},
		{"/rules/rollback", url.Values{"why": {"me"}}},
		{"/rules/activate", url.Values{"why": {"me"}, "version": {v2}}},
	} {
		if code := viewer.post(c.path, c.form); code != http.StatusForbidden {
			t.Errorf("viewer POST %s: %d, want 403", c.path, code)
		}
	}
	// The pending promotion was asked for by root's rollback (the rules change's author): root may
	// not approve it (guard.approval.forbid_self_approval).
	if !strings.Contains(viewer.get("/approvals"), "<td>root</td>") {
		t.Error("the pending promotion does not name root as its requester")
	}
	admin := signIn(t, base, "root")
	if code := admin.post("/approvals/"+pending+"/approve", url.Values{"reason": {"mine"}}); code != http.StatusForbidden {
		t.Errorf("root approving their own request: %d, want 403", code)
	}
	// And a change without the CSRF token is refused for an admin too.
	admin.csrf = ""
	if code := admin.post("/rules/rollback", url.Values{"why": {"no token"}}); code != http.StatusForbidden {
		t.Errorf("admin rollback without a CSRF token: %d, want 403", code)
	}
	if got := between(admin.get("/rules"), `id="active"><code>`, `<`); got != v1 {
		t.Errorf("active after the refused changes: %s, want %s", got, v1)
	}
	b.checkErrors()
	b.close()
}
