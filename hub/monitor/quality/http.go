package quality

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
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
//	GET …/quality?feature=F         the keys of F (of every feature without F); &breach=1 only keys in
//	                                breach; a page of limit (1000, at most 10000) keys, by feature and key,
//	                                after after_feature/after_key; a full page carries next, the next page's query
//	GET …/quality/gaps?agent=A      the agents' streams and their gaps (404 for an agent with none)
func (m *Monitor) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			m.writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "quality: only GET"})
			return
		}
		q := r.URL.Query()
		if strings.HasSuffix(r.URL.Path, "/gaps") {
			agent := q.Get("agent")
			gs := m.Gaps(agent)
			if agent != "" && len(gs) == 0 {
				m.writeJSON(w, http.StatusNotFound, map[string]string{"error": "quality: no stream of agent " + strconv.Quote(agent) +
					" observed within the monitor log's retention"})
				return
			}
			m.writeJSON(w, http.StatusOK, map[string]any{"streams": orEmpty(gs)})
			return
		}
		feature, key := q.Get("feature"), q.Get("key")
		if key != "" {
			st, err := m.Lookup(feature, key)
			if err != nil {
				m.writeJSON(w, http.StatusNotFound, map[string]string{"error": err.Error()})
				return
			}
			m.writeJSON(w, http.StatusOK, st)
			return
		}
		if _, ok := m.defs[feature]; feature != "" && !ok {
			m.writeJSON(w, http.StatusNotFound, map[string]string{"error": "quality: unknown feature " + feature})
			return
		}
		breach, limit := false, 1000
		if b := q.Get("breach"); b != "" {
			var err error
			if breach, err = strconv.ParseBool(b); err != nil {
				m.writeJSON(w, http.StatusBadRequest, map[string]string{"error": "quality: breach: want 1 or 0, got " + strconv.Quote(b)})
				return
			}
		}
		if l := q.Get("limit"); l != "" {
			n, err := strconv.Atoi(l)
			if err != nil || n < 1 || n > 10000 {
				m.writeJSON(w, http.StatusBadRequest, map[string]string{"error": "quality: limit: want 1..10000"})
				return
			}
			limit = n
		}
		afterF, afterK := q.Get("after_feature"), q.Get("after_key")
		keep := m.Page(feature, afterF, afterK, breach, limit)
		out := map[string]any{"keys": orEmpty(keep)}
		if len(keep) == limit {
			last := keep[len(keep)-1]
			next := url.Values{"after_feature": {last.Feature}, "after_key": {last.Key}}
			for _, k := range []string{"feature", "breach", "limit"} {
				if v := q.Get(k); v != "" {
					next.Set(k, v)
				}
			}
			out["next"] = next.Encode()
		}
		m.writeJSON(w, http.StatusOK, out)
	})
}

func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// writeJSON answers v with code, encoded whole before the status is sent: a value that does not
// encode is a 500 that says so (and is logged), never the code with an empty body. (The figures
// served are finite: status writes a NaN or infinite one as 0.)
func (m *Monitor) writeJSON(w http.ResponseWriter, code int, v any) {
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(v); err != nil {
		m.log.Error("quality: an answer could not be encoded", "err", err)
		m.writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "quality: encoding the answer: " + err.Error()})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}
