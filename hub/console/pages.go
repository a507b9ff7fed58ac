package console

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gemba-io/gemba/hub/act"
	"github.com/gemba-io/gemba/hub/api"
	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/decide"
	"github.com/gemba-io/gemba/hub/decide/guard"
	"github.com/gemba-io/gemba/hub/learn/registry"
	"github.com/gemba-io/gemba/hub/monitor/fleet"
	"github.com/gemba-io/gemba/hub/state/features"
	"github.com/gemba-io/gemba/hub/state/graph"
	"github.com/gemba-io/gemba/hub/state/inventory"
)

func (c *Console) starting(w http.ResponseWriter, r *http.Request, what string) {
	c.fail(w, r, http.StatusServiceUnavailable, "the hub is starting: "+what+" not loaded yet")
}

func (c *Console) fleetPage(w http.ResponseWriter, r *http.Request) {
	f := c.src.Fleet()
	if f == nil {
		c.starting(w, r, "the fleet")
		return
	}
	// A page after a cursor (the last agent of the page before), chosen as the fleet is gone
	// through: a view costs memory by its page, not by the fleet.
	q := r.URL.Query()
	list := f.Page(q.Get("after_site"), q.Get("after_agent"), c.cfg.PageSize)
	total, stale := f.Counts()
	next := ""
	if len(list) == c.cfg.PageSize {
		last := list[len(list)-1]
		next = "?" + url.Values{"after_site": {last.Site}, "after_agent": {last.Agent.Agent}}.Encode()
	}
	c.render(w, r, http.StatusOK, "fleet", page{Title: "Fleet", Data: struct {
		Agents       []fleet.View
		Total, Stale int
		Next         string
	}{list, total, stale, next}})
}

// featureRow is one value with where it is (line, site from the graph when the key is a signal or line).
type featureRow struct {
	features.Reading
	Unit string
}

func (c *Console) featuresPage(w http.ResponseWriter, r *http.Request) {
	s := c.src.Features()
	if s == nil {
		c.starting(w, r, "features")
		return
	}
	q := r.URL.Query()
	defs, ver := s.Definitions()
	name, key := q.Get("name"), q.Get("key")
	// A page after a cursor (the last value of the page before), chosen as the store goes through
	// its values: a view costs memory by its page, not by the store.
	sel := s.Select(name, key, q.Get("after_name"), q.Get("after_key"), c.cfg.PageSize)
	rows := make([]featureRow, 0, len(sel.Page))
	for _, v := range sel.Page {
		rows = append(rows, featureRow{Reading: v})
	}
	off, end := sel.Before, sel.Before+len(sel.Page)
	var lines []graph.Node
	g := c.src.Graph()
	if g != nil {
		lines = g.Lines()
	}
	lineRows, skuNote := c.lineRows(s, g)
	next := ""
	if end < sel.Total && len(sel.Page) > 0 {
		last := sel.Page[len(sel.Page)-1]
		next = "?" + url.Values{"name": {name}, "key": {key}, "after_name": {last.Name}, "after_key": {last.Key}}.Encode()
	}
	c.render(w, r, http.StatusOK, "features", page{Title: "Lines & features", Data: map[string]any{
		"Defs": defs, "DefsVersion": ver, "Rows": rows, "Total": sel.Total, "Stale": sel.Stale, "From": off + 1, "To": end,
		"Next": next, "Name": name, "Key": key, "Lines": lines, "LineRows": lineRows,
		"SKUUnits": c.cfg.SKUUnits, "SKUNote": skuNote,
	}})
}

// bar is one bar of the inventory chart.
type bar struct {
	Label       string
	SKU         string
	X, W, H, Y  float64
	TX          float64 // label position (centre of the bar)
	Value       string
	Low, Ok, NA bool
}

// coverChart draws days of cover per position as SVG bars (capped at 30 days; no demand shown
// full and grey).
func coverChart(ps []inventory.Position) []bar {
	const height, width, capDays = 120.0, 900.0, 30.0
	n := min(len(ps), 60)
	if n == 0 {
		return nil
	}
	bw := min(width/float64(n), 45)
	out := make([]bar, n)
	for i, p := range ps[:n] {
		d := p.DaysOfCover
		b := bar{Label: p.SKU + " @ " + p.Site, SKU: p.SKU, X: float64(i) * bw, W: bw * 0.8, TX: float64(i)*bw + bw*0.4}
		switch {
		case p.NoDemand():
			b.H, b.NA, b.Value = height, true, "no demand"
		default:
			b.H = min(d, capDays) / capDays * height
			b.Value = strconv.FormatFloat(d, 'f', 1, 64) + " days"
			b.Low, b.Ok = d < 3, d >= 3
		}
		b.Y = height - b.H
		out[i] = b
	}
	return out
}

// inventoryRow is a position with the active model set's cover of it (nil: none covers it).
// Embedded under another name, so that the template's .Position stays the position's units.
type inventoryRow struct {
	position
	Forecast *registry.Cover
}

type position = inventory.Position

func (c *Console) inventoryPage(w http.ResponseWriter, r *http.Request) {
	s := c.src.Inventory()
	if s == nil {
		c.starting(w, r, "inventory")
		return
	}
	q := r.URL.Query()
	f := inventory.Filter{Site: q.Get("site"), SKU: q.Get("sku"), AfterSite: q.Get("after_site"), AfterSKU: q.Get("after_sku"), Limit: c.cfg.PageSize}
	list := s.List(f)
	next := ""
	if len(list) == f.Limit {
		last := list[len(list)-1]
		next = "?" + url.Values{"site": {f.Site}, "sku": {f.SKU}, "after_site": {last.Site}, "after_sku": {last.SKU}}.Encode()
	}
	now := c.now()
	rows := make([]inventoryRow, len(list))
	for i, p := range list {
		rows[i].position = p
		if c.src.Cover != nil {
			if fc, ok := c.src.Cover(p.SKU, p.Site, p.Position, now); ok {
				rows[i].Forecast = &fc
			}
		}
	}
	c.render(w, r, http.StatusOK, "inventory", page{Title: "Inventory", Data: map[string]any{
		"Positions": rows, "Chart": coverChart(list), "Next": next, "Site": f.Site, "SKU": f.SKU, "Now": now,
	}})
}

func (c *Console) decisions(w http.ResponseWriter, r *http.Request) api.Decisions {
	d := c.src.Decisions()
	if d == nil {
		c.fail(w, r, http.StatusNotFound, "decisions are off: the hub config has no guard section (or the hub is starting)")
	}
	return d
}

// filterOf reads the decision feed's filters from the query.
func (c *Console) filterOf(q url.Values) audit.Filter {
	f := audit.Filter{SKU: q.Get("sku"), Channel: q.Get("channel"), Rule: q.Get("rule"), Outcome: q.Get("outcome"), Mode: q.Get("mode"),
		Limit: c.cfg.PageSize}
	if n, err := strconv.Atoi(q.Get("limit")); err == nil && n > 0 {
		f.Limit = min(n, audit.MaxLimit)
	}
	// A filter reads the log backwards until it has a page: bound how far by default (direct gets
	// cost ~0.1 ms each), and let the user ask to search further, up to the log's own bound.
	f.MaxScan = defaultScan
	if n, err := strconv.Atoi(q.Get("scan")); err == nil && n > 0 {
		f.MaxScan = min(n, audit.DefaultMaxScan)
	}
	return f
}

// Bounds of the decision log reads: a page, and each poll of the live feed (which wants only the
// records since the last poll).
const (
	defaultScan = 500
	liveScan    = 500
	liveFor     = 5 * time.Minute
)

// liveWriteTimeout bounds each poll's writes to the live feed: a client that stops reading (a
// zero TCP window) ends its stream rather than holding the handler in Write for good. A variable
// for tests.
var liveWriteTimeout = 30 * time.Second

var outcomes = []string{audit.OutcomeFired, audit.OutcomeHeld, audit.OutcomeSuppressed, audit.OutcomeAwaitingApproval,
	audit.OutcomeRejected, audit.OutcomeExpired, audit.OutcomeReleased, audit.OutcomeShadow}

func (c *Console) decisionsPage(w http.ResponseWriter, r *http.Request) {
	d := c.decisions(w, r)
	if d == nil {
		return
	}
	f := c.filterOf(r.URL.Query())
	recs, err := d.Recent(r.Context(), f)
	if err != nil {
		c.fail(w, r, http.StatusServiceUnavailable, err.Error())
		return
	}
	var after uint64
	if len(recs) > 0 {
		after = recs[0].Seq
	}
	q := url.Values{"sku": {f.SKU}, "channel": {f.Channel}, "rule": {f.Rule}, "outcome": {f.Outcome}, "mode": {f.Mode}}
	live := c.prefix + "/decisions/live?" + q.Encode() + "&after=" + strconv.FormatUint(after, 10)
	with := func(k string, n int) string {
		mq := url.Values{}
		for k, v := range q {
			mq[k] = v
		}
		mq.Set("limit", strconv.Itoa(f.Limit))
		mq.Set("scan", strconv.Itoa(f.MaxScan))
		mq.Set(k, strconv.Itoa(n))
		return "?" + mq.Encode()
	}
	more, further := "", ""
	if len(recs) == f.Limit && f.Limit < audit.MaxLimit {
		more = with("limit", min(f.Limit*2, audit.MaxLimit))
	}
	// Without a filter every record matches: a short page means the log was read to its start.
	filtered := f.SKU != "" || f.Channel != "" || f.Rule != "" || f.Outcome != "" || f.Mode != ""
	if filtered && len(recs) < f.Limit && f.MaxScan < audit.DefaultMaxScan {
		further = with("scan", min(f.MaxScan*4, audit.DefaultMaxScan))
	}
	var channels []graph.Node
	if g := c.src.Graph(); g != nil {
		channels = g.Channels()
	}
	c.render(w, r, http.StatusOK, "decisions", page{Title: "Decisions", Data: map[string]any{
		"Records": recs, "F": f, "Live": live, "More": more, "Further": further, "Outcomes": outcomes, "Channels": channels,
	}})
}

// live streams new decisions matching the page's filters as server-sent events, one table row
// each. It asks the decision log for the newest few every live_poll (a bounded read, never a
// scan) and sends those past the last sequence it sent.
func (c *Console) live(w http.ResponseWriter, r *http.Request) {
	d := c.decisions(w, r)
	if d == nil {
		return
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		c.fail(w, r, http.StatusInternalServerError, "streaming not supported")
		return
	}
	rc := http.NewResponseController(w)
	// Each poll's writes have a deadline: a client that stops reading ends its stream.
	deadline := func() { _ = rc.SetWriteDeadline(time.Now().Add(liveWriteTimeout)) }
	f := c.filterOf(r.URL.Query())
	f.Limit, f.MaxScan = 50, liveScan
	after, _ := strconv.ParseUint(r.URL.Query().Get("after"), 10, 64)
	// A browser reconnecting sends the last event's id: go on from there, not from the page's start.
	if last, err := strconv.ParseUint(r.Header.Get("Last-Event-ID"), 10, 64); err == nil && last > after {
		after = last
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	deadline()
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte(": live decisions\nretry: 2000\n\n"))
	fl.Flush()
	t := time.NewTicker(c.cfg.LivePoll)
	defer t.Stop()
	// A stream ends after a while and the browser reconnects (retry above, Last-Event-ID): a handler
	// never outlives the hub's shutdown by long, whatever the client does.
	end := time.NewTimer(liveFor)
	defer end.Stop()
	row := c.pages["decisions"].Lookup("row")
	ss := sessionOf(r)
	for {
		select {
		case <-r.Context().Done():
			return
		case <-end.C:
			return
		case <-t.C:
		}
		// The session ended (signed out or expired): so does the stream; the reconnect is refused.
		if !ss.proxied && c.sessions.get(ss.id) == nil {
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		recs, err := d.Recent(ctx, f)
		cancel()
		if err != nil {
			// The hub stopping, or NATS away: end the stream; the browser retries.
			c.log.Info("console: live decisions stream ended", "err", err)
			return
		}
		deadline()
		// Oldest first, so that each prepended row ends up newest on top.
		for i := len(recs) - 1; i >= 0; i-- {
			rec := recs[i]
			if rec.Seq <= after {
				continue
			}
			after = rec.Seq
			var b strings.Builder
			if err := row.Execute(&b, map[string]any{"R": rec, "Prefix": c.prefix}); err != nil {
				c.log.Error("console: render live row", "err", err)
				return
			}
			// One data line: an event's data lines are joined with newlines, and a row has none.
			line := strings.ReplaceAll(strings.ReplaceAll(b.String(), "\r", ""), "\n", " ")
			if _, err := w.Write([]byte("event: decision\nid: " + strconv.FormatUint(rec.Seq, 10) + "\ndata: " + line + "\n\n")); err != nil {
				return
			}
		}
		if rc.Flush() != nil {
			return
		}
	}
}

func (c *Console) whyPage(w http.ResponseWriter, r *http.Request) {
	d := c.decisions(w, r)
	if d == nil {
		return
	}
	id := r.PathValue("id")
	if !audit.ValidID(id) {
		c.fail(w, r, http.StatusNotFound, "no decision "+id+": a decision id is 32 lower-case hex digits")
		return
	}
	recs, err := d.History(r.Context(), id)
	if err != nil {
		c.fail(w, r, http.StatusServiceUnavailable, err.Error())
		return
	}
	if len(recs) == 0 {
		c.fail(w, r, http.StatusNotFound, "no decision "+id+" (unknown, or its records expired)")
		return
	}
	del, err := d.Delivery(r.Context(), id)
	if err != nil {
		c.fail(w, r, http.StatusServiceUnavailable, err.Error())
		return
	}
	var text strings.Builder
	audit.Explain(&text, recs, del)
	first, last := audit.Decided(recs), recs[len(recs)-1]
	var verdict *guard.Verdict
	for _, rec := range recs {
		if rec.Verdict != nil {
			verdict = rec.Verdict
		}
	}
	c.render(w, r, http.StatusOK, "why", page{Title: "Why " + id[:12], Data: struct {
		ID          string
		First, Last audit.Record
		Records     []audit.Record
		Verdict     *guard.Verdict
		Delivery    *act.Record
		Experiment  *experimentView
		Forecast    *forecastView
		Text        string
	}{id, first, last, recs, verdict, del, experimentOf(first), forecastOf(first), text.String()}})
}

func (c *Console) approvalsPage(w http.ResponseWriter, r *http.Request) {
	d := c.decisions(w, r)
	if d == nil {
		return
	}
	// A page of the queue after a position (the next of the page before), oldest first: a view
	// reads the decisions of its page, not of the whole queue.
	var after uint64
	if a := r.URL.Query().Get("after"); a != "" {
		n, err := strconv.ParseUint(a, 10, 64)
		if err != nil || n < 1 {
			c.fail(w, r, http.StatusBadRequest, "after: want a queue position (a page's next link), 1 or more")
			return
		}
		after = n
	}
	queue, err := d.PendingPage(r.Context(), after, c.cfg.PageSize)
	if err != nil {
		c.fail(w, r, http.StatusServiceUnavailable, err.Error())
		return
	}
	next := ""
	if queue.Next != 0 {
		next = "?" + url.Values{"after": {strconv.FormatUint(queue.Next, 10)}}.Encode()
	}
	kill, err := d.Kill(r.Context())
	if err != nil {
		c.fail(w, r, http.StatusServiceUnavailable, err.Error())
		return
	}
	recent, err := d.Recent(r.Context(), audit.Filter{Outcome: "", Limit: 200, MaxScan: 2000})
	if err != nil {
		c.fail(w, r, http.StatusServiceUnavailable, err.Error())
		return
	}
	answered := recent[:0]
	for _, rec := range recent {
		if rec.Event == audit.EventApproved || rec.Event == audit.EventRejected {
			answered = append(answered, rec)
		}
	}
	c.render(w, r, http.StatusOK, "approvals", page{Title: "Approvals", Data: map[string]any{
		"Pending": queue.Requests, "Total": queue.Total, "Next": next, "First": after == 0, "Kill": kill, "Answered": answered, "Now": c.now(), "User": sessionOf(r).user,
	}})
}

// answer approves or rejects as the signed-in user, through the same call as the API
// (decide.Approver via api.Decisions): the guard refuses self-approval when configured.
func (c *Console) answer(w http.ResponseWriter, r *http.Request) {
	d := c.decisions(w, r)
	if d == nil {
		return
	}
	id := r.PathValue("id")
	approve := false
	switch r.PathValue("answer") {
	case "approve":
		approve = true
	case "reject":
	default:
		c.fail(w, r, http.StatusNotFound, "want /approvals/{id}/approve or /reject")
		return
	}
	if !audit.ValidID(id) {
		c.fail(w, r, http.StatusNotFound, "no decision "+id+": a decision id is 32 lower-case hex digits")
		return
	}
	reason, ok := c.note(w, r, "reason")
	if !ok {
		return
	}
	by := sessionOf(r).user
	// Not cut short by a client that goes away: an answer the guard took is recorded (who
	// approved, in the decision log) and enqueued within the same call.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 30*time.Second)
	defer cancel()
	v, err := d.Answer(ctx, id, by, reason, approve)
	switch {
	case err == nil:
	case errors.Is(err, guard.ErrNotFound), errors.Is(err, decide.ErrNoRecord):
		c.fail(w, r, http.StatusNotFound, err.Error())
		return
	case errors.Is(err, guard.ErrSelfApproval):
		c.fail(w, r, http.StatusForbidden, "you asked for this change: someone else must approve it ("+err.Error()+")")
		return
	case errors.Is(err, guard.ErrState), errors.Is(err, guard.ErrExpired), errors.Is(err, guard.ErrKilled):
		c.fail(w, r, http.StatusConflict, err.Error())
		return
	default:
		c.fail(w, r, http.StatusServiceUnavailable, err.Error())
		return
	}
	c.log.Info("console: approval answered", "decision", id, "by", by, "approve", approve, "outcome", v.Outcome)
	msg := "decision " + id[:min(12, len(id))] + ": " + string(v.Outcome)
	if v.Reason != "" {
		msg += " (" + v.Reason + ")"
	}
	c.done(w, r, "/decisions/"+url.PathEscape(id), msg)
}

// kill throws or resets the kill switch as the signed-in admin (the API's SetKill): while it is on,
// nothing acts.
func (c *Console) kill(w http.ResponseWriter, r *http.Request) {
	d := c.decisions(w, r)
	if d == nil {
		return
	}
	// The form says which way: anything else is refused, never taken as a reset (which would let
	// decisions act again).
	var on bool
	switch r.PostFormValue("on") {
	case "true":
		on = true
	case "false":
	default:
		c.fail(w, r, http.StatusBadRequest, "on is required: true throws the kill switch, false resets it")
		return
	}
	reason, ok := c.note(w, r, "reason")
	if !ok {
		return
	}
	if reason == "" {
		c.fail(w, r, http.StatusBadRequest, "reason is required: the kill switch records why it was thrown or reset")
		return
	}
	var endLive bool
	switch r.PostFormValue("end_live") {
	case "true":
		endLive = true
	case "", "false":
	default:
		c.fail(w, r, http.StatusBadRequest, "end_live must be true or false")
		return
	}
	if endLive && !on {
		c.fail(w, r, http.StatusBadRequest, "end_live (end every promotion running) applies only when the switch is thrown")
		return
	}
	by := sessionOf(r).user
	if err := d.SetKill(r.Context(), guard.KillSwitch{On: on, EndLive: endLive, By: by, Reason: reason}); err != nil {
		c.fail(w, r, http.StatusServiceUnavailable, err.Error())
		return
	}
	c.log.Warn("console: kill switch set", "on", on, "end_live", endLive, "by", by, "reason", reason)
	state := "reset: decisions act again"
	switch {
	case endLive:
		state = "thrown: nothing acts, and the promotions running are ended"
	case on:
		state = "thrown: nothing acts"
	}
	c.done(w, r, "/approvals", "kill switch "+state)
}

// maxNote bounds a reason or a why: as much as the API's whole request body. The form may be as
// big as a pasted rule file, but a note is written into the guard's (or the rules state's) record
// and again into the decision log's, where JSON may take six bytes a character: a huge one would
// be taken by the one and refused by NATS in the other, half done.
const maxNote = 16 << 10

// note reads a form's reason or why, trimmed; false (and a 400 answered) when it is too long.
func (c *Console) note(w http.ResponseWriter, r *http.Request, field string) (string, bool) {
	v := strings.TrimSpace(r.PostFormValue(field))
	if len(v) > maxNote {
		c.fail(w, r, http.StatusBadRequest, fmt.Sprintf("the %s is too long: %d KiB, at most %d KiB", field, (len(v)+1023)>>10, maxNote>>10))
		return "", false
	}
	return v, true
}
