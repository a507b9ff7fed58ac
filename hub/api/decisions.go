package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/gemba-io/gemba/config"
	"github.com/gemba-io/gemba/hub/act"
	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/decide"
	"github.com/gemba-io/gemba/hub/decide/guard"
)

// Decisions is what the decision endpoints read and change; the hub implements it over its
// decision room.
type Decisions interface {
	Recent(ctx context.Context, f audit.Filter) ([]audit.Record, error)
	// RecentPage is Recent with where the read stopped (audit.Log.RecentPage).
	RecentPage(ctx context.Context, f audit.Filter) (audit.Page, error)
	History(ctx context.Context, id string) ([]audit.Record, error)
	// Delivery is the outbox record of an acted decision (nil when it has none).
	Delivery(ctx context.Context, id string) (*act.Record, error)
	// PendingPage is a page of the approval queue (guard.Guard.PendingPage).
	PendingPage(ctx context.Context, after uint64, limit int) (guard.QueuePage, error)
	Answer(ctx context.Context, id, by, reason string, approve bool) (guard.Verdict, error)
	Kill(ctx context.Context) (guard.KillSwitch, error)
	// SetKill throws or resets the kill switch (k.At is set by the guard); k.EndLive, only with
	// k.On, also ends every promotion running.
	SetKill(ctx context.Context, k guard.KillSwitch) error
	Rules(ctx context.Context) (audit.Change, []audit.Change, error)
}

// maxBody bounds a request body of the decision endpoints.
const maxBody = 16 << 10

// Writer is a named write token (http.writers): a change made with Token is recorded as made by
// Name.
type Writer struct{ Name, Token string }

// Unverified marks the reason of a change made with the shared write token: its by is the body's,
// which nobody checked.
const Unverified = "[shared token: by not verified]"

// DecisionsHandler serves the decision endpoints under /api/v1/: reads with readToken (open when
// empty), changes (approve, reject, kill switch) only with a writer's token, recorded as made by
// that writer, or with the shared writeToken, recorded under the body's by marked Unverified.
// Changes have no default: without a writer or writeToken they answer 403. Tokens are bearer
// tokens in the Authorization header, which a browser never sends on its own, so a cross-site form
// cannot forge a change.
func DecisionsHandler(src func() Decisions, readToken, writeToken string, writers ...Writer) http.Handler {
	d := &decisionsAPI{src: src}
	mux := http.NewServeMux()
	read := func(h http.HandlerFunc) http.HandlerFunc { return bearer(readToken, h) }
	write := func(h func(http.ResponseWriter, *http.Request, author)) http.HandlerFunc {
		if writeToken == "" && len(writers) == 0 {
			return func(w http.ResponseWriter, _ *http.Request) {
				writeErr(w, http.StatusForbidden, "changes are disabled: set http.writers (or http.write_token)")
			}
		}
		return func(w http.ResponseWriter, r *http.Request) {
			a, ok := authorOf(r, writeToken, writers)
			if !ok {
				w.Header().Set("WWW-Authenticate", `Bearer realm="gemba-hub"`)
				writeErr(w, http.StatusUnauthorized, "missing or wrong bearer token")
				return
			}
			h(w, r, a)
		}
	}
	mux.HandleFunc("GET /api/v1/decisions", read(d.recent))
	mux.HandleFunc("GET /api/v1/decisions/{id}", read(d.why))
	mux.HandleFunc("GET /api/v1/approvals", read(d.pending))
	mux.HandleFunc("POST /api/v1/approvals/{id}/{answer}", write(d.answer))
	mux.HandleFunc("GET /api/v1/kill", read(d.kill))
	mux.HandleFunc("PUT /api/v1/kill", write(d.setKill))
	mux.HandleFunc("GET /api/v1/rules", read(d.rules))
	return mux
}

// author is who a change's token says makes it: a writer's name, or the shared token (shared).
type author struct {
	name   string
	shared bool
}

// authorOf finds the writer whose token r carries, or the shared token. Every token is compared
// (in constant time), whichever matches: the time taken tells nothing of which one did.
func authorOf(r *http.Request, shared string, writers []Writer) (author, bool) {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return author{}, false
	}
	var a author
	found := false
	for _, w := range writers {
		if config.TokenEqual(got, w.Token) && w.Token != "" {
			a, found = author{name: w.Name}, true
		}
	}
	if shared != "" && config.TokenEqual(got, shared) && !found {
		a, found = author{shared: true}, true
	}
	return a, found
}

func bearer(token string, h http.HandlerFunc) http.HandlerFunc {
	if token == "" {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || !config.TokenEqual(got, token) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="gemba-hub"`)
			writeErr(w, http.StatusUnauthorized, "missing or wrong bearer token")
			return
		}
		h(w, r)
	}
}

type decisionsAPI struct{ src func() Decisions }

func (d *decisionsAPI) get(w http.ResponseWriter) Decisions {
	s := d.src()
	if s == nil {
		writeErr(w, http.StatusNotFound, "decisions are off: the hub config has no guard section")
	}
	return s
}

func (d *decisionsAPI) recent(w http.ResponseWriter, r *http.Request) {
	s := d.get(w)
	if s == nil {
		return
	}
	q := r.URL.Query()
	f := audit.Filter{SKU: q.Get("sku"), Channel: q.Get("channel"), Rule: q.Get("rule"), Outcome: q.Get("outcome"), Mode: q.Get("mode")}
	// A value no record has (a typo) would answer "none" after scanning the whole window.
	for _, c := range []struct {
		name, v string
		of      []string
	}{{"outcome", f.Outcome, audit.Outcomes}, {"mode", f.Mode, audit.Modes}} {
		if c.v != "" && !slices.Contains(c.of, c.v) {
			writeErr(w, http.StatusBadRequest, c.name+": want one of "+strings.Join(c.of, ", "))
			return
		}
	}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > audit.MaxLimit {
			writeErr(w, http.StatusBadRequest, "limit: want 1.."+strconv.Itoa(audit.MaxLimit))
			return
		}
		f.Limit = n
	}
	if b := q.Get("before"); b != "" {
		n, err := strconv.ParseUint(b, 10, 64)
		if err != nil || n < 1 {
			writeErr(w, http.StatusBadRequest, "before: want a sequence (a page's next), 1 or more")
			return
		}
		f.Before = n
	}
	p, err := s.RecentPage(r.Context(), f)
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	out := map[string]any{"decisions": orEmpty(p.Records)}
	if p.Next != 0 {
		// A full page, or a read that stopped at its scan bound (scan_cut): more may match before.
		out["next"] = nextQuery(q, url.Values{"before": {strconv.FormatUint(p.Next, 10)}}, "sku", "channel", "rule", "outcome", "mode", "limit")
		out["scan_cut"] = p.ScanCut
	}
	writeJSON(w, out)
}

// why is one decision: every record of it (decided, then approved, ...) and its delivery.
func (d *decisionsAPI) why(w http.ResponseWriter, r *http.Request) {
	s := d.get(w)
	if s == nil {
		return
	}
	id := r.PathValue("id")
	if !audit.ValidID(id) {
		writeErr(w, http.StatusNotFound, "no decision "+id+": a decision id is 32 lower-case hex digits")
		return
	}
	recs, err := s.History(r.Context(), id)
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	if len(recs) == 0 {
		writeErr(w, http.StatusNotFound, "no decision "+id)
		return
	}
	del, err := s.Delivery(r.Context(), id)
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	if strings.Contains(r.Header.Get("Accept"), "text/plain") {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		audit.Explain(w, recs, del)
		return
	}
	writeJSON(w, map[string]any{"id": id, "records": recs, "delivery": del})
}

// pending is a page of the approval queue, oldest first: limit requests (as the other lists page)
// after the queue position after, a page's next; total counts the queue.
func (d *decisionsAPI) pending(w http.ResponseWriter, r *http.Request) {
	s := d.get(w)
	if s == nil {
		return
	}
	q := r.URL.Query()
	limit, ok := pageLimit(w, q)
	if !ok {
		return
	}
	var after uint64
	if a := q.Get("after"); a != "" {
		n, err := strconv.ParseUint(a, 10, 64)
		if err != nil || n < 1 {
			writeErr(w, http.StatusBadRequest, "after: want a queue position (a page's next), 1 or more")
			return
		}
		after = n
	}
	p, err := s.PendingPage(r.Context(), after, limit)
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	out := map[string]any{"approvals": orEmpty(p.Requests), "total": p.Total}
	if p.Next != 0 {
		out["next"] = nextQuery(q, url.Values{"after": {strconv.FormatUint(p.Next, 10)}}, "limit")
	}
	writeJSON(w, out)
}

// change is the body of a change: who makes it and why.
type change struct {
	By     string `json:"by"`
	Reason string `json:"reason"`
	On     *bool  `json:"on,omitempty"` // kill switch only
	// EndLive (kill switch only, with on: true) also ends every promotion running now.
	EndLive bool `json:"end_live,omitempty"`
}

// readChange reads a change's body and settles who makes it: a writer, whose by may be left out
// and must otherwise be the writer's name (a different one is refused, never replaced), or the
// shared token, whose by is required and whose reason is marked Unverified.
func readChange(w http.ResponseWriter, r *http.Request, a author) (change, bool) {
	var c change
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(&c)
	if err == io.EOF {
		err = errors.New("empty: want a JSON object")
	}
	if err == nil {
		// One object and nothing else: a second one after it would otherwise be dropped unread
		// (a throw followed by a reset read as a throw).
		if _, terr := dec.Token(); terr != io.EOF {
			err = errors.New("unexpected data after the JSON object")
			if terr != nil && !errors.As(terr, new(*json.SyntaxError)) {
				err = terr
			}
		}
	}
	if tooBig := (*http.MaxBytesError)(nil); errors.As(err, &tooBig) {
		writeErr(w, http.StatusRequestEntityTooLarge, "body: larger than "+strconv.Itoa(maxBody)+" bytes")
		return c, false
	}
	if err != nil {
		writeErr(w, http.StatusBadRequest, "body: "+err.Error())
		return c, false
	}
	c.By = strings.TrimSpace(c.By)
	switch {
	case !a.shared && c.By != "" && c.By != a.name:
		writeErr(w, http.StatusBadRequest, "body: by must be the token's name, "+a.name+" (or left out)")
		return c, false
	case !a.shared:
		c.By = a.name
	case c.By == "":
		writeErr(w, http.StatusBadRequest, "body: by (who makes the change) is required with the shared write token")
		return c, false
	case strings.ContainsFunc(c.By, unicode.IsControl):
		// A line break would write lines of its own into the why text (an approval by someone else).
		writeErr(w, http.StatusBadRequest, "body: by must be one line of text without control characters")
		return c, false
	case c.Reason == "":
		c.Reason = Unverified
	default:
		c.Reason = Unverified + " " + c.Reason
	}
	return c, true
}

func (d *decisionsAPI) answer(w http.ResponseWriter, r *http.Request, a author) {
	s := d.get(w)
	if s == nil {
		return
	}
	var approve bool
	switch r.PathValue("answer") {
	case "approve":
		approve = true
	case "reject":
	default:
		writeErr(w, http.StatusNotFound, "want /approvals/{id}/approve or /reject")
		return
	}
	if id := r.PathValue("id"); !audit.ValidID(id) {
		writeErr(w, http.StatusNotFound, "no decision "+id+": a decision id is 32 lower-case hex digits")
		return
	}
	c, ok := readChange(w, r, a)
	if !ok {
		return
	}
	// Not cut short by a client that goes away: an answer the guard took is recorded (who
	// approved, in the decision log) and enqueued within the same call.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 30*time.Second)
	defer cancel()
	v, err := s.Answer(ctx, r.PathValue("id"), c.By, c.Reason, approve)
	switch {
	case err == nil:
		writeJSON(w, v)
	case errors.Is(err, guard.ErrNotFound), errors.Is(err, decide.ErrNoRecord):
		writeErr(w, http.StatusNotFound, err.Error())
	case errors.Is(err, guard.ErrSelfApproval):
		writeErr(w, http.StatusForbidden, err.Error())
	case errors.Is(err, guard.ErrState), errors.Is(err, guard.ErrExpired), errors.Is(err, guard.ErrKilled):
		writeErr(w, http.StatusConflict, err.Error())
	default:
		writeErr(w, http.StatusServiceUnavailable, err.Error())
	}
}

func (d *decisionsAPI) kill(w http.ResponseWriter, r *http.Request) {
	s := d.get(w)
	if s == nil {
		return
	}
	k, err := s.Kill(r.Context())
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	writeJSON(w, k)
}

func (d *decisionsAPI) setKill(w http.ResponseWriter, r *http.Request, a author) {
	s := d.get(w)
	if s == nil {
		return
	}
	c, ok := readChange(w, r, a)
	if !ok {
		return
	}
	if c.On == nil {
		writeErr(w, http.StatusBadRequest, "body: on (true throws the kill switch, false resets it) is required")
		return
	}
	if c.EndLive && !*c.On {
		writeErr(w, http.StatusBadRequest, "body: end_live (end every promotion running) applies only with on: true")
		return
	}
	want := guard.KillSwitch{On: *c.On, EndLive: c.EndLive, By: c.By, Reason: c.Reason}
	// Not cut short by a client that goes away (as an answer): the guard retries through a leader
	// election, and a switch left unthrown because curl gave up first is one nobody is told of.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 30*time.Second)
	defer cancel()
	if err := s.SetKill(ctx, want); err != nil {
		writeErr(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	k, err := s.Kill(ctx)
	if err != nil {
		// It is set: a failed read-back must not tell the caller it was not (a retry is harmless,
		// but an operator reading 503 in an incident would think the switch did not move).
		k, k.At = want, time.Now().UTC()
	}
	writeJSON(w, k)
}

func (d *decisionsAPI) rules(w http.ResponseWriter, r *http.Request) {
	s := d.get(w)
	if s == nil {
		return
	}
	cur, hist, err := s.Rules(r.Context())
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	writeJSON(w, map[string]any{"current": cur, "history": hist})
}

func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
