package quality

import (
	"encoding/json"
	"net/http"
	"strings"
)

// Source is the monitor as rules read it: the quality of the value a rule input comes from.
type Source interface {
	Status(feature, key string) (Quality, bool)
}

var _ Source = (*Monitor)(nil)

// Handler serves the quality read API (the hub mounts it at /api/v1/quality and /api/v1/quality/gaps):
//
//	GET …/quality?feature=F&key=K   one key (404 with the reason when unknown)
//	GET …/quality?feature=F         every key of F (every feature without F); ?breach=1 only keys in breach
//	GET …/quality/gaps?agent=A      the agents' streams and their gaps
func (m *Monitor) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "quality: only GET"})
			return
		}
		q := r.URL.Query()
		if strings.HasSuffix(r.URL.Path, "/gaps") {
			writeJSON(w, http.StatusOK, map[string]any{"streams": orEmpty(m.Gaps(q.Get("agent")))})
			return
		}
		feature, key := q.Get("feature"), q.Get("key")
		if key != "" {
			st, err := m.Lookup(feature, key)
			if err != nil {
				writeJSON(w, http.StatusNotFound, map[string]string{"error": err.Error()})
				return
			}
			writeJSON(w, http.StatusOK, st)
			return
		}
		if _, ok := m.defs[feature]; feature != "" && !ok {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "quality: unknown feature " + feature})
			return
		}
		all := m.List(feature)
		if q.Get("breach") != "" {
			keep := all[:0]
			for _, x := range all {
				if !x.OK() {
					keep = append(keep, x)
				}
			}
			all = keep
		}
		writeJSON(w, http.StatusOK, map[string]any{"keys": orEmpty(all)})
	})
}

func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
