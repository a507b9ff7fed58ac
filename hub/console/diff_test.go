package console

import (
	"fmt"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"testing"
)

// TestLineDiffBounded: the diff page is a viewer's GET. Two long versions of a rule file that
// differ in one line are compared without a table of every line of one by every line of the
// other (4000 × 4000 lines: 64 MiB a view, so a few viewers at once weigh on the hub that runs the
// decisions); two that differ everywhere and are too long for the table are said to be so.
func TestLineDiffBounded(t *testing.T) {
	lines := func(n int, f string) string {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, f+"\n", i)
		}
		return b.String()
	}
	a := lines(maxDiffLines, "  - {name: rule-%d, when: 'true'}")
	b := strings.Replace(a, "rule-2000,", "rule-2000b,", 1)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	d := lineDiff(a, b)
	runtime.ReadMemStats(&after)
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 8<<20 {
		t.Errorf("a diff of two %d-line files differing in one line allocated %d MiB", maxDiffLines, alloc>>20)
	}
	var ops strings.Builder
	for _, l := range d {
		if l.Op != " " {
			ops.WriteString(l.Op + l.Text + "|")
		}
	}
	if len(d) != maxDiffLines+1 || ops.String() != "-  - {name: rule-2000, when: 'true'}|+  - {name: rule-2000b, when: 'true'}|" {
		t.Errorf("diff: %d lines, changes %q", len(d), ops.String())
	}
	d = lineDiff(lines(3000, "a%d"), lines(3000, "b%d"))
	if len(d) != 1 || d[0].Op != "!" {
		t.Errorf("two 3000-line files differing everywhere: %d diff lines, want them said too long to compare", len(d))
	}
}

// TestNotesBounded: a kill switch reason and a rules change's why are bounded as an approval's
// reason is (TestHugeReasonRefused): refused with 400, nothing changed.
func TestNotesBounded(t *testing.T) {
	e := newEnv(t, nil)
	fr := &fakeRules{}
	e.c.src.Rules = func() Rules { return fr }
	ad, tok := e.login(t, "root", "admin-pw")
	long := strings.Repeat("é", maxNote/2+1)
	for path, form := range map[string]url.Values{
		"/console/kill":           {"csrf": {tok}, "on": {"true"}, "reason": {long}},
		"/console/rules/rollback": {"csrf": {tok}, "why": {long}},
		"/console/approvals/" + strings.Repeat("ab", 16) + "/reject": {"csrf": {tok}, "reason": {long}},
	} {
		w := e.do("POST", path, form, []*http.Cookie{ad}, map[string]string{"Accept": "*/*"})
		if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "too long") {
			t.Errorf("%s with a %d-byte note: %d %s, want 400 saying it is too long", path, len(long), w.Code, strings.TrimSpace(w.Body.String()))
		}
	}
	if len(e.dec.answered) != 0 || len(fr.changes) != 0 {
		t.Fatalf("calls that went through: %q %q", e.dec.answered, fr.changes)
	}
	if w := e.do("POST", "/console/kill", url.Values{"csrf": {tok}, "on": {"true"}, "reason": {long[:maxNote]}}, []*http.Cookie{ad}, nil); w.Code != http.StatusSeeOther {
		t.Fatalf("kill switch with a reason of %d bytes: %d, want 303", maxNote, w.Code)
	}
}
