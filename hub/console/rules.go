package console

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/hub/decide/rules"
	"github.com/gemba-io/gemba/hub/decide/versions"
)

// versionRow is one version the rules state has named, with what is stored about it.
type versionRow struct {
	versions.Meta
	Role string // active, shadow, canary, or previous
}

// shadowStats is the shadow version's disagreement with the active one over its newest records.
type shadowStats struct {
	Version   string
	Records   int
	Disagree  int
	Rate      float64
	Truncated bool
}

// shadowSample bounds the shadow records the disagreement rate is computed over, and shadowScan
// the records read looking for them (the log holds the active version's records too).
const (
	shadowSample = 500
	shadowScan   = 1000
)

// disagreement counts the shadow records of version whose action differs from the active
// version's on the same channel (nothing decided on one side counts as a difference).
func disagreement(recs []audit.Record, version string) shadowStats {
	st := shadowStats{Version: version, Truncated: len(recs) == shadowSample}
	for _, r := range recs {
		if r.Mode != audit.ModeShadow || r.RuleSet.Version != version || r.Disagreement == nil {
			continue
		}
		st.Records++
		shadow, active := "none", "none"
		if r.Action.Kind != "" {
			shadow = audit.FormatAction(r.Action)
		}
		if a := r.Disagreement.ActiveAction; a != nil {
			active = audit.FormatAction(*a)
		}
		if shadow != active {
			st.Disagree++
		}
	}
	if st.Records > 0 {
		st.Rate = float64(st.Disagree) / float64(st.Records)
	}
	return st
}

func (c *Console) rulesSources(w http.ResponseWriter, r *http.Request) (Rules, bool) {
	d := c.decisions(w, r)
	if d == nil {
		return nil, false
	}
	reg := c.src.Rules()
	if reg == nil {
		c.fail(w, r, http.StatusNotFound, "rule versions are off: the hub config has no guard section (or the hub is starting)")
		return nil, false
	}
	return reg, true
}

func (c *Console) rulesPage(w http.ResponseWriter, r *http.Request) {
	reg, ok := c.rulesSources(w, r)
	if !ok {
		return
	}
	d := c.src.Decisions()
	cur, hist, err := d.Rules(r.Context())
	if err != nil {
		c.fail(w, r, http.StatusServiceUnavailable, err.Error())
		return
	}
	// The versions are those the rules state has named, newest mention first; their contents are
	// in the registry.
	var names []string
	add := func(v string) {
		if v != "" && !slices.Contains(names, v) {
			names = append(names, v)
		}
	}
	add(cur.Active)
	add(cur.Shadow)
	if cur.Canary != nil {
		add(cur.Canary.Version)
	}
	for _, v := range cur.Previous {
		add(v)
	}
	for i := len(hist) - 1; i >= 0; i-- {
		add(hist[i].To)
		add(hist[i].From)
	}
	rows := make([]versionRow, 0, len(names))
	for _, v := range names {
		m, err := reg.Meta(r.Context(), v)
		if err != nil {
			m = versions.Meta{Version: v, Name: "(not readable: " + err.Error() + ")"}
		}
		row := versionRow{Meta: m}
		switch {
		case v == cur.Active:
			row.Role = "active"
		case v == cur.Shadow:
			row.Role = "shadow"
		case cur.Canary != nil && v == cur.Canary.Version:
			row.Role = "canary"
		case slices.Contains(cur.Previous, v):
			row.Role = "previous"
		}
		rows = append(rows, row)
	}
	var shadow *shadowStats
	if cur.Shadow != "" {
		recs, err := d.Recent(r.Context(), audit.Filter{Mode: audit.ModeShadow, Limit: shadowSample, MaxScan: shadowScan})
		if err != nil {
			c.fail(w, r, http.StatusServiceUnavailable, err.Error())
			return
		}
		st := disagreement(recs, cur.Shadow)
		shadow = &st
	}
	slices.Reverse(hist)
	c.render(w, r, http.StatusOK, "rules", page{Title: "Rules", Data: map[string]any{
		"Current": cur, "History": hist, "Versions": rows, "Shadow": shadow,
		"A": r.URL.Query().Get("a"), "B": r.URL.Query().Get("b"),
	}})
}

// diffLine is one line of a line diff: Op is ' ', '-' or '+'.
type diffLine struct {
	Op   string
	Text string
}

// maxDiffLines bounds the lines of a file the diff compares, and maxDiffCells the table of the
// lines left once the common head and tail are set aside (one's count times the other's: 16 MiB
// at most, for a viewer's GET).
const (
	maxDiffLines = 4000
	maxDiffCells = 1 << 22
)

// lineDiff is the longest-common-subsequence diff of two texts, line by line. Versions of a rule
// file mostly differ in a few lines: the lines both begin and end with are kept as they are, and
// only those between are compared.
func lineDiff(a, b string) []diffLine {
	al, bl := strings.Split(strings.TrimRight(a, "\n"), "\n"), strings.Split(strings.TrimRight(b, "\n"), "\n")
	tooLong := []diffLine{{Op: "!", Text: "files too long to compare line by line"}}
	if len(al) > maxDiffLines || len(bl) > maxDiffLines {
		return tooLong
	}
	var out []diffLine
	for len(al) > 0 && len(bl) > 0 && al[0] == bl[0] {
		out = append(out, diffLine{" ", al[0]})
		al, bl = al[1:], bl[1:]
	}
	same := 0
	for same < len(al) && same < len(bl) && al[len(al)-1-same] == bl[len(bl)-1-same] {
		same++
	}
	tail := al[len(al)-same:]
	al, bl = al[:len(al)-same], bl[:len(bl)-same]
	n, m := len(al), len(bl)
	if (n+1)*(m+1) > maxDiffCells {
		return tooLong
	}
	lcs := make([][]int32, n+1)
	for i := range lcs {
		lcs[i] = make([]int32, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if al[i] == bl[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	i, j := 0, 0
	for i < n && j < m {
		switch {
		case al[i] == bl[j]:
			out = append(out, diffLine{" ", al[i]})
			i++
			j++
		case lcs[i+1][j] >= lcs[i][j+1]:
			out = append(out, diffLine{"-", al[i]})
			i++
		default:
			out = append(out, diffLine{"+", bl[j]})
			j++
		}
	}
	for ; i < n; i++ {
		out = append(out, diffLine{"-", al[i]})
	}
	for ; j < m; j++ {
		out = append(out, diffLine{"+", bl[j]})
	}
	for _, l := range tail {
		out = append(out, diffLine{" ", l})
	}
	return out
}

// diffPage compares two stored versions (full versions or prefixes of at least 8 hex digits) as
// files, line by line.
func (c *Console) diffPage(w http.ResponseWriter, r *http.Request) {
	reg, ok := c.rulesSources(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	var metas [2]versions.Meta
	var texts [2]string
	for i, ref := range []string{q.Get("a"), q.Get("b")} {
		v, err := reg.Resolve(r.Context(), ref)
		if err != nil {
			c.fail(w, r, http.StatusBadRequest, "version "+string(rune('A'+i))+": "+err.Error())
			return
		}
		if metas[i], err = reg.Meta(r.Context(), v); err == nil {
			var data []byte
			data, err = reg.Load(r.Context(), v)
			texts[i] = string(data)
		}
		if err != nil {
			c.fail(w, r, http.StatusServiceUnavailable, err.Error())
			return
		}
	}
	lines := lineDiff(texts[0], texts[1])
	changed := slices.ContainsFunc(lines, func(l diffLine) bool { return l.Op != " " })
	c.render(w, r, http.StatusOK, "diff", page{Title: "Diff", Data: map[string]any{
		"A": metas[0], "B": metas[1], "Lines": lines, "Changed": changed,
	}})
}

// rulesChange makes one rules change as the signed-in admin, through the registry (the same
// calls as `gemba-hub rules`); the change records who and why.
func (c *Console) rulesChange(w http.ResponseWriter, r *http.Request) {
	reg, ok := c.rulesSources(w, r)
	if !ok {
		return
	}
	by := sessionOf(r).user
	why, ok := c.note(w, r, "why")
	if !ok {
		return
	}
	if why == "" {
		c.fail(w, r, http.StatusBadRequest, "why is required: every rules change records why it was made")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	// version: a new file pasted in (stored first, as `rules activate FILE` does) or a stored one.
	pick := func() (string, error) {
		y, ref := r.PostFormValue("yaml"), strings.TrimSpace(r.PostFormValue("version"))
		if strings.TrimSpace(y) != "" && ref != "" {
			return "", errors.New("give a version or paste a rule file, not both")
		}
		if strings.TrimSpace(y) != "" {
			v, err := reg.Store(ctx, []byte(strings.ReplaceAll(y, "\r\n", "\n")), by)
			if err != nil {
				return "", errors.New(strings.Join(rules.Describe("pasted rules", err), "; "))
			}
			return v, nil
		}
		if ref == "" {
			return "", errors.New("give a version (or paste a rule file)")
		}
		return reg.Resolve(ctx, ref)
	}
	var ch audit.Change
	var err error
	bad := false // the request named something wrong (400), rather than the state refusing it
	version := func() (string, error) {
		v, err := pick()
		bad = err != nil
		return v, err
	}
	switch op := r.PathValue("op"); op {
	case audit.OpActivate, audit.OpShadow:
		var v string
		if v, err = version(); err == nil {
			if op == audit.OpActivate {
				ch, err = reg.Activate(ctx, v, by, why)
			} else {
				ch, err = reg.Shadow(ctx, v, by, why)
			}
		}
	case audit.OpCanary:
		share, perr := strconv.ParseFloat(r.PostFormValue("share"), 64)
		unit := r.PostFormValue("unit")
		if perr != nil || !(share > 0 && share <= 1) || (unit != "sku" && unit != "site") {
			c.fail(w, r, http.StatusBadRequest, "canary: give a share in (0, 1] and a unit sku or site")
			return
		}
		var v string
		if v, err = version(); err == nil {
			ch, err = reg.Canary(ctx, v, share, unit, by, why)
		}
	case audit.OpRollback:
		ch, err = reg.Rollback(ctx, by, why)
	case audit.OpClearShadow:
		ch, err = reg.Shadow(ctx, "", by, why)
	case audit.OpClearCanary:
		ch, err = reg.Canary(ctx, "", 0, "", by, why)
	default:
		c.fail(w, r, http.StatusNotFound, "unknown rules change "+op+" (activate, shadow, canary, rollback, clear-shadow, clear-canary)")
		return
	}
	if errors.Is(err, versions.ErrUnchanged) {
		msg := short(ch.Active) + " is already active (change #" + strconv.FormatUint(ch.Seq, 10) + "): nothing recorded"
		c.done(w, r, "/rules", msg)
		return
	}
	if err != nil {
		code := http.StatusServiceUnavailable
		switch {
		case bad:
			code = http.StatusBadRequest
		case errors.Is(err, versions.ErrUnknownVersion), errors.Is(err, versions.ErrNoPrevious), errors.Is(err, versions.ErrNothingToClear):
			code = http.StatusConflict
		}
		c.fail(w, r, code, "rules "+r.PathValue("op")+": "+err.Error())
		return
	}
	c.log.Info("console: rules changed", "op", ch.Op, "from", ch.From, "to", ch.To, "by", by)
	msg := "change #" + strconv.FormatUint(ch.Seq, 10) + ": " + ch.Op + " → active " + short(ch.Active)
	c.done(w, r, "/rules", msg)
}

func short(v string) string {
	if v == "" {
		return "(none)"
	}
	return v[:min(len(v), 12)]
}
