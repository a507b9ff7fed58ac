package quality

import (
	"bytes"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// An answer that does not encode is a 500 that says what failed, logged, not the code it was meant
// for with an empty body.
func TestAnswerThatDoesNotEncodeIs500(t *testing.T) {
	var logs bytes.Buffer
	m := &Monitor{log: slog.New(slog.NewTextHandler(&logs, nil))}
	w := httptest.NewRecorder()
	m.writeJSON(w, http.StatusOK, map[string]float64{"psi": math.NaN()})
	if w.Code != http.StatusInternalServerError || !strings.Contains(w.Body.String(), `{"error":"quality: encoding the answer: json: unsupported value: NaN"}`) {
		t.Errorf("%d %q, want 500 saying what failed", w.Code, w.Body.String())
	}
	if !strings.Contains(logs.String(), "unsupported value: NaN") {
		t.Errorf("not logged: %q", logs.String())
	}
	w = httptest.NewRecorder()
	m.writeJSON(w, http.StatusNotFound, map[string]string{"error": "x"})
	if w.Code != http.StatusNotFound || w.Body.String() != "{\"error\":\"x\"}\n" || w.Header().Get("Content-Type") != "application/json" {
		t.Errorf("%d %q %v", w.Code, w.Body.String(), w.Header())
	}
}
