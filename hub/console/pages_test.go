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

	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/decide/rules"
	"github.com/gemba-io/gemba/hub/decide/versions"
)

func rec(seq uint64, sku string) audit.Record {
	return audit.Record{DecisionID: fmt.Sprintf("%032x", seq), Event: audit.EventDecided, Outcome: audit.OutcomeFired, Mode: audit.ModeActive,
		SKU: sku, Channel: "web", Seq: seq, Rule: audit.RuleRef{Name: "r<script>"},
		Action: rules.Action{Kind: rules.Promote, Channels: []string{"web"}, Discount: 10, Duration: time.Hour}}
}

// TestLiveFeed: the live endpoint sends each record newer than the page once, oldest first, as one
// SSE event with a one-line HTML row (escaped), and only those matching the page's filter.
func TestLiveFeed(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.LivePoll = 100 * time.Millisecond })
	e.dec.recs = []audit.Record{rec(3, "A"), rec(2, "B")}
	srv := httptest.NewServer(e.c)
	defer srv.Close()
	sc, _ := e.login(t, "vera", "viewer-pw")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/console/decisions/live?sku=A&after=2", nil)
	req.AddCookie(sc)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != "text/event-stream" {
		t.Fatalf("live: %d %s", resp.StatusCode, ct)
	}
	events := make(chan string, 16)
	go func() {
		defer close(events)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				events <- d
			}
		}
	}()
	next := func() string {
		select {
		case d := <-events:
			return d
		case <-time.After(10 * time.Second):
			t.Fatal("no live event")
		}
		return ""
	}
	first := next()
	if !strings.Contains(first, fmt.Sprintf("%032x", 3)) || strings.Contains(first, "<script>") || !strings.Contains(first, "r&lt;script&gt;") {
		t.Fatalf("first event %q: want record 3 with its rule name escaped", first)
	}
	e.dec.mu.Lock()
	e.dec.recs = append([]audit.Record{rec(5, "A"), rec(4, "B")}, e.dec.recs...)
	e.dec.mu.Unlock()
	second := next()
	if !strings.Contains(second, fmt.Sprintf("%032x", 5)) {
		t.Fatalf("second event %q: want record 5 (record 3 sent once, record 4 is another SKU's)", second)
	}
	cancel()
	for range events { // the reader ends with the request
	}

	// A reconnect with Last-Event-ID 5 gets only what came after 5.
	e.dec.mu.Lock()
	e.dec.recs = append([]audit.Record{rec(6, "A")}, e.dec.recs...)
	e.dec.mu.Unlock()
	req, _ = http.NewRequest("GET", srv.URL+"/console/decisions/live?sku=A&after=2", nil)
	req.AddCookie(sc)
	req.Header.Set("Last-Event-ID", "5")
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	resp2, err := http.DefaultClient.Do(req.WithContext(ctx2))
	if err != nil {
		t.Fatal(err)
	}
	defer resp2.Body.Close()
	sc2 := bufio.NewScanner(resp2.Body)
	got := ""
	for got == "" && sc2.Scan() {
		got, _ = strings.CutPrefix(sc2.Text(), "data: ")
		if !strings.HasPrefix(sc2.Text(), "data: ") {
			got = ""
		}
	}
	if !strings.Contains(got, fmt.Sprintf("%032x", 6)) {
		t.Fatalf("after a reconnect from 5: %q, want record 6 first", got)
	}
	cancel2()
}

// fakeRules is the registry's behaviour the rules handlers rely on (the browser test drives the real one).
type fakeRules struct {
	changes []string
}

func (f *fakeRules) Store(_ context.Context, data []byte, _ string) (string, error) {
	if !strings.Contains(string(data), "rules:") {
		return "", fmt.Errorf("line 1: rules: required")
	}
	return strings.Repeat("c", 64), nil
}
func (f *fakeRules) Load(context.Context, string) ([]byte, error) { return nil, nil }
func (f *fakeRules) Meta(_ context.Context, v string) (versions.Meta, error) {
	return versions.Meta{Version: v}, nil
}
func (f *fakeRules) Resolve(_ context.Context, p string) (string, error) {
	if len(p) < 8 {
		return "", fmt.Errorf("version %q: give at least 8 hex digits", p)
	}
	return p, nil
}
func (f *fakeRules) record(op, v, by, why string) (audit.Change, error) {
	f.changes = append(f.changes, op+" "+v+" by "+by+": "+why)
	return audit.Change{Op: op, Active: v, By: by, Why: why, Seq: uint64(len(f.changes))}, nil
}
func (f *fakeRules) Activate(_ context.Context, v, by, why string) (audit.Change, error) {
	return f.record("activate", v, by, why)
}
func (f *fakeRules) Rollback(_ context.Context, by, why string) (audit.Change, error) {
	return audit.Change{}, versions.ErrNoPrevious
}
func (f *fakeRules) Shadow(_ context.Context, v, by, why string) (audit.Change, error) {
	return f.record("shadow", v, by, why)
}
func (f *fakeRules) Canary(_ context.Context, v string, share float64, unit, by, why string) (audit.Change, error) {
	return f.record(fmt.Sprintf("canary %g %s", share, unit), v, by, why)
}

// TestRulesChanges: each change needs a why and a good version; the change is recorded as the
// signed-in admin; what the registry refuses comes back as a clear 4xx.
func TestRulesChanges(t *testing.T) {
	e := newEnv(t, nil)
	fr := &fakeRules{}
	e.c.src.Rules = func() Rules { return fr }
	sc, tok := e.login(t, "root", "admin-pw")
	post := func(op string, form url.Values) (int, string) {
		form.Set("csrf", tok)
		w := e.do("POST", "/console/rules/"+op, form, []*http.Cookie{sc}, nil)
		return w.Code, w.Body.String() + w.Header().Get("Location")
	}
	for _, tc := range []struct {
		op   string
		form url.Values
		want int
		text string
	}{
		{"activate", url.Values{"version": {"abcdef12"}}, http.StatusBadRequest, "why is required"},
		{"activate", url.Values{"version": {"abc"}, "why": {"x"}}, http.StatusBadRequest, "at least 8 hex digits"},
		{"activate", url.Values{"yaml": {"name: x\n"}, "why": {"x"}}, http.StatusBadRequest, "pasted rules: line 1"},
		{"canary", url.Values{"version": {"abcdef12"}, "why": {"x"}, "share": {"2"}, "unit": {"sku"}}, http.StatusBadRequest, "share in (0, 1]"},
		{"rollback", url.Values{"why": {"x"}}, http.StatusConflict, "no previous version"},
		{"explode", url.Values{"why": {"x"}}, http.StatusNotFound, "unknown rules change"},
		{"activate", url.Values{"version": {"abcdef12"}, "why": {"go"}}, http.StatusSeeOther, "/console/rules"},
		{"shadow", url.Values{"yaml": {"name: y\r\nrules: []\r\n"}, "why": {"try"}}, http.StatusSeeOther, "/console/rules"},
		{"canary", url.Values{"version": {"abcdef12"}, "why": {"half"}, "share": {"0.5"}, "unit": {"site"}}, http.StatusSeeOther, "/console/rules"},
	} {
		code, text := post(tc.op, tc.form)
		if code != tc.want || !strings.Contains(text, tc.text) {
			t.Errorf("%s %v: %d %q, want %d with %q", tc.op, tc.form, code, text, tc.want, tc.text)
		}
	}
	want := []string{"activate abcdef12 by root: go", "shadow " + strings.Repeat("c", 64) + " by root: try", "canary 0.5 site abcdef12 by root: half"}
	if strings.Join(fr.changes, "|") != strings.Join(want, "|") {
		t.Fatalf("changes: %q, want %q", fr.changes, want)
	}
}
