package console_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestAnswerUnknownDecision: against a real hub, answering a decision the log has no record of
// (a mistyped id, or one whose records expired) is a 404 that says so, on the console and the
// read API alike — not a 503, which tells the user the hub is away and to try again.
func TestAnswerUnknownDecision(t *testing.T) {
	th := startHub(t, hubOptions{})
	alice := signIn(t, th.base, "alice")
	unknown := strings.Repeat("ab", 16)
	for _, id := range []string{unknown, "not-a-decision"} {
		for _, answer := range []string{"approve", "reject"} {
			if code := alice.post("/approvals/"+id+"/"+answer, url.Values{"reason": {"r"}}); code != http.StatusNotFound {
				t.Errorf("%s %s on the console: %d, want 404", answer, id, code)
			}
		}
	}
	resp, err := http.Get(strings.TrimSuffix(th.base, "/console") + "/api/v1/decisions/not-a-decision")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("why of a malformed id on the API: %d, want 404", resp.StatusCode)
	}
}
