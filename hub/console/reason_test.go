package console_test

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gemba-io/gemba/internal/testutil"
)

// TestHugeReasonRefused: a reason is a note, not a document. The console takes a form as big as a
// pasted rule file (3 MiB), and an approval's reason is written into the guard's record and,
// again, into the decision log's (each '<' as six bytes of JSON): one pasted by mistake must be
// refused as such (400) before anything is decided, not approve the decision in the guard and
// then fail to record it (NATS: maximum payload exceeded) — leaving the promotion approved but
// neither recorded nor delivered, gone from the queue, until the same approver answers it again
// with a shorter reason (anyone else is refused: it no longer waits).
func TestHugeReasonRefused(t *testing.T) {
	th := startHub(t, hubOptions{})
	th.stock(t)
	th.units(t, map[string]float64{"SKU-2": 500}) // asks for 30 %: waits for approval
	alice := signIn(t, th.base, "alice")
	var id string
	testutil.WaitFor(t, 20*time.Second, "a decision waiting for approval", func() bool {
		id = between(alice.get("/approvals"), `<tr data-id="`, `"`)
		return id != ""
	})
	huge := strings.Repeat("<", 1<<20) // 3 MiB form-encoded, within the form bound
	resp, err := alice.hc.PostForm(alice.base+"/approvals/"+id+"/approve", url.Values{"reason": {huge}, "csrf": {alice.csrf}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	code := resp.StatusCode
	if code != http.StatusBadRequest {
		t.Errorf("approval with a reason of %d KiB: %d %.300s, want 400 (refused before anything is decided)", len(huge)>>10, code, b)
	}
	if !strings.Contains(alice.get("/approvals"), `<tr data-id="`+id+`"`) {
		t.Errorf("after the refused approval %s no longer waits for approval: it was decided, but not recorded nor delivered", id)
	}
	// The approver tries again with a short reason: the approval goes through and acts.
	code = alice.post("/approvals/"+id+"/approve", url.Values{"reason": {"stock is high"}})
	why := alice.get("/decisions/" + id)
	if code != http.StatusSeeOther {
		t.Fatalf("approval with a short reason after the refused one: %d; why page:\n%s", code, pageOf(why))
	}
	testutil.WaitFor(t, 20*time.Second, "the approved promotion delivered", func() bool {
		return strings.Contains(alice.get("/decisions/"+id), "Start delivered")
	})
}

// pageOf is a page's main text, short.
func pageOf(s string) string {
	m := between(s, "<main>", "</main>")
	return fmt.Sprintf("%.2000s", m)
}
