package api

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gemba-io/gemba/hub/state/graph"
)

func graphAPI(t *testing.T) http.Handler {
	t.Helper()
	g, err := graph.Load([]byte(`
version: v1
sites: [{id: plant1}]
lines: [{id: line1, site: plant1}]
skus: [{id: A-100}, {id: A-150}]
edges:
  - {kind: produces, from: line1, to: A-100}
  - {kind: substitutes, from: A-150, to: A-100}
`))
	if err != nil {
		t.Fatal(err)
	}
	src := none
	src.Graph = func() *graph.Graph { return g }
	return Handler(src, "")
}

// getJSON answers path with its status and the error it names, if any.
func getJSON(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
	var body struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
		t.Fatalf("GET %s: %d, body not JSON: %v: %q", path, w.Code, err, w.Body.String())
	}
	return w.Code, body.Error
}

// An unknown node is 404 in every graph query, paths included; a malformed request (a missing
// node, a bad max_depth) is 400.
func TestGraphUnknownNode(t *testing.T) {
	h := graphAPI(t)
	for _, c := range []struct {
		path, name string
		code       int
	}{
		{"/api/v1/graph/producers/A-999", "A-999", http.StatusNotFound},
		{"/api/v1/graph/paths?from=A-999&to=A-100", "A-999", http.StatusNotFound},
		{"/api/v1/graph/paths?from=line1&to=B-1", "B-1", http.StatusNotFound},
		{"/api/v1/graph/paths?from=line1", "to: required", http.StatusBadRequest},
		{"/api/v1/graph/paths?to=line1&from=", "from: required", http.StatusBadRequest},
		{"/api/v1/graph/paths?from=line1&to=A-100&max_depth=9", "max_depth", http.StatusBadRequest},
	} {
		code, msg := getJSON(t, h, c.path)
		if code != c.code || !strings.Contains(msg, c.name) {
			t.Errorf("GET %s: %d %q, want %d naming %s", c.path, code, msg, c.code, c.name)
		}
	}
	if code, msg := getJSON(t, h, "/api/v1/graph/paths?from=A-150&to=line1"); code != http.StatusOK {
		t.Errorf("paths A-150 to line1: %d %q, want 200", code, msg)
	}
}
